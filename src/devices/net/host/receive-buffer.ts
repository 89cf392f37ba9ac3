/**
 * The guest's receive buffer as the host fills it: one section (a
 * sub-allocation) per RNDIS message, handed to the guest as a transfer-page
 * range and free again once the guest completes the packet that named it
 * (Linux netvsc_receive, OpenVMM netvsp's receive buffer). The section size
 * follows the MTU the guest announced, so one frame always fits.
 */
import type { BufferRegion, MappedGpadl } from '../../../vmbus/device.ts';
import { NETVSC_RECV_SECTION_SIZE } from '../protocol.ts';

/** Room in a section for the RNDIS header and per-packet info in front of a frame. */
const RNDIS_ROOM = 116;

/** The sub-allocation size for an MTU (Linux's 1728 for 1500, more for jumbo frames). */
export function sectionSizeFor(mtu: number): number {
  const needed = mtu + 14 + 4 + RNDIS_ROOM;
  return Math.max(NETVSC_RECV_SECTION_SIZE, Math.ceil(needed / 64) * 64);
}

export class ReceiveBuffer {
  readonly count: number;
  private readonly free: Int32Array;
  private top: number;
  private readonly used: Uint8Array;

  constructor(
    readonly mapping: MappedGpadl,
    readonly region: BufferRegion,
    readonly sectionSize: number,
  ) {
    this.count = Math.floor(region.length / sectionSize);
    this.free = new Int32Array(this.count);
    for (let i = 0; i < this.count; i++) this.free[i] = this.count - 1 - i;
    this.top = this.count;
    this.used = new Uint8Array(this.count);
  }

  get inUse(): number {
    return this.count - this.top;
  }

  /** Sections free now. */
  get available(): number {
    return this.top;
  }

  /** A free section, or -1 when the guest holds them all. */
  allocate(): number {
    if (this.top === 0) return -1;
    const section = this.free[--this.top]!;
    this.used[section] = 1;
    return section;
  }

  /** Gives a section back (once; a second release is ignored). */
  release(section: number): void {
    if (section < 0 || section >= this.count || this.used[section] === 0) return;
    this.used[section] = 0;
    this.free[this.top++] = section;
  }

  offsetOf(section: number): number {
    return section * this.sectionSize;
  }

  /** Copies `bytes` into a section at `at` (bounded by the section). */
  write(section: number, at: number, bytes: Uint8Array, from = 0, length = bytes.length - from) {
    if (at + length > this.sectionSize) {
      throw new RangeError(`${at + length} bytes do not fit a ${this.sectionSize}-byte section`);
    }
    this.region.write(section * this.sectionSize + at, bytes, from, length);
  }
}
