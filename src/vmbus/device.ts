/**
 * The seam between the VMBus and the devices on either side of it. A host
 * device provider (VSP) sees only `VmbusDevice` / `DeviceBus`; a guest
 * driver (VSC) sees only `VmbusDriver` / `GuestDevice`; both talk over each
 * open channel through its `Queue`. Neither reaches into the bus server or
 * client, nor into the rings, which is what lets a test stand in for the bus.
 */
import type { PipeMode } from './protocol.ts';
import type { Queue } from './queue.ts';

/** The guest's page size: GPA ranges, GPADLs and ring sizes count in these. */
export { PAGE_SIZE } from '../hv/protocol.ts';

/** What a host device offers (the OFFERCHANNEL fields it controls). */
export interface OfferParameters {
  /** Device class GUID (if_type). */
  readonly classId: string;
  /** Instance GUID (if_instance); the same for a device's sub-channels. */
  readonly instanceId: string;
  readonly channelFlags?: number;
  readonly mmioMegabytes?: number;
  /** Up to 120 bytes of user-defined offer data (116 in pipe mode). */
  readonly userDefined?: Uint8Array;
  /** Set for named-pipe channels (integration services use message mode). */
  readonly pipeMode?: PipeMode;
  /** Ring sizes the guest should use, in bytes (hints; the guest chooses). */
  readonly sendRingBytes?: number;
  readonly receiveRingBytes?: number;
  /** Largest number of sub-channels the device may offer later. */
  readonly maxSubchannels?: number;
}

/** What the guest asked for when it opened a channel. */
export interface OpenRequest {
  readonly relid: number;
  /** 0 for the primary channel, 1.. for sub-channels. */
  readonly subchannelIndex: number;
  readonly targetVp: number;
  /** The 120 user-data bytes of OPENCHANNEL. */
  readonly userData: Uint8Array;
}

/** Guest memory as a host device may touch it: bounds-checked, zero-copy. */
export interface GuestMemoryAccess {
  readonly pageCount: number;
  /** A view of guest bytes (throws a GuestMemoryError outside memory). */
  bytes(gpa: number, length: number): Uint8Array;
  contains(gpa: number, length: number): boolean;
}

/**
 * A host device's window on the bus. Given to the device when it is added;
 * lets it offer sub-channels and map buffers the guest described by GPADL.
 */
export interface DeviceBus {
  readonly memory: GuestMemoryAccess;
  /** Offers `count` more sub-channels (indices continue after the existing ones). */
  offerSubchannels(count: number): void;
  /**
   * Maps an established GPADL of this device's channels (netvsc's receive
   * and send buffers). The views stay valid until `release` is called; the
   * guest's teardown waits for that.
   */
  mapGpadl(handle: number): MappedGpadl | undefined;
  /** Negotiated VMBus version (0 before the guest connected). */
  readonly version: number;
}

export interface MappedGpadl {
  readonly handle: number;
  readonly byteCount: number;
  /** Zero-copy views over the GPADL's bytes, in order. */
  readonly views: readonly Uint8Array[];
  /**
   * The buffer as one addressable region, when the GPADL is one range of
   * whole pages (as netvsc's receive and send buffers are); undefined otherwise.
   */
  readonly region: BufferRegion | undefined;
  release(): void;
}

/** Bytes of a guest buffer that may lie on scattered pages; offsets are the buffer's. */
export interface BufferRegion {
  readonly length: number;
  read(offset: number, target: Uint8Array, targetOffset: number, length: number): void;
  write(offset: number, source: Uint8Array, sourceOffset: number, length: number): void;
  fill(offset: number, length: number, value: number): void;
  /** Zero-copy views of [offset, offset+length), in order (one per page when scattered). */
  views(offset: number, length: number): Uint8Array[];
}

/** A host device provider: one VMBus device (and its sub-channels). */
export interface VmbusDevice {
  readonly offer: OfferParameters;
  /** Called once when the device is added to a bus. */
  attach?(bus: DeviceBus): void;
  /**
   * The guest opened one of this device's channels: `queue` is how the
   * device talks over it. Resolve to accept (the guest sees status 0);
   * reject to refuse the open.
   */
  open(queue: Queue, request: OpenRequest): void | Promise<void>;
  /** The guest closed the channel (or the bus is unloading): stop using it. */
  close(queue: Queue, request: OpenRequest): void | Promise<void>;
}

/** An offer as the guest received it. */
export interface GuestOffer {
  readonly relid: number;
  readonly classId: string;
  readonly instanceId: string;
  readonly subchannelIndex: number;
  readonly channelFlags: number;
  readonly mmioMegabytes: number;
  readonly userDefined: Uint8Array;
  readonly pipeMode: number;
  readonly connectionId: number;
  readonly dedicatedInterrupt: boolean;
  readonly monitorId: number;
  readonly monitorAllocated: boolean;
}

export interface ChannelOpenOptions {
  /** Guest-to-host ring size in bytes including the 4 KiB header (a multiple of 4 KiB). */
  readonly sendRingBytes: number;
  readonly receiveRingBytes: number;
  readonly userData?: Uint8Array;
  readonly targetVp?: number;
}

/** A guest channel: its queue plus what the bus knows of it. */
export interface GuestChannel {
  readonly offer: GuestOffer;
  readonly queue: Queue;
  close(): Promise<void>;
}

/** What a guest driver sees of one offered device. */
export interface GuestDevice {
  readonly offer: GuestOffer;
  /** Negotiated VMBus version. */
  readonly version: number;
  open(options: ChannelOpenOptions): Promise<GuestChannel>;
  /** Sub-channel offers of this device that arrived (and keep arriving). */
  onSubchannel(listener: (device: GuestDevice) => void): void;
  /** Shares guest pages with the host; returns the GPADL handle. */
  createGpadl(pfns: readonly number[]): Promise<number>;
  teardownGpadl(handle: number): Promise<void>;
  /** The guest's page allocator and memory, for buffers the driver hands the host. */
  readonly memory: GuestPages;
}

export interface GuestPages {
  allocate(count: number): number;
  free(pfn: number, count: number): void;
  bytes(gpa: number, length: number): Uint8Array;
}

/** A guest driver for one device class. */
export interface VmbusDriver {
  readonly name: string;
  readonly classId: string;
  /** A device of this class was offered: bind to it (open channels, etc.). */
  probe(device: GuestDevice): Promise<void>;
  /** The device was rescinded or the bus is unloading: stop using it. */
  remove(device: GuestDevice): Promise<void>;
}
