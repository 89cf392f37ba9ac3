/**
 * Builds the host's device providers from the VM config. Each device type
 * the config knows maps to one VSP here.
 */
import { EchoVsp } from '../echo/vsp.ts';
import type { VmbusDevice } from '../vmbus/device.ts';
import type { DeviceConfig } from './config.ts';

export interface HostDevice {
  readonly config: DeviceConfig;
  readonly device: VmbusDevice;
  status(): Record<string, unknown>;
  close(): Promise<void>;
}

export async function createHostDevice(config: DeviceConfig): Promise<HostDevice> {
  switch (config.type) {
    case 'echo': {
      const vsp = new EchoVsp();
      return {
        config,
        device: vsp,
        status: () => ({ type: 'echo', ...vsp.stats }),
        close: async () => {},
      };
    }
  }
}
