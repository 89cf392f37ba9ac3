/**
 * The guest's I/O buffers for storvsc: pages of guest memory, set aside once
 * when the controller starts, handed out in 64 KiB chunks to requests while
 * they are in flight. A request's data lives in these pages; the GPA-direct
 * page list names them, and the host reads or writes them in place.
 *
 * Chunks are contiguous runs of 16 pages, so a request of up to 64 KiB is
 * one contiguous buffer and a 1 MiB request is at most 16 runs. A request
 * that finds too few free chunks waits its turn (first come, first served,
 * so a large request is not starved by small ones).
 */

import { type GuestPages, PAGE_SIZE } from '../../../vmbus/device.ts';
import type { GpaRange } from '../../../vmbus/queue.ts';

export const CHUNK_PAGES = 16;
export const CHUNK_BYTES = CHUNK_PAGES * PAGE_SIZE;

/** A buffer of `length` bytes over whole chunks, starting at a page boundary. */
export class GuestBuffer implements GpaRange {
  byteCount = 0;
  readonly byteOffset = 0;
  /** PFNs of the pages in use, in order (a view sized to the buffer). */
  pfns: Float64Array;
  readonly chunkIndex: Int32Array;
  chunkCount = 0;
  private readonly allPfns: Float64Array;

  constructor(
    private readonly pool: GuestBufferPool,
    maxChunks: number,
  ) {
    this.chunkIndex = new Int32Array(maxChunks);
    this.allPfns = new Float64Array(maxChunks * CHUNK_PAGES);
    this.pfns = this.allPfns.subarray(0, 0);
  }

  get length(): number {
    return this.byteCount;
  }

  /** @internal */
  assign(length: number): void {
    this.byteCount = length;
    const pages = Math.ceil(length / PAGE_SIZE);
    for (let c = 0; c < this.chunkCount; c++) {
      const first = this.pool.chunkPfn(this.chunkIndex[c]!);
      for (let p = 0; p < CHUNK_PAGES; p++) this.allPfns[c * CHUNK_PAGES + p] = first + p;
    }
    this.pfns = this.allPfns.subarray(0, pages);
  }

  /** Copies `source` into the buffer at byte `at`. */
  copyIn(source: Uint8Array, at = 0): void {
    let done = 0;
    while (done < source.length) {
      const position = at + done;
      const c = Math.floor(position / CHUNK_BYTES);
      const within = position - c * CHUNK_BYTES;
      const n = Math.min(CHUNK_BYTES - within, source.length - done);
      this.pool.chunkView(this.chunkIndex[c]!).set(source.subarray(done, done + n), within);
      done += n;
    }
  }

  /** Copies `target.length` bytes from byte `at` of the buffer into `target`. */
  copyOut(target: Uint8Array, at = 0): void {
    let done = 0;
    while (done < target.length) {
      const position = at + done;
      const c = Math.floor(position / CHUNK_BYTES);
      const within = position - c * CHUNK_BYTES;
      const n = Math.min(CHUNK_BYTES - within, target.length - done);
      target.set(this.pool.chunkView(this.chunkIndex[c]!).subarray(within, within + n), done);
      done += n;
    }
  }

  /** Returns the chunks to the pool. */
  release(): void {
    this.pool.release(this);
  }
}

interface Waiter {
  readonly bytes: number;
  readonly resolve: (buffer: GuestBuffer) => void;
  readonly reject: (error: Error) => void;
}

export class GuestBufferPool {
  readonly chunkTotal: number;
  readonly maxBytes: number;
  private readonly chunkFirstPfn: number[] = [];
  private readonly views: Uint8Array[] = [];
  private readonly free: number[] = [];
  private readonly spare: GuestBuffer[] = [];
  private readonly waiters: Waiter[] = [];
  private readonly runs: { pfn: number; pages: number }[] = [];
  private closed = false;

  /**
   * Sets aside `totalBytes` (rounded up to whole chunks) of guest memory.
   * `maxBytes` is the largest single buffer that will be asked for.
   */
  constructor(
    private readonly pages: GuestPages,
    totalBytes: number,
    maxBytes: number,
  ) {
    const chunks = Math.max(Math.ceil(totalBytes / CHUNK_BYTES), Math.ceil(maxBytes / CHUNK_BYTES));
    this.chunkTotal = chunks;
    this.maxBytes = maxBytes;
    // One run when memory allows, else chunk by chunk.
    try {
      const pfn = pages.allocate(chunks * CHUNK_PAGES);
      this.runs.push({ pfn, pages: chunks * CHUNK_PAGES });
      for (let c = 0; c < chunks; c++) this.chunkFirstPfn.push(pfn + c * CHUNK_PAGES);
    } catch {
      try {
        for (let c = 0; c < chunks; c++) {
          const pfn = pages.allocate(CHUNK_PAGES);
          this.runs.push({ pfn, pages: CHUNK_PAGES });
          this.chunkFirstPfn.push(pfn);
        }
      } catch (error) {
        this.dispose();
        throw new Error(
          `storvsc: cannot set aside ${chunks * CHUNK_BYTES} bytes of guest memory for I/O buffers: ${(error as Error).message}`,
        );
      }
    }
    for (let c = 0; c < chunks; c++) {
      this.views.push(pages.bytes(this.chunkFirstPfn[c]! * PAGE_SIZE, CHUNK_BYTES));
      this.free.push(chunks - 1 - c);
    }
  }

  get freeChunks(): number {
    return this.free.length;
  }

  /** @internal */
  chunkPfn(index: number): number {
    return this.chunkFirstPfn[index]!;
  }

  /** @internal */
  chunkView(index: number): Uint8Array {
    return this.views[index]!;
  }

  /** A buffer of `bytes` (1..maxBytes); waits while the pool is short. */
  acquire(bytes: number): Promise<GuestBuffer> | GuestBuffer {
    if (!Number.isInteger(bytes) || bytes <= 0 || bytes > this.maxBytes) {
      return Promise.reject(
        new RangeError(`storvsc buffer of ${bytes} bytes is outside 1..${this.maxBytes}`),
      );
    }
    if (this.closed) return Promise.reject(new Error('storvsc I/O buffers are released'));
    if (this.waiters.length === 0) {
      const buffer = this.take(bytes);
      if (buffer) return buffer;
    }
    return new Promise<GuestBuffer>((resolve, reject) => {
      this.waiters.push({ bytes, resolve, reject });
    });
  }

  private take(bytes: number): GuestBuffer | undefined {
    const need = Math.ceil(bytes / CHUNK_BYTES);
    if (need > this.free.length) return undefined;
    const buffer =
      this.spare.pop() ?? new GuestBuffer(this, Math.ceil(this.maxBytes / CHUNK_BYTES));
    for (let i = 0; i < need; i++) buffer.chunkIndex[i] = this.free.pop()!;
    buffer.chunkCount = need;
    buffer.assign(bytes);
    return buffer;
  }

  /** @internal */
  release(buffer: GuestBuffer): void {
    for (let i = buffer.chunkCount - 1; i >= 0; i--) this.free.push(buffer.chunkIndex[i]!);
    buffer.chunkCount = 0;
    buffer.byteCount = 0;
    this.spare.push(buffer);
    while (this.waiters.length > 0) {
      const head = this.waiters[0]!;
      const granted = this.take(head.bytes);
      if (!granted) break;
      this.waiters.shift();
      head.resolve(granted);
    }
  }

  /**
   * Fails the waiting requests and, when `giveBack` (nothing can still be
   * using the pages), returns the pages to the guest's allocator.
   */
  close(giveBack: boolean): void {
    this.closed = true;
    for (const w of this.waiters.splice(0)) w.reject(new Error('storvsc controller removed'));
    if (giveBack) this.dispose();
  }

  private dispose(): void {
    for (const run of this.runs.splice(0)) this.pages.free(run.pfn, run.pages);
  }
}
