/**
 * One end of an open VMBus channel: an outbound ring it writes and an
 * inbound ring it reads, plus a way to signal the other end. Used the same
 * way by guest drivers and host devices.
 *
 * Interrupt suppression follows Linux (drivers/hv/ring_buffer.c and
 * channel.c): the reader sets interrupt_mask while it drains and re-checks
 * after clearing it; the writer signals only when the ring went from empty to
 * non-empty and the reader had not masked; a blocked writer sets
 * pending_send_sz and the reader signals it once that much space is free.
 * A corrupt ring stops this channel only.
 */
import {
  GpaRangeList,
  type GpaRangeSpec,
  PacketView,
  type TransferPageRangeSpec,
  type WriteResult,
  writeGpaDirect,
  writeInband,
  writeTransferPages,
} from './packet.ts';
import { type Ring, RingReader, RingWriter } from './ring.ts';
import {
  PacketType,
  RING_TRAILER_SIZE,
  VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED,
} from './ring-protocol.ts';

/**
 * The counters of one channel end. One object per endpoint, filled by the
 * endpoint (ring traffic, signals) and by the queue over it (what the device
 * made of the packets); status displays report it as it is.
 */
export interface ChannelStats {
  packetsSent: number;
  bytesSent: number;
  packetsReceived: number;
  bytesReceived: number;
  /** Signals this end sent to the other. */
  signalsSent: number;
  /** Publishes that needed no signal (ring not empty before, or reader masked). */
  signalsSuppressed: number;
  /** Interrupts this end took from the other. */
  interrupts: number;
  /** Signals sent to wake the other end's blocked writer (pending_send_sz). */
  writerWakeups: number;
  /** Sends refused because the outbound ring was full. */
  ringFull: number;
  /** Packets with a malformed descriptor, dropped by the bus. */
  badPackets: number;
  /** Well-formed packets the device refused as bad input (wrong type, too short, ...). */
  dropped: number;
  /** Packets whose handler threw: a device bug, never the other side's doing. */
  handlerErrors: number;
  /** Completions naming no outstanding request (unknown, late or duplicate ids). */
  unknownCompletions: number;
  /** Requests the other side did not answer in time. */
  requestTimeouts: number;
  /** Packets that waited in the queue's backlog for ring space. */
  backlogged: number;
}

/** A fresh set of counters, all zero. */
export function emptyChannelStats(): ChannelStats {
  return {
    packetsSent: 0,
    bytesSent: 0,
    packetsReceived: 0,
    bytesReceived: 0,
    signalsSent: 0,
    signalsSuppressed: 0,
    interrupts: 0,
    writerWakeups: 0,
    ringFull: 0,
    badPackets: 0,
    dropped: 0,
    handlerErrors: 0,
    unknownCompletions: 0,
    requestTimeouts: 0,
    backlogged: 0,
  };
}

export type ChannelState = 'open' | 'closed' | 'failed';

/**
 * What a packet handler answers: true when the packet was consumed, false to
 * leave it in the ring: draining stops there, and whoever deferred it drains
 * again when it can take packets (the queue does, once its backlog has gone
 * out).
 */
export type PacketHandler = (packet: PacketView) => boolean | undefined;

interface SpaceWaiter {
  readonly bytes: number;
  readonly resolve: (ok: boolean) => void;
}

export class ChannelEndpoint {
  readonly writer: RingWriter;
  readonly reader: RingReader;
  readonly packet: PacketView;
  readonly gpaRanges = new GpaRangeList();
  readonly stats: ChannelStats = emptyChannelStats();
  state: ChannelState = 'open';
  error = '';
  onPacket: PacketHandler | undefined;
  /**
   * Packets longer than this are handed over with their payload left in the
   * ring (descriptor and extension still copied and validated privately), to
   * save a copy for consumers that treat payloads as opaque bytes. Off
   * (infinite) by default: payloads are private copies.
   */
  inPlaceAbove = Number.POSITIVE_INFINITY;
  /** Called when the packet handler threw; the packet is counted (handlerErrors) and dropped. */
  onHandlerError: ((error: Error) => void) | undefined;
  /** Called once when the channel fails (corrupt ring). */
  onFailure: ((reason: string) => void) | undefined;
  private batchDepth = 0;
  private draining = false;
  private readonly spaceWaiters: SpaceWaiter[] = [];
  private readonly buffer: Uint8Array;

  constructor(
    readonly outboundRing: Ring,
    readonly inboundRing: Ring,
    private readonly signalPeer: () => void,
    readonly name = 'channel',
  ) {
    this.writer = new RingWriter(outboundRing);
    this.reader = new RingReader(inboundRing);
    this.buffer = new Uint8Array(inboundRing.dataSize);
    this.packet = new PacketView(this.buffer);
  }

  // --- sending -----------------------------------------------------------

  /** Runs `fn` with write_index published once at the end (one signal at most). */
  batch<T>(fn: () => T): T {
    this.beginBatch();
    try {
      return fn();
    } finally {
      this.endBatch();
    }
  }

  /** Holds publication of what is written until the matching endBatch (batches nest). */
  beginBatch(): void {
    this.batchDepth++;
  }

  endBatch(): void {
    this.batchDepth--;
    if (this.batchDepth === 0) this.flush();
  }

  /** Publishes what was written and signals the peer if the rules say so. */
  flush(): void {
    if (!this.writer.hasUnpublished || this.state !== 'open') return;
    if (this.writer.publish()) {
      this.stats.signalsSent++;
      this.signalPeer();
    } else {
      this.stats.signalsSuppressed++;
    }
  }

  private sent(result: WriteResult, bytes: number): WriteResult {
    if (result === 'ok') {
      this.stats.packetsSent++;
      this.stats.bytesSent += bytes;
      if (this.batchDepth === 0) this.flush();
    } else if (result === 'full') {
      this.stats.ringFull++;
    } else {
      this.fail(`outbound ring: read_index ${this.outboundRing.readIndex} is invalid`);
    }
    return result;
  }

  private usable(): boolean {
    return this.state === 'open';
  }

  sendInband(
    payload: Uint8Array,
    transLo = 0,
    transHi = 0,
    completionRequested = false,
  ): WriteResult {
    if (!this.usable()) return 'corrupt';
    const flags = completionRequested ? VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED : 0;
    return this.sent(
      writeInband(this.writer, PacketType.DataInband, flags, transLo, transHi, payload),
      payload.length,
    );
  }

  sendCompletion(transLo: number, transHi: number, payload: Uint8Array): WriteResult {
    if (!this.usable()) return 'corrupt';
    return this.sent(
      writeInband(this.writer, PacketType.Completion, 0, transLo, transHi, payload),
      payload.length,
    );
  }

  sendGpaDirect(
    ranges: readonly GpaRangeSpec[],
    payload: Uint8Array,
    transLo: number,
    transHi = 0,
    completionRequested = true,
  ): WriteResult {
    if (!this.usable()) return 'corrupt';
    const flags = completionRequested ? VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED : 0;
    return this.sent(
      writeGpaDirect(this.writer, flags, transLo, transHi, ranges, payload),
      payload.length,
    );
  }

  sendTransferPages(
    pageSetId: number,
    ranges: readonly TransferPageRangeSpec[],
    payload: Uint8Array,
    transLo: number,
    transHi = 0,
    completionRequested = true,
  ): WriteResult {
    if (!this.usable()) return 'corrupt';
    const flags = completionRequested ? VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED : 0;
    return this.sent(
      writeTransferPages(this.writer, flags, transLo, transHi, pageSetId, ranges, payload),
      payload.length,
    );
  }

  /**
   * Waits until the outbound ring has room for a packet of `packetBytes`
   * (without trailer): sets pending_send_sz so the reader signals when it
   * frees that much. Resolves false if the channel closes first.
   */
  waitForSpace(packetBytes: number): Promise<boolean> {
    if (!this.usable()) return Promise.resolve(false);
    const needed = packetBytes + RING_TRAILER_SIZE;
    if (needed >= this.outboundRing.dataSize) {
      return Promise.resolve(false);
    }
    if (this.writer.available() > needed) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      this.spaceWaiters.push({ bytes: needed, resolve });
      this.requestSpace(needed);
      // The reader may have freed space before it could see pending_send_sz.
      this.checkSpace();
    });
  }

  /** Asks the reader of our outbound ring to signal once `bytes` are free. */
  requestSpace(bytes: number): void {
    const current = this.outboundRing.pendingSendSize;
    if (current === 0 || bytes < current) this.outboundRing.pendingSendSize = bytes;
  }

  private checkSpace(): void {
    if (this.spaceWaiters.length === 0) return;
    const available = this.writer.available();
    let smallest = 0;
    for (let i = 0; i < this.spaceWaiters.length; ) {
      const waiter = this.spaceWaiters[i]!;
      if (available > waiter.bytes) {
        this.spaceWaiters.splice(i, 1);
        waiter.resolve(true);
      } else {
        smallest = smallest === 0 ? waiter.bytes : Math.min(smallest, waiter.bytes);
        i++;
      }
    }
    this.outboundRing.pendingSendSize = smallest;
  }

  // --- receiving ---------------------------------------------------------

  /**
   * The peer signalled: drain the inbound ring (masking the peer's signals
   * while draining, re-checking after unmasking), then wake writers waiting
   * for space in the outbound ring.
   */
  handleInterrupt(): void {
    if (this.state !== 'open') return;
    this.stats.interrupts++;
    this.checkSpace();
    this.drain();
  }

  /** Reads inbound packets until the ring is empty or the handler defers one. */
  drain(): void {
    if (this.draining || this.state !== 'open') return;
    this.draining = true;
    // Whatever the handlers send while draining goes out in one publish.
    this.beginBatch();
    try {
      for (;;) {
        this.reader.mask();
        const deferred = this.drainOnce();
        if (this.reader.publish()) {
          this.stats.writerWakeups++;
          this.signalPeer();
        }
        if (this.state !== 'open') return;
        if (deferred) {
          // The handler cannot take more now; it drains again when it can.
          this.reader.unmask();
          return;
        }
        if (!this.reader.unmask()) return;
      }
    } finally {
      this.draining = false;
      this.endBatch();
    }
  }

  /**
   * Leaves the inbound ring masked after draining: the peer need not signal,
   * because this end will poll again by itself (the queue's busy policy).
   */
  holdMasked(): void {
    if (this.state === 'open') this.reader.mask();
  }

  /** One pass over the inbound ring; true when the handler deferred a packet. */
  private drainOnce(): boolean {
    for (;;) {
      const status = this.reader.next(this.buffer, this.inPlaceAbove);
      if (status === 'empty') return false;
      if (status === 'corrupt') {
        this.fail(`inbound ring: ${this.reader.error}`);
        return false;
      }
      const error = this.packet.load(this.reader.length, this.reader.inPlace);
      if (error) {
        this.stats.badPackets++;
        continue;
      }
      const handler = this.onPacket;
      let consumed = true;
      if (handler) {
        // A device's handler that throws (a bug, or input it failed to
        // check) costs that packet only, never the channel or the worker.
        // It is counted apart from bad input, so tests can hold it at 0.
        try {
          consumed = handler(this.packet) !== false;
        } catch (error) {
          this.stats.handlerErrors++;
          this.onHandlerError?.(error as Error);
        }
      }
      if (!consumed) {
        this.reader.rewind();
        return true;
      }
      this.stats.packetsReceived++;
      this.stats.bytesReceived += this.packet.payloadLength;
      if (this.state !== 'open') return false;
    }
  }

  private fail(reason: string): void {
    if (this.state !== 'open') return;
    this.state = 'failed';
    this.error = `${this.name}: ${reason}`;
    this.releaseWaiters();
    this.onFailure?.(this.error);
  }

  private releaseWaiters(): void {
    for (const w of this.spaceWaiters.splice(0)) w.resolve(false);
  }

  /** Stops using the rings (channel closed). */
  close(): void {
    if (this.state === 'open') this.state = 'closed';
    this.releaseWaiters();
  }

  /** Occupancy of both rings, for status displays. */
  occupancy(): {
    outboundUsed: number;
    outboundSize: number;
    inboundUsed: number;
    inboundSize: number;
  } {
    const out = this.outboundRing;
    const inb = this.inboundRing;
    const used = (ring: Ring): number =>
      ring.validIndex(ring.writeIndex) && ring.validIndex(ring.readIndex)
        ? ring.availableToRead(ring.writeIndex, ring.readIndex)
        : -1;
    return {
      outboundUsed: used(out),
      outboundSize: out.dataSize,
      inboundUsed: used(inb),
      inboundSize: inb.dataSize,
    };
  }
}
