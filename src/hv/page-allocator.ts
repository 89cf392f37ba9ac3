import { GuestMemoryError } from './guest-memory.ts';

/**
 * The guest's physical page allocator (what the guest kernel's buddy
 * allocator does for the VMBus driver): hands out runs of free pages from a
 * range of guest memory. First fit over a bitmap; contiguous runs are what
 * ring buffers and bounce buffers want. Lives in one worker (the guest's);
 * it is not shared.
 */
export class PageAllocator {
  private readonly used: Uint8Array;
  private freeCount: number;

  constructor(
    readonly firstPfn: number,
    readonly pageCount: number,
  ) {
    this.used = new Uint8Array(pageCount);
    this.freeCount = pageCount;
  }

  get freePages(): number {
    return this.freeCount;
  }

  /** Allocates `count` contiguous pages; returns the first PFN. */
  allocate(count: number): number {
    if (!Number.isInteger(count) || count <= 0) {
      throw new GuestMemoryError(`cannot allocate ${count} pages`);
    }
    let run = 0;
    for (let i = 0; i < this.pageCount; i++) {
      run = this.used[i] ? 0 : run + 1;
      if (run === count) {
        const start = i - count + 1;
        this.used.fill(1, start, i + 1);
        this.freeCount -= count;
        return this.firstPfn + start;
      }
    }
    throw new GuestMemoryError(
      `out of guest memory: no run of ${count} free pages (${this.freeCount} free in all)`,
    );
  }

  /** Allocates `count` pages that need not be contiguous (e.g. to exercise scattered GPADLs). */
  allocateScattered(count: number): number[] {
    if (count > this.freeCount) {
      throw new GuestMemoryError(
        `out of guest memory: ${count} pages wanted, ${this.freeCount} free`,
      );
    }
    const out: number[] = [];
    for (let i = 0; i < this.pageCount && out.length < count; i++) {
      if (!this.used[i]) {
        this.used[i] = 1;
        out.push(this.firstPfn + i);
      }
    }
    this.freeCount -= out.length;
    return out;
  }

  free(pfn: number, count = 1): void {
    const start = pfn - this.firstPfn;
    if (start < 0 || start + count > this.pageCount) {
      throw new GuestMemoryError(
        `freeing pages 0x${pfn.toString(16)}+${count} outside the allocator`,
      );
    }
    for (let i = start; i < start + count; i++) {
      if (!this.used[i])
        throw new GuestMemoryError(`page 0x${(this.firstPfn + i).toString(16)} freed twice`);
      this.used[i] = 0;
    }
    this.freeCount += count;
  }
}
