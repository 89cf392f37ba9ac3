/**
 * The guest's side of the NIC's shared buffers: the receive buffer the host
 * fills (read only through bounded copies: the host may change it at any
 * time), the send buffer's sections the guest writes frames into, and a few
 * page-aligned bounce buffers for RNDIS control messages and sends too large
 * for a section (which go to the host as GPA-direct page lists).
 */
import type { GuestDevice, GuestPages } from '../../../vmbus/device.ts';
import { PAGE_SIZE } from '../../../vmbus/device.ts';
import type { GpaRange } from '../../../vmbus/queue.ts';

/** A run of guest pages shared with the host by one GPADL. */
export class SharedPages {
  readonly bytes: Uint8Array;
  readonly pfns: number[];
  gpadl = 0;

  constructor(
    private readonly pages: GuestPages,
    readonly firstPfn: number,
    readonly count: number,
  ) {
    this.bytes = pages.bytes(firstPfn * PAGE_SIZE, count * PAGE_SIZE);
    this.bytes.fill(0);
    this.pfns = Array.from({ length: count }, (_, i) => firstPfn + i);
  }

  static async share(device: GuestDevice, bytes: number): Promise<SharedPages> {
    const count = Math.ceil(bytes / PAGE_SIZE);
    const pfn = device.memory.allocate(count);
    const shared = new SharedPages(device.memory, pfn, count);
    try {
      shared.gpadl = await device.createGpadl(shared.pfns);
    } catch (error) {
      device.memory.free(pfn, count);
      throw error;
    }
    return shared;
  }

  /** Tears the GPADL down and gives the pages back, while the channel is still open. */
  async unshare(device: GuestDevice): Promise<void> {
    if (this.gpadl) await device.teardownGpadl(this.gpadl).catch(() => {});
    this.release();
  }

  /** Gives the pages back once closing the channel tore the GPADL down. */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.gpadl = 0;
    this.pages.free(this.firstPfn, this.count);
  }

  private released = false;
}

/** Fixed-size sections of the send buffer, handed out and back. */
export class SendSections {
  readonly count: number;
  private readonly free: Int32Array;
  private top: number;

  constructor(
    readonly shared: SharedPages,
    readonly sectionSize: number,
  ) {
    this.count = Math.floor(shared.bytes.length / sectionSize);
    this.free = new Int32Array(this.count);
    for (let i = 0; i < this.count; i++) this.free[i] = this.count - 1 - i;
    this.top = this.count;
  }

  get available(): number {
    return this.top;
  }

  allocate(): number {
    return this.top === 0 ? -1 : this.free[--this.top]!;
  }

  release(section: number): void {
    if (section >= 0 && section < this.count && this.top < this.count)
      this.free[this.top++] = section;
  }

  view(section: number): Uint8Array {
    const at = section * this.sectionSize;
    return this.shared.bytes.subarray(at, at + this.sectionSize);
  }
}

/** Page-aligned buffers in guest memory for GPA-direct sends, reused. */
export class BouncePool {
  private readonly free: number[] = [];
  readonly buffers: { readonly bytes: Uint8Array; readonly range: GpaRange }[] = [];

  /** Bytes each buffer holds (whole pages). */
  readonly bytesEach: number;

  constructor(pages: GuestPages, count: number, bytesEach: number) {
    const pagesEach = Math.ceil(bytesEach / PAGE_SIZE);
    this.bytesEach = pagesEach * PAGE_SIZE;
    for (let i = 0; i < count; i++) {
      const pfn = pages.allocate(pagesEach);
      const bytes = pages.bytes(pfn * PAGE_SIZE, pagesEach * PAGE_SIZE);
      this.buffers.push({
        bytes,
        range: {
          byteOffset: 0,
          byteCount: 0,
          pfns: Array.from({ length: pagesEach }, (_, k) => pfn + k),
        },
      });
      this.free.push(i);
    }
    this.pagesEach = pagesEach;
    this.pages = pages;
  }

  private readonly pagesEach: number;
  private readonly pages: GuestPages;

  get available(): number {
    return this.free.length;
  }

  allocate(): number {
    return this.free.pop() ?? -1;
  }

  release(index: number): void {
    if (index >= 0 && index < this.buffers.length && !this.free.includes(index))
      this.free.push(index);
  }

  /** The one GPA range of a buffer's first `length` bytes. */
  range(index: number, length: number): GpaRange {
    const b = this.buffers[index]!;
    const pages = Math.ceil(length / PAGE_SIZE);
    return { byteOffset: 0, byteCount: length, pfns: (b.range.pfns as number[]).slice(0, pages) };
  }

  /** Gives every page back (after the host is done with them). */
  close(): void {
    for (const b of this.buffers) this.pages.free(b.range.pfns[0]!, this.pagesEach);
    this.buffers.length = 0;
    this.free.length = 0;
  }
}
