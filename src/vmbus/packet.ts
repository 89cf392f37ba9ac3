/**
 * Ring packets (Linux include/linux/hyperv.h, drivers/hv/channel.c): a
 * 16-byte descriptor (type, offset8, len8, flags, trans_id), an optional
 * descriptor extension up to offset8 * 8 (GPA ranges or transfer-page
 * ranges), then the payload, zero-padded to 8 bytes. Encoders write straight
 * into a RingWriter; the decoder works on a private copy of one packet and
 * reuses its objects, so the data path allocates nothing per packet.
 */

import { PAGE_SIZE } from '../hv/protocol.ts';
import type { RingWriter } from './ring.ts';
import {
  GPA_DIRECT_FIXED_BYTES,
  PACKET_DESCRIPTOR_SIZE,
  PacketType,
  transferPagePacketHeader,
  VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED,
} from './ring-protocol.ts';

const TRANSFER_PAGE_FIXED_BYTES = transferPagePacketHeader.offsetOf('ranges');
const TWO_32 = 0x1_0000_0000;

export type WriteResult = 'ok' | 'full' | 'corrupt';

export function align8(n: number): number {
  return (n + 7) & ~7;
}

/** Packet length (without trailer) of an in-band packet with this payload. */
export function inbandPacketLength(payloadLength: number): number {
  return align8(PACKET_DESCRIPTOR_SIZE + payloadLength);
}

/** A transaction id split into two 32-bit halves (64-bit ids without BigInt on the data path). */
export interface TransactionId {
  lo: number;
  hi: number;
}

export function transactionId(value: number | bigint): TransactionId {
  if (typeof value === 'bigint') {
    return { lo: Number(value & 0xffffffffn), hi: Number((value >> 32n) & 0xffffffffn) };
  }
  return { lo: (value % TWO_32) >>> 0, hi: Math.floor(value / TWO_32) >>> 0 };
}

const descriptor = new Uint8Array(PACKET_DESCRIPTOR_SIZE);
const descriptorView = new DataView(descriptor.buffer);
const scratch = new Uint8Array(4096);
const scratchView = new DataView(scratch.buffer);

function putDescriptor(
  w: RingWriter,
  type: number,
  offset8: number,
  len8: number,
  flags: number,
  transLo: number,
  transHi: number,
): void {
  descriptorView.setUint16(0, type, true);
  descriptorView.setUint16(2, offset8, true);
  descriptorView.setUint16(4, len8, true);
  descriptorView.setUint16(6, flags, true);
  descriptorView.setUint32(8, transLo, true);
  descriptorView.setUint32(12, transHi, true);
  w.put(0, descriptor);
}

function finish(w: RingWriter, at: number, payload: Uint8Array | undefined, length: number): void {
  let end = at;
  if (payload && payload.length > 0) {
    w.put(at, payload);
    end += payload.length;
  }
  w.zero(end, length - end);
  w.commit();
}

/**
 * Writes a packet whose payload follows the descriptor directly: in-band
 * data (6) or a completion (11). Returns 'full' without writing when the
 * ring lacks room.
 */
export function writeInband(
  w: RingWriter,
  type: PacketType,
  flags: number,
  transLo: number,
  transHi: number,
  payload: Uint8Array,
): WriteResult {
  const length = inbandPacketLength(payload.length);
  if (length / 8 > 0xffff)
    throw new RangeError(`in-band payload of ${payload.length} bytes is too big`);
  const status = w.reserve(length);
  if (status !== 'ok') return status;
  putDescriptor(w, type, PACKET_DESCRIPTOR_SIZE / 8, length / 8, flags, transLo, transHi);
  finish(w, PACKET_DESCRIPTOR_SIZE, payload, length);
  return 'ok';
}

export function writeCompletion(
  w: RingWriter,
  transLo: number,
  transHi: number,
  payload: Uint8Array,
): WriteResult {
  return writeInband(w, PacketType.Completion, 0, transLo, transHi, payload);
}

/** One GPA range: byte_count bytes starting byte_offset into the first of `pfns`. */
export interface GpaRangeSpec {
  readonly byteCount: number;
  readonly byteOffset: number;
  readonly pfns: ArrayLike<number>;
}

/** Descriptor size (offset8 * 8) of a GPA-direct packet with these ranges. */
export function gpaDirectDescriptorSize(ranges: readonly GpaRangeSpec[]): number {
  let size = GPA_DIRECT_FIXED_BYTES;
  for (const r of ranges) size += 8 + 8 * r.pfns.length;
  return size;
}

/** Packet length (without trailer) of a GPA-direct packet with these ranges and payload. */
export function gpaDirectPacketLength(
  ranges: readonly GpaRangeSpec[],
  payloadLength: number,
): number {
  return align8(gpaDirectDescriptorSize(ranges) + payloadLength);
}

/**
 * Writes a GPA-direct packet (9), as Linux's vmbus_sendpacket_mpb_desc()
 * builds it: descriptor, reserved, range count, the ranges with their PFNs,
 * then the in-band payload.
 */
export function writeGpaDirect(
  w: RingWriter,
  flags: number,
  transLo: number,
  transHi: number,
  ranges: readonly GpaRangeSpec[],
  payload: Uint8Array,
): WriteResult {
  const descSize = gpaDirectDescriptorSize(ranges);
  if (descSize > scratch.length)
    throw new RangeError(`GPA range list of ${descSize} bytes is too big`);
  const length = gpaDirectPacketLength(ranges, payload.length);
  const status = w.reserve(length);
  if (status !== 'ok') return status;
  putDescriptor(
    w,
    PacketType.DataUsingGpaDirect,
    descSize / 8,
    length / 8,
    flags,
    transLo,
    transHi,
  );
  scratchView.setUint32(0, 0, true);
  scratchView.setUint32(4, ranges.length, true);
  let at = 8;
  for (const r of ranges) {
    scratchView.setUint32(at, r.byteCount, true);
    scratchView.setUint32(at + 4, r.byteOffset, true);
    at += 8;
    for (let i = 0; i < r.pfns.length; i++) {
      const pfn = r.pfns[i]!;
      scratchView.setUint32(at, (pfn % TWO_32) >>> 0, true);
      scratchView.setUint32(at + 4, Math.floor(pfn / TWO_32), true);
      at += 8;
    }
  }
  w.put(PACKET_DESCRIPTOR_SIZE, scratch, 0, at);
  finish(w, descSize, payload, length);
  return 'ok';
}

export interface TransferPageRangeSpec {
  readonly byteCount: number;
  readonly byteOffset: number;
}

/** Packet length (without trailer) of a transfer-page packet with this many ranges. */
export function transferPagePacketLength(rangeCount: number, payloadLength: number): number {
  return align8(TRANSFER_PAGE_FIXED_BYTES + 8 * rangeCount + payloadLength);
}

/**
 * Writes a transfer-page packet (7): ranges of a transfer page set the
 * receiver established earlier (netvsc's receive buffer), then an in-band
 * payload.
 */
export function writeTransferPages(
  w: RingWriter,
  flags: number,
  transLo: number,
  transHi: number,
  pageSetId: number,
  ranges: readonly TransferPageRangeSpec[],
  payload: Uint8Array,
  senderOwnsSet = false,
): WriteResult {
  const descSize = TRANSFER_PAGE_FIXED_BYTES + 8 * ranges.length;
  if (descSize > scratch.length)
    throw new RangeError(`${ranges.length} transfer-page ranges are too many`);
  const length = transferPagePacketLength(ranges.length, payload.length);
  const status = w.reserve(length);
  if (status !== 'ok') return status;
  putDescriptor(
    w,
    PacketType.DataUsingTransferPages,
    descSize / 8,
    length / 8,
    flags,
    transLo,
    transHi,
  );
  scratchView.setUint16(0, pageSetId, true);
  scratchView.setUint8(2, senderOwnsSet ? 1 : 0);
  scratchView.setUint8(3, 0);
  scratchView.setUint32(4, ranges.length, true);
  let at = 8;
  for (const r of ranges) {
    scratchView.setUint32(at, r.byteCount, true);
    scratchView.setUint32(at + 4, r.byteOffset, true);
    at += 8;
  }
  w.put(PACKET_DESCRIPTOR_SIZE, scratch, 0, at);
  finish(w, descSize, payload, length);
  return 'ok';
}

/**
 * GPA ranges of a received GPA-direct packet, validated against the packet's
 * bounds. Reused from packet to packet (arrays grow as needed, never shrink).
 */
export class GpaRangeList {
  count = 0;
  byteCount: Uint32Array = new Uint32Array(4);
  byteOffset: Uint32Array = new Uint32Array(4);
  /** Index into `pfns` of each range's first PFN, and its PFN count. */
  pfnStart: Uint32Array = new Uint32Array(4);
  pfnCount: Uint32Array = new Uint32Array(4);
  pfns = new Float64Array(64);

  private grow(ranges: number, pfns: number): void {
    if (ranges > this.byteCount.length) {
      const n = Math.max(ranges, this.byteCount.length * 2);
      const copy = (a: Uint32Array): Uint32Array<ArrayBuffer> => {
        const b = new Uint32Array(n);
        b.set(a);
        return b;
      };
      this.byteCount = copy(this.byteCount);
      this.byteOffset = copy(this.byteOffset);
      this.pfnStart = copy(this.pfnStart);
      this.pfnCount = copy(this.pfnCount);
    }
    if (pfns > this.pfns.length) {
      const b = new Float64Array(Math.max(pfns, this.pfns.length * 2));
      b.set(this.pfns);
      this.pfns = b;
    }
  }

  /** Total bytes the ranges describe. */
  totalBytes(): number {
    let total = 0;
    for (let i = 0; i < this.count; i++) total += this.byteCount[i]!;
    return total;
  }

  /** Parses the ranges of a GPA-direct packet. Returns an error string, or undefined. */
  parse(packet: PacketView): string | undefined {
    this.count = 0;
    const end = packet.payloadOffset;
    if (end < GPA_DIRECT_FIXED_BYTES) {
      return `GPA-direct descriptor of ${end} bytes is shorter than its ${GPA_DIRECT_FIXED_BYTES}-byte header`;
    }
    const dv = packet.view;
    const rangeCount = dv.getUint32(20, true);
    // Each range takes at least 16 bytes (header and one PFN).
    if (rangeCount > (end - GPA_DIRECT_FIXED_BYTES) / 16) {
      return `GPA-direct range count ${rangeCount} cannot fit in ${end - GPA_DIRECT_FIXED_BYTES} bytes`;
    }
    this.grow(rangeCount, (end - GPA_DIRECT_FIXED_BYTES) / 8);
    let at = GPA_DIRECT_FIXED_BYTES;
    let pfnIndex = 0;
    for (let i = 0; i < rangeCount; i++) {
      if (at + 8 > end) return `GPA range ${i} header is past the descriptor end ${end}`;
      const byteCount = dv.getUint32(at, true);
      const byteOffset = dv.getUint32(at + 4, true);
      if (byteOffset >= PAGE_SIZE)
        return `GPA range ${i} byte offset ${byteOffset} is not inside the first page`;
      if (byteCount === 0) return `GPA range ${i} is empty`;
      const npfn = Math.ceil((byteOffset + byteCount) / PAGE_SIZE);
      at += 8;
      if (at + npfn * 8 > end) {
        return `GPA range ${i} needs ${npfn} PFNs, past the descriptor end ${end}`;
      }
      this.byteCount[i] = byteCount;
      this.byteOffset[i] = byteOffset;
      this.pfnStart[i] = pfnIndex;
      this.pfnCount[i] = npfn;
      for (let p = 0; p < npfn; p++) {
        this.pfns[pfnIndex++] = dv.getUint32(at, true) + dv.getUint32(at + 4, true) * TWO_32;
        at += 8;
      }
    }
    this.count = rangeCount;
    return undefined;
  }
}

/** Transfer-page ranges of a received packet (7), validated and reused. */
export class TransferPageRanges {
  pageSetId = 0;
  senderOwnsSet = false;
  count = 0;
  byteCount = new Uint32Array(8);
  byteOffset = new Uint32Array(8);

  parse(packet: PacketView): string | undefined {
    this.count = 0;
    const end = packet.payloadOffset;
    if (end < TRANSFER_PAGE_FIXED_BYTES) {
      return `transfer-page descriptor of ${end} bytes is shorter than its ${TRANSFER_PAGE_FIXED_BYTES}-byte header`;
    }
    const dv = packet.view;
    const count = dv.getUint32(20, true);
    if (count > (end - TRANSFER_PAGE_FIXED_BYTES) / 8) {
      return `transfer-page range count ${count} cannot fit in ${end - TRANSFER_PAGE_FIXED_BYTES} bytes`;
    }
    if (count > this.byteCount.length) {
      this.byteCount = new Uint32Array(count);
      this.byteOffset = new Uint32Array(count);
    }
    this.pageSetId = dv.getUint16(16, true);
    this.senderOwnsSet = dv.getUint8(18) !== 0;
    for (let i = 0; i < count; i++) {
      this.byteCount[i] = dv.getUint32(TRANSFER_PAGE_FIXED_BYTES + 8 * i, true);
      this.byteOffset[i] = dv.getUint32(TRANSFER_PAGE_FIXED_BYTES + 8 * i + 4, true);
    }
    this.count = count;
    return undefined;
  }
}

/**
 * One received packet in a private buffer. `load` validates the descriptor
 * against the packet's length; payload accessors stay inside it.
 */
export class PacketView {
  readonly view: DataView;
  length = 0;
  type = 0;
  offset8 = 0;
  len8 = 0;
  flags = 0;
  transLo = 0;
  transHi = 0;
  /** Bytes from the packet start to the payload (offset8 * 8). */
  payloadOffset = 0;
  /** Payload bytes, including the padding to 8 (hv_pkt_datalen). */
  payloadLength = 0;
  /**
   * The packet still in the ring, when its payload was left in place: the
   * descriptor and extension were copied into `buffer` (and validated there);
   * payload() then views shared memory, which the peer could change — only
   * for consumers that treat the payload as opaque bytes.
   */
  inPlace: Uint8Array | undefined;

  constructor(readonly buffer: Uint8Array) {
    this.view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  }

  /** Reads the descriptor of the `length`-byte packet in the buffer. Returns an error or undefined. */
  load(length: number, inPlace?: Uint8Array): string | undefined {
    this.inPlace = inPlace;
    if (length < PACKET_DESCRIPTOR_SIZE || length > this.buffer.length) {
      return `packet length ${length} is outside ${PACKET_DESCRIPTOR_SIZE}..${this.buffer.length}`;
    }
    const dv = this.view;
    this.length = length;
    this.type = dv.getUint16(0, true);
    this.offset8 = dv.getUint16(2, true);
    this.len8 = dv.getUint16(4, true);
    this.flags = dv.getUint16(6, true);
    this.transLo = dv.getUint32(8, true);
    this.transHi = dv.getUint32(12, true);
    if (this.len8 * 8 !== length)
      return `len8 ${this.len8} does not match the packet's ${length} bytes`;
    if (this.offset8 < 2 || this.offset8 > this.len8) {
      return `offset8 ${this.offset8} is outside 2..len8 (${this.len8})`;
    }
    this.payloadOffset = this.offset8 * 8;
    this.payloadLength = length - this.payloadOffset;
    return undefined;
  }

  get completionRequested(): boolean {
    return (this.flags & VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED) !== 0;
  }

  get transId(): bigint {
    return (BigInt(this.transHi) << 32n) | BigInt(this.transLo);
  }

  /** The payload (a view into the private buffer; valid until the next packet). */
  payload(): Uint8Array {
    return (this.inPlace ?? this.buffer).subarray(this.payloadOffset, this.length);
  }

  /** The descriptor extension between the 16-byte descriptor and the payload. */
  extension(): Uint8Array {
    return this.buffer.subarray(PACKET_DESCRIPTOR_SIZE, this.payloadOffset);
  }
}
