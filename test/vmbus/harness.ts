/**
 * A host and a guest joined over one partition, in one thread: the same
 * code the workers run, without the workers, for lifecycle tests.
 */
import { PageAllocator } from '../../src/hv/page-allocator.ts';
import { createPartition, GuestPartition, HostPartition } from '../../src/hv/partition.ts';
import { VmbusClient } from '../../src/vmbus/client/vmbus-client.ts';
import { HostBus } from '../../src/vmbus/server/host-bus.ts';

export interface TestBus {
  readonly host: HostBus;
  readonly client: VmbusClient;
  readonly hostPartition: HostPartition;
  readonly guestPartition: GuestPartition;
  readonly allocator: PageAllocator;
  readonly hostLog: string[];
  readonly guestLog: string[];
  close(): Promise<void>;
}

export function makeBus(
  options: {
    hostVersions?: readonly number[];
    guestOrder?: readonly number[];
    memoryBytes?: number;
    vpCount?: number;
    timeoutMs?: number;
  } = {},
): TestBus {
  const handles = createPartition({
    memoryBytes: options.memoryBytes ?? 32 * 1024 * 1024,
    vpCount: options.vpCount ?? 1,
  });
  const hostPartition = new HostPartition(handles);
  const hostLog: string[] = [];
  const guestLog: string[] = [];
  const host = new HostBus(hostPartition, {
    ...(options.hostVersions ? { versions: options.hostVersions } : {}),
    log: (m) => hostLog.push(m),
  });
  const guestPartition = new GuestPartition(handles);
  // Page 0 stays unused, like a real guest's low memory.
  const allocator = new PageAllocator(1, guestPartition.memory.pageCount - 1);
  const client = new VmbusClient(guestPartition, allocator, {
    ...(options.guestOrder ? { versionOrder: options.guestOrder } : {}),
    timeoutMs: options.timeoutMs ?? 5000,
    log: (m) => guestLog.push(m),
  });
  host.start();
  return {
    host,
    client,
    hostPartition,
    guestPartition,
    allocator,
    hostLog,
    guestLog,
    async close() {
      client.shutdown();
      await host.stop();
    },
  };
}

/** Resolves when `condition` holds, polling; rejects after `timeoutMs`. */
export async function until(
  condition: () => boolean,
  timeoutMs = 5000,
  what = 'condition',
): Promise<void> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}
