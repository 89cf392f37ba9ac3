/**
 * A storvsp and a storvsc joined over one in-thread VMBus (test/vmbus's
 * harness): the same device code the VM's workers run, without the workers.
 */
import type { BlockDevice } from '../../../src/block/block-device.ts';
import { MemoryDisk } from '../../../src/block/memory-disk.ts';
import {
  type StorvscController,
  StorvscDriver,
  type StorvscOptions,
} from '../../../src/devices/storvsc/guest/storvsc.ts';
import { StorvspDevice, type StorvspOptions } from '../../../src/devices/storvsc/host/storvsp.ts';
import { makeBus, type TestBus } from '../../vmbus/harness.ts';

export interface ScsiRig {
  readonly bus: TestBus;
  readonly vsp: StorvspDevice;
  readonly driver: StorvscDriver;
  /** The bound controller (undefined when the probe failed). */
  readonly controller: StorvscController | undefined;
  close(): Promise<void>;
}

export interface RigOptions {
  readonly host?: StorvspOptions;
  readonly guest?: StorvscOptions;
  readonly disks?: readonly { lun: number; device: BlockDevice; source?: string }[];
  readonly memoryBytes?: number;
}

export async function makeScsiRig(options: RigOptions = {}): Promise<ScsiRig> {
  const bus = makeBus({ memoryBytes: options.memoryBytes ?? 48 * 1024 * 1024, vpCount: 2 });
  const vsp = new StorvspDevice({ maxSubchannels: 1, ...options.host });
  const disks = options.disks ?? [{ lun: 0, device: new MemoryDisk(8 * 1024 * 1024) }];
  for (const d of disks) vsp.attachDisk(d.lun, d.device, d.source ?? 'memory');
  bus.host.addDevice(vsp);
  const driver = new StorvscDriver(() => ({
    bufferBytes: 4 * 1024 * 1024,
    timeoutMs: 3000,
    ...options.guest,
  }));
  bus.client.registerDriver(driver);
  await bus.client.connect();
  await bus.client.requestOffers();
  const controller = [...driver.controllers.values()][0];
  return {
    bus,
    vsp,
    driver,
    controller,
    async close() {
      await bus.client.unload().catch(() => {});
      await bus.close();
    },
  };
}

/** Resolves with `work`, or rejects naming `what` after `ms` (the timer never outlives the race). */
export async function withTimeout<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([work, expired]);
  } finally {
    clearTimeout(timer);
  }
}
