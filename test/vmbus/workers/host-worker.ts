/** Test host worker: a HostBus whose devices the test adds, removes and inspects. */
import { workerData } from 'node:worker_threads';
import { EchoVsp } from '../../../src/devices/echo/vsp.ts';
import { HostPartition, type PartitionHandles } from '../../../src/hv/partition.ts';
import type {
  DeviceBus,
  MappedGpadl,
  OfferParameters,
  VmbusDevice,
} from '../../../src/vmbus/device.ts';
import type { Queue } from '../../../src/vmbus/queue.ts';
import { HostBus } from '../../../src/vmbus/server/host-bus.ts';
import { serve } from './rpc.ts';

const { handles, versions } = workerData as { handles: PartitionHandles; versions?: number[] };
const bus = new HostBus(new HostPartition(handles), {
  ...(versions ? { versions } : {}),
  log: () => {},
});
bus.start();

class MappingVsp implements VmbusDevice {
  readonly offer: OfferParameters = {
    classId: '0bd1d2a3-1111-4222-8333-444455556666',
    instanceId: crypto.randomUUID(),
  };
  bus: DeviceBus | undefined;
  attach(b: DeviceBus): void {
    this.bus = b;
  }
  open(channel: Queue): void {
    channel.onPacket = () => {};
  }
  close(): void {}
}

const echoes = new Map<number, EchoVsp>();
const mappers = new Map<number, MappingVsp>();
const mapped = new Map<number, MappedGpadl>();

serve({
  addEcho: () => {
    const vsp = new EchoVsp();
    const id = bus.addDevice(vsp);
    echoes.set(id, vsp);
    return id;
  },
  addMapper: () => {
    const vsp = new MappingVsp();
    const id = bus.addDevice(vsp);
    mappers.set(id, vsp);
    return id;
  },
  remove: (id: number) => bus.removeDevice(id),
  echoed: (id: number) => echoes.get(id)?.stats.echoed ?? -1,
  gpadlCount: () => bus.server.gpadls.size,
  gpadlPfns: (handle: number) => bus.server.gpadls.get(handle)?.pfns ?? null,
  map: (deviceId: number, handle: number) => {
    const m = mappers.get(deviceId)?.bus?.mapGpadl(handle);
    if (!m) return false;
    mapped.set(handle, m);
    m.views.at(-1)![0] = 0x5a;
    return m.byteCount;
  },
  release: (handle: number) => {
    mapped.get(handle)?.release();
    mapped.delete(handle);
  },
  channels: () =>
    bus.server.channelSummaries().map((c) => ({ relid: c.relid, phase: c.phase, vp: c.targetVp })),
  state: () => ({
    state: bus.server.state,
    version: bus.server.connected?.version ?? 0,
    stats: bus.server.stats,
  }),
  settle: () => bus.settle(),
  stop: () => bus.stop(),
});
