/**
 * Registers the guest drivers the VM config needs and starts what each
 * device does once bound (the echo device's traffic).
 */
import { EchoTraffic } from '../echo/traffic.ts';
import { EchoDriver } from '../echo/vsc.ts';
import type { VmbusClient } from '../vmbus/client/vmbus-client.ts';
import type { VmConfig } from './config.ts';

export interface GuestDrivers {
  status(): Record<string, unknown>[];
  stop(): Promise<void>;
}

export function registerGuestDrivers(client: VmbusClient, config: VmConfig): GuestDrivers {
  const parts: { status(): Record<string, unknown>; stop(): Promise<void> }[] = [];
  const echoConfigs = config.devices.filter((d) => d.type === 'echo');
  if (echoConfigs.length > 0) {
    const ring = Math.max(...echoConfigs.map((d) => d.ring));
    const driver = new EchoDriver(ring);
    const traffic: EchoTraffic[] = [];
    driver.onBound = (echo) => {
      const cfg = echoConfigs[traffic.length % echoConfigs.length]!;
      const t = new EchoTraffic(echo, cfg.rate, cfg.payload);
      traffic.push(t);
      t.start();
    };
    client.registerDriver(driver);
    parts.push({
      status: () => ({
        type: 'echo',
        bound: driver.bound.size,
        traffic: traffic.map((t) => t.stats),
      }),
      stop: async () => {
        await Promise.all(traffic.map((t) => t.stop()));
      },
    });
  }
  return {
    status: () => parts.map((p) => p.status()),
    stop: async () => {
      for (const p of parts) await p.stop();
    },
  };
}
