/**
 * Either side of the storage channel on its own, for tests that play the
 * other side by hand: two ChannelEndpoints over two rings (signals delivered
 * as microtasks), a DeviceBus for a StorvspDevice and a GuestDevice for a
 * StorvscController, both over one guest memory.
 */

import { SCSI_CLASS_ID } from '../../../src/devices/storvsc/protocol.ts';
import { GuestMemory } from '../../../src/hv/guest-memory.ts';
import { PageAllocator } from '../../../src/hv/page-allocator.ts';
import { ChannelEndpoint } from '../../../src/vmbus/channel.ts';
import type {
  DeviceBus,
  GuestChannel,
  GuestDevice,
  GuestOffer,
  GuestPages,
} from '../../../src/vmbus/device.ts';
import { Queue } from '../../../src/vmbus/queue.ts';
import { Ring } from '../../../src/vmbus/ring.ts';

/**
 * Two raw endpoints for the side the test plays, and a queue over each for
 * the device under test (made on first use: a queue takes over its
 * endpoint's packet handler).
 */
export interface EndpointPair {
  readonly guest: ChannelEndpoint;
  readonly host: ChannelEndpoint;
  readonly hostQueue: Queue;
  readonly guestQueue: Queue;
  /** What the queues logged. */
  readonly log: string[];
}

/** Two endpoints joined by two rings; each signal drains the other side in a microtask. */
export function endpointPair(ringBytes = 128 * 1024 + 4096): EndpointPair {
  const toHost = Ring.fromBytes(new Uint8Array(new SharedArrayBuffer(ringBytes)));
  const toGuest = Ring.fromBytes(new Uint8Array(new SharedArrayBuffer(ringBytes)));
  toHost.initialize();
  toGuest.initialize();
  const log: string[] = [];
  let hostQueue: Queue | undefined;
  let guestQueue: Queue | undefined;
  const pair = {
    log,
    get hostQueue(): Queue {
      hostQueue ??= new Queue(pair.host, { name: 'host', log: (m) => log.push(m) });
      return hostQueue;
    },
    get guestQueue(): Queue {
      guestQueue ??= new Queue(pair.guest, { name: 'guest', log: (m) => log.push(m) });
      return guestQueue;
    },
  } as EndpointPair & { guest: ChannelEndpoint; host: ChannelEndpoint };
  pair.guest = new ChannelEndpoint(
    toHost,
    toGuest,
    () => queueMicrotask(() => pair.host.handleInterrupt()),
    'guest',
  );
  pair.host = new ChannelEndpoint(
    toGuest,
    toHost,
    () => queueMicrotask(() => pair.guest.handleInterrupt()),
    'host',
  );
  return pair;
}

export interface Memory {
  readonly memory: GuestMemory;
  readonly pages: GuestPages;
  readonly allocator: PageAllocator;
}

export function guestMemory(bytes = 16 * 1024 * 1024): Memory {
  const memory = GuestMemory.create(bytes);
  const allocator = new PageAllocator(1, memory.pageCount - 1);
  return {
    memory,
    allocator,
    pages: {
      allocate: (count) => {
        const pfn = allocator.allocate(count);
        memory.bytes(pfn * 4096, count * 4096).fill(0);
        return pfn;
      },
      free: (pfn, count) => allocator.free(pfn, count),
      bytes: (gpa, length) => memory.bytes(gpa, length),
    },
  };
}

/** A DeviceBus over `memory`; offered sub-channels are counted. */
export function fakeDeviceBus(memory: GuestMemory): DeviceBus & { offered: number } {
  const bus = {
    memory,
    offered: 0,
    version: 0x50003,
    offerSubchannels(count: number) {
      bus.offered += count;
    },
    mapGpadl: () => undefined,
  };
  return bus;
}

function offer(relid: number, subchannelIndex = 0): GuestOffer {
  return {
    relid,
    classId: SCSI_CLASS_ID,
    instanceId: '00000000-0000-4000-8000-00000000beef',
    subchannelIndex,
    channelFlags: 0,
    mmioMegabytes: 0,
    userDefined: new Uint8Array(120),
    pipeMode: 0,
    connectionId: relid,
    dedicatedInterrupt: true,
    monitorId: 0,
    monitorAllocated: false,
  };
}

/**
 * A GuestDevice whose channel is `pair.guest`: what the test writes on
 * `pair.host` is the "host". No sub-channels are ever offered.
 */
export function fakeGuestDevice(
  pair: EndpointPair,
  mem: Memory,
): GuestDevice & { opened: number; closed: number } {
  const device = {
    offer: offer(7),
    version: 0x50003,
    memory: mem.pages,
    opened: 0,
    closed: 0,
    async open(): Promise<GuestChannel> {
      device.opened++;
      return {
        offer: device.offer,
        queue: pair.guestQueue,
        close: async () => {
          device.closed++;
          pair.guestQueue.close();
        },
      };
    },
    onSubchannel() {},
    async createGpadl() {
      return 1;
    },
    async teardownGpadl() {},
  };
  return device;
}
