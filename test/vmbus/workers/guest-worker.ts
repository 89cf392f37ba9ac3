/** Test guest worker: a VmbusClient the test drives step by step. */
import { workerData } from 'node:worker_threads';
import { EchoDriver } from '../../../src/devices/echo/vsc.ts';
import { PageAllocator } from '../../../src/hv/page-allocator.ts';
import { GuestPartition, type PartitionHandles } from '../../../src/hv/partition.ts';
import { VmbusClient } from '../../../src/vmbus/client/vmbus-client.ts';
import type { GuestDevice, VmbusDriver } from '../../../src/vmbus/device.ts';
import { serve } from './rpc.ts';

const { handles } = workerData as { handles: PartitionHandles };
const partition = new GuestPartition(handles);
const allocator = new PageAllocator(256, partition.memory.pageCount - 256);
const client = new VmbusClient(partition, allocator, { log: () => {} });
const echo = new EchoDriver();
client.registerDriver(echo);
const devices: GuestDevice[] = [];
const mapperDriver: VmbusDriver = {
  name: 'mapper',
  classId: '0bd1d2a3-1111-4222-8333-444455556666',
  probe: async (d) => {
    devices.push(d);
  },
  remove: async () => {},
};
client.registerDriver(mapperDriver);

let traffic: Promise<{ completed: number; error: string }> | undefined;
const gpadlPages = new Map<number, number>();

serve({
  connect: () => client.connect(),
  requestOffers: () => client.requestOffers(),
  bound: () => [...echo.bound.keys()],
  echo: async (count: number, size: number) => {
    const channel = [...echo.bound.values()][0];
    if (!channel) throw new Error('no echo channel');
    let ok = 0;
    for (let i = 0; i < count; i++) {
      const payload = new Uint8Array(size).map((_, j) => (i + j) & 0xff);
      const back = await channel.echo(payload);
      if (payload.every((b, j) => back[j] === b)) ok++;
    }
    return ok;
  },
  startTraffic: () => {
    const channel = [...echo.bound.values()][0]!;
    traffic = (async () => {
      let completed = 0;
      for (;;) {
        try {
          await channel.echo(new Uint8Array(128));
          completed++;
        } catch (error) {
          // The loop ends on the first failure: report why it failed.
          return { completed, error: (error as Error).message };
        }
      }
    })();
  },
  trafficResult: () => traffic,
  createGpadl: async (pages: number) => {
    const device = devices[0]!;
    const first = allocator.allocate(pages);
    const handle = await device.createGpadl(Array.from({ length: pages }, (_, i) => first + i));
    gpadlPages.set(handle, first);
    return { handle, first };
  },
  peekLastByte: (handle: number, pages: number) =>
    partition.memory.u8[(gpadlPages.get(handle)! + pages - 1) * 4096]!,
  teardownGpadl: (handle: number) => devices[0]!.teardownGpadl(handle),
  reopen: async (rounds: number) => {
    const device = devices[0]!;
    for (let i = 0; i < rounds; i++) {
      const channel = await device.open({ sendRingBytes: 16384, receiveRingBytes: 16384 });
      await channel.close();
    }
    return allocator.freePages;
  },
  freePages: () => allocator.freePages,
  modify: (vp: number) => client.modifyChannel([...echo.bound.keys()][0]!, vp),
  offers: () => client.offers().map((o) => o.relid),
  unload: () => client.unload(),
  stats: () => client.connection.stats,
  shutdown: () => client.shutdown(),
});
