/**
 * The VMBus ring buffer (Linux drivers/hv/ring_buffer.c): a 4 KiB header page
 * with the control words, then a data area of packets. The writer owns
 * write_index, the reader owns read_index; both are byte offsets into the
 * data area, stored with single 32-bit atomic stores after the data they
 * publish. Each packet is 8-byte aligned and followed by a u64 trailer
 * holding (packet start << 32). A writer needs strictly more free bytes than
 * it writes, so read == write always means empty.
 *
 * Both ends keep a private copy of their own index and treat what the other
 * side wrote in the header as untrusted: a misaligned or out-of-range index,
 * or a packet that claims more bytes than are available, marks the ring
 * corrupt and the channel stops.
 */
import { type ByteRegion, ContiguousRegion, regionOverPages } from './byte-region.ts';
import {
  RING_FEATURE_PENDING_SEND_SZ,
  RING_HEADER_SIZE,
  RING_TRAILER_SIZE,
} from './ring-protocol.ts';

const W_WRITE = 0;
const W_READ = 1;
const W_MASK = 2;
const W_PENDING = 3;
const W_FEATURES = 16; // byte 64

/** Packets up to this size are copied word by word rather than with a view and set(). */
const SMALL_PACKET = 256;

export class RingCorruptError extends Error {
  override readonly name = 'RingCorruptError';
}

/** One ring: header control words plus the data area. */
export class Ring {
  /** Data area size in bytes (ring size minus the header page). */
  readonly dataSize: number;
  /** The data area when it is one contiguous run of memory (fast paths use it directly). */
  readonly contiguous: ContiguousRegion | undefined;

  constructor(
    /** 32-bit words over memory that holds the header page. */
    readonly control: Int32Array,
    /** Index in `control` of the header's first word (write_index). */
    readonly base: number,
    readonly data: ByteRegion,
  ) {
    if (data.length === 0 || data.length % 8 !== 0) {
      throw new RingCorruptError(
        `ring data area of ${data.length} bytes is not a positive multiple of 8`,
      );
    }
    this.dataSize = data.length;
    this.contiguous = data instanceof ContiguousRegion ? data : undefined;
  }

  /** A ring over one buffer holding the header page followed by the data area. */
  static fromBytes(bytes: Uint8Array): Ring {
    if (bytes.byteOffset % 4 !== 0)
      throw new RingCorruptError('ring memory must be 4-byte aligned');
    return new Ring(
      new Int32Array(bytes.buffer, bytes.byteOffset, RING_HEADER_SIZE / 4),
      0,
      new ContiguousRegion(bytes.subarray(RING_HEADER_SIZE)),
    );
  }

  /** A ring over guest pages: the first PFN is the header page, the rest the data area. */
  static fromPages(buffer: SharedArrayBuffer, pfns: readonly number[], pageSize = 4096): Ring {
    if (pfns.length < 2)
      throw new RingCorruptError(`a ring needs at least 2 pages, got ${pfns.length}`);
    return new Ring(
      new Int32Array(buffer),
      (pfns[0]! * pageSize) / 4,
      regionOverPages(buffer, pfns.slice(1), pageSize),
    );
  }

  /** hv_ringbuffer_init: zero header, both indices 0, pending-send-size feature on. */
  initialize(): void {
    for (let i = 0; i < RING_HEADER_SIZE / 4; i++) Atomics.store(this.control, this.base + i, 0);
    Atomics.store(this.control, this.base + W_FEATURES, RING_FEATURE_PENDING_SEND_SZ);
  }

  get writeIndex(): number {
    return Atomics.load(this.control, this.base + W_WRITE) >>> 0;
  }
  set writeIndex(value: number) {
    Atomics.store(this.control, this.base + W_WRITE, value);
  }
  get readIndex(): number {
    return Atomics.load(this.control, this.base + W_READ) >>> 0;
  }
  set readIndex(value: number) {
    Atomics.store(this.control, this.base + W_READ, value);
  }
  get interruptMask(): number {
    return Atomics.load(this.control, this.base + W_MASK) >>> 0;
  }
  set interruptMask(value: number) {
    Atomics.store(this.control, this.base + W_MASK, value);
  }
  get pendingSendSize(): number {
    return Atomics.load(this.control, this.base + W_PENDING) >>> 0;
  }
  set pendingSendSize(value: number) {
    Atomics.store(this.control, this.base + W_PENDING, value);
  }
  get featureBits(): number {
    return Atomics.load(this.control, this.base + W_FEATURES) >>> 0;
  }

  /** True when an index is one a well-behaved peer could have written. */
  validIndex(index: number): boolean {
    return index < this.dataSize && index % 8 === 0;
  }

  /** Free bytes for the writer, given write and read indices. */
  availableToWrite(write: number, read: number): number {
    return write >= read ? this.dataSize - (write - read) : read - write;
  }

  availableToRead(write: number, read: number): number {
    return this.dataSize - this.availableToWrite(write, read);
  }

  // Wrap-aware copies: [offset, offset+length) continues at 0 past the end.

  copyIn(
    offset: number,
    source: Uint8Array,
    sourceOffset = 0,
    length = source.length - sourceOffset,
  ): number {
    const first = Math.min(length, this.dataSize - offset);
    this.data.write(offset, source, sourceOffset, first);
    if (first < length) this.data.write(0, source, sourceOffset + first, length - first);
    return (offset + length) % this.dataSize;
  }

  copyOut(offset: number, target: Uint8Array, targetOffset: number, length: number): number {
    const first = Math.min(length, this.dataSize - offset);
    this.data.read(offset, target, targetOffset, first);
    if (first < length) this.data.read(0, target, targetOffset + first, length - first);
    return (offset + length) % this.dataSize;
  }

  zeroFill(offset: number, length: number): number {
    const first = Math.min(length, this.dataSize - offset);
    this.data.fill(offset, first, 0);
    if (first < length) this.data.fill(0, length - first, 0);
    return (offset + length) % this.dataSize;
  }
}

const scratchTrailer = new Uint8Array(8);
const scratchTrailerView = new DataView(scratchTrailer.buffer);

/**
 * The writing end of a ring. Packets are staged with `reserve` and copies at
 * offsets relative to the packet start, then `commit` appends the trailer.
 * `publish` stores write_index once for everything committed since the last
 * publish (a batch) and says whether the reader must be signalled.
 */
export class RingWriter {
  /** Private write index: where the next packet goes. */
  private cursor: number;
  /** write_index as last published. */
  private published: number;
  private packetStart = -1;
  private packetLength = 0;
  /** Free bytes known without loading read_index again (a lower bound). */
  private knownFree = 0;

  constructor(readonly ring: Ring) {
    const w = ring.writeIndex;
    if (!ring.validIndex(w)) {
      throw new RingCorruptError(
        `ring write_index ${w} is invalid (data area ${ring.dataSize} bytes)`,
      );
    }
    this.cursor = w;
    this.published = w;
  }

  /** Free bytes now, by the reader's published index; -1 if that index is invalid. */
  available(): number {
    const r = this.ring.readIndex;
    if (!this.ring.validIndex(r)) return -1;
    return this.ring.availableToWrite(this.cursor, r);
  }

  /**
   * Reserves room for a packet of `length` bytes (a multiple of 8, without the
   * trailer). Answers 'full', changing nothing, unless strictly more than
   * length + 8 bytes are free; 'corrupt' when the reader's index is invalid.
   */
  reserve(length: number): 'ok' | 'full' | 'corrupt' {
    if (length <= 0 || length % 8 !== 0) {
      throw new RangeError(`packet length ${length} is not a positive multiple of 8`);
    }
    if (this.packetStart >= 0) throw new Error('previous packet was not committed');
    const needed = length + RING_TRAILER_SIZE;
    // The reader only ever frees space, so a known-free count is a safe lower
    // bound: read_index is loaded again only when it is not enough.
    if (this.knownFree <= needed) {
      const available = this.available();
      if (available < 0) return 'corrupt';
      this.knownFree = available;
      if (available <= needed) return 'full';
    }
    this.knownFree -= needed;
    this.packetStart = this.cursor;
    this.packetLength = length;
    return 'ok';
  }

  /** Size of the biggest packet reserve() could accept now. */
  maxPacketLength(): number {
    const available = this.available();
    return available < 0 ? 0 : Math.max(0, (available - RING_TRAILER_SIZE - 1) & ~7);
  }

  private at(relative: number): number {
    return (this.packetStart + relative) % this.ring.dataSize;
  }

  /**
   * Where the reserved packet starts in the contiguous data area, when the
   * packet and its trailer fit there without wrapping; -1 otherwise. Encoders
   * then write fields in place instead of staging copies.
   */
  directOffset(): number {
    const start = this.packetStart;
    if (start < 0 || !this.ring.contiguous) return -1;
    return start + this.packetLength + RING_TRAILER_SIZE <= this.ring.dataSize ? start : -1;
  }

  put(
    relative: number,
    source: Uint8Array,
    sourceOffset = 0,
    length = source.length - sourceOffset,
  ): void {
    this.ring.copyIn(this.at(relative), source, sourceOffset, length);
  }

  zero(relative: number, length: number): void {
    if (length > 0) this.ring.zeroFill(this.at(relative), length);
  }

  /** Appends the trailer (packet start << 32) and moves the private cursor. */
  commit(): void {
    if (this.packetStart < 0) throw new Error('no packet reserved');
    const direct = this.directOffset();
    if (direct >= 0) {
      const view = this.ring.contiguous!.view;
      view.setUint32(direct + this.packetLength, 0, true);
      view.setUint32(direct + this.packetLength + 4, direct, true);
      this.cursor = (direct + this.packetLength + RING_TRAILER_SIZE) % this.ring.dataSize;
      this.packetStart = -1;
      return;
    }
    scratchTrailerView.setUint32(0, 0, true);
    scratchTrailerView.setUint32(4, this.packetStart, true);
    this.ring.copyIn(this.at(this.packetLength), scratchTrailer);
    this.cursor = this.at(this.packetLength + RING_TRAILER_SIZE);
    this.packetStart = -1;
  }

  /** Drops a reserved packet without writing it. */
  abandon(): void {
    if (this.packetStart >= 0) this.knownFree += this.packetLength + RING_TRAILER_SIZE;
    this.packetStart = -1;
  }

  /** True when packets are committed but not yet published. */
  get hasUnpublished(): boolean {
    return this.cursor !== this.published;
  }

  /**
   * Stores write_index (one atomic store per batch) and decides, as Linux's
   * hv_signal_on_write does, whether to signal the reader: only when the
   * reader has not masked interrupts and the ring was empty before this
   * batch (old write index == read index).
   */
  publish(): boolean {
    if (this.cursor === this.published) return false;
    const old = this.published;
    this.ring.writeIndex = this.cursor;
    this.published = this.cursor;
    if (this.ring.interruptMask !== 0) return false;
    return old === this.ring.readIndex;
  }
}

export type ReadStatus = 'packet' | 'empty' | 'corrupt';

/**
 * The reading end of a ring. `next` copies the next packet into the
 * caller's private buffer (so it can be validated without the writer
 * changing it underneath); `publish` stores read_index once per batch and
 * says whether a blocked writer must be signalled.
 */
export class RingReader {
  /** Private read index. */
  private cursor: number;
  /** Cursor before the last packet returned by next(), for rewind(). */
  private previous: number;
  /** Bytes known to be readable without loading write_index again (a lower bound). */
  private knownAvailable = 0;
  /** read_index as last published. */
  private published: number;
  /** Length (bytes, without trailer) of the packet `next` returned. */
  length = 0;
  /**
   * When next() left a large packet's payload in the ring (see its
   * inPlaceAbove argument): a view of the whole packet in the ring, valid
   * until read_index is published. Undefined for packets copied whole.
   */
  inPlace: Uint8Array | undefined;
  /** Why the ring was declared corrupt. */
  error = '';

  constructor(readonly ring: Ring) {
    const r = ring.readIndex;
    if (!ring.validIndex(r)) {
      throw new RingCorruptError(
        `ring read_index ${r} is invalid (data area ${ring.dataSize} bytes)`,
      );
    }
    this.cursor = r;
    this.previous = r;
    this.published = r;
  }

  /** Bytes the writer has published that this reader has not consumed. */
  available(): number {
    const w = this.ring.writeIndex;
    if (!this.ring.validIndex(w)) return -1;
    return this.ring.availableToRead(w, this.cursor);
  }

  /**
   * Copies the next packet (descriptor and payload, without the trailer) into
   * `target` and advances the private cursor. The descriptor's len8 is the
   * only thing read before the copy, and it is bounded by what is available
   * and by `target`.
   */
  next(target: Uint8Array, inPlaceAbove = Number.POSITIVE_INFINITY): ReadStatus {
    this.inPlace = undefined;
    // The writer only ever adds data, so a known-available count is a safe
    // lower bound: write_index is loaded again only when it runs out.
    let available = this.knownAvailable;
    if (available === 0) {
      available = this.available();
      if (available < 0) return this.corrupt(`write_index ${this.ring.writeIndex} is invalid`);
      if (available === 0) return 'empty';
      this.knownAvailable = available;
    }
    if (available < 16 + RING_TRAILER_SIZE) {
      return this.corrupt(`${available} bytes available, less than a descriptor and trailer`);
    }
    // len8 is bytes 4..5 of the descriptor (never split: packets are 8-aligned).
    const contiguous = this.ring.contiguous;
    let length: number;
    if (contiguous) {
      length = contiguous.view.getUint16(this.cursor + 4, true) * 8;
    } else {
      this.ring.copyOut(this.cursor + 4, target, 0, 2);
      length = (target[0]! | (target[1]! << 8)) * 8;
    }
    if (length < 16) return this.corrupt(`packet at ${this.cursor} has len8 ${length / 8}`);
    if (length + RING_TRAILER_SIZE > available) {
      return this.corrupt(
        `packet at ${this.cursor} claims ${length} bytes, ${available} available`,
      );
    }
    if (length > target.length) {
      return this.corrupt(
        `packet at ${this.cursor} has ${length} bytes, more than the ${target.length} allowed`,
      );
    }
    if (length > inPlaceAbove && contiguous && this.cursor + length <= this.ring.dataSize) {
      // Large packet whose payload the consumer takes in place: copy only the
      // descriptor and its extension (what gets validated), view the rest.
      const offset8 = contiguous.view.getUint16(this.cursor + 2, true);
      const prefix = Math.min(length, Math.max(16, offset8 * 8));
      this.ring.copyOut(this.cursor, target, 0, prefix);
      this.inPlace = contiguous.bytes.subarray(this.cursor, this.cursor + length);
      this.consumed(length);
      return 'packet';
    }
    const words = contiguous?.words;
    if (
      words &&
      length <= SMALL_PACKET &&
      this.cursor + length <= this.ring.dataSize &&
      target.byteOffset % 4 === 0
    ) {
      // Small packets: copy 32-bit words (packets are 8-aligned), no view allocation.
      const out = this.wordsOf(target);
      const from = this.cursor >>> 2;
      for (let i = 0; i < length >>> 2; i++) out[i] = words[from + i]!;
    } else {
      this.ring.copyOut(this.cursor, target, 0, length);
    }
    this.consumed(length);
    return 'packet';
  }

  private consumed(length: number): void {
    this.length = length;
    this.previous = this.cursor;
    this.cursor = (this.cursor + length + RING_TRAILER_SIZE) % this.ring.dataSize;
    this.knownAvailable -= length + RING_TRAILER_SIZE;
  }

  private targetWords: Int32Array | undefined;
  private wordsTarget: Uint8Array | undefined;

  private wordsOf(target: Uint8Array): Int32Array {
    if (this.wordsTarget !== target || !this.targetWords) {
      this.wordsTarget = target;
      this.targetWords = new Int32Array(target.buffer, target.byteOffset, target.byteLength >>> 2);
    }
    return this.targetWords;
  }

  /** Puts back the packet next() just returned; it will be read again. */
  rewind(): void {
    if (this.cursor !== this.previous) this.knownAvailable += this.length + RING_TRAILER_SIZE;
    this.cursor = this.previous;
  }

  private corrupt(reason: string): ReadStatus {
    this.error = reason;
    return 'corrupt';
  }

  /** True when packets were consumed but read_index not yet published. */
  get hasUnpublished(): boolean {
    return this.cursor !== this.published;
  }

  /**
   * Publishes read_index. Returns true when the writer set pending_send_sz
   * and the free space just crossed above it (Linux hv_pkt_iter_close).
   */
  publish(): boolean {
    if (this.cursor === this.published) return false;
    const start = this.published;
    this.ring.readIndex = this.cursor;
    this.published = this.cursor;
    if ((this.ring.featureBits & RING_FEATURE_PENDING_SEND_SZ) === 0) return false;
    const pending = this.ring.pendingSendSize;
    if (pending === 0) return false;
    const w = this.ring.writeIndex;
    if (!this.ring.validIndex(w)) return false;
    const free = this.ring.availableToWrite(w, this.cursor);
    if (free <= pending) return false;
    const bytesRead =
      this.cursor >= start ? this.cursor - start : this.ring.dataSize - start + this.cursor;
    // Signal only if we crossed the threshold; the writer was told already otherwise.
    return free - bytesRead <= pending;
  }

  /** Masks the writer's signals while draining (hv_begin_read). */
  mask(): void {
    this.ring.interruptMask = 1;
  }

  /**
   * Unmasks and reports whether data arrived meanwhile (hv_end_read): the
   * caller must drain again when this returns true, or a packet written while
   * masked would sit unsignalled.
   */
  unmask(): boolean {
    this.ring.interruptMask = 0;
    return this.available() !== 0;
  }
}
