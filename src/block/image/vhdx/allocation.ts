import type { Extent } from '../../extents.ts';
import type { ImageFile } from '../image-file.ts';
import { HEADER_SECTION_SIZE, MiB } from './format.ts';

const roundUp = (n: number, to: number): number => Math.ceil(n / to) * to;

/**
 * Where new blocks go ([MS-VHDX] 2.5: payload and sector bitmap blocks sit
 * at 1 MiB-aligned file offsets). Space inside the file that no structure
 * uses (found when the image is opened) is reused first; otherwise blocks
 * are appended at the 1 MiB-aligned end of the file. A block taken from the
 * inside of the file is not known to read zeros: `fresh` tells the caller
 * whether it must zero it.
 */
export class BlockAllocator {
  private readonly gaps: { start: number; end: number }[] = [];
  private fileEnd: number;

  constructor(used: readonly Extent[], fileSize: number) {
    const sorted = [...used].filter((e) => e.length > 0).sort((a, b) => a.start - b.start);
    let cursor = HEADER_SECTION_SIZE;
    let highest = fileSize;
    for (const e of sorted) {
      const gapEnd = Math.min(e.start, fileSize);
      if (gapEnd - roundUp(cursor, MiB) >= MiB)
        this.gaps.push({ start: roundUp(cursor, MiB), end: gapEnd });
      cursor = Math.max(cursor, e.start + e.length);
      highest = Math.max(highest, e.start + e.length);
    }
    const tailEnd = Math.floor(fileSize / MiB) * MiB;
    if (tailEnd - roundUp(cursor, MiB) >= MiB)
      this.gaps.push({ start: roundUp(cursor, MiB), end: tailEnd });
    this.fileEnd = roundUp(highest, MiB);
  }

  /** Reserves `size` bytes (a multiple of 1 MiB) and says where. */
  take(size: number): { offset: number; fresh: boolean } {
    for (let i = 0; i < this.gaps.length; i++) {
      const g = this.gaps[i]!;
      if (g.end - g.start >= size) {
        const offset = g.start;
        g.start += size;
        if (g.end - g.start < MiB) this.gaps.splice(i, 1);
        return { offset, fresh: false };
      }
    }
    const offset = this.fileEnd;
    this.fileEnd += size;
    return { offset, fresh: true };
  }

  /** The file length that holds every structure handed out so far. */
  get end(): number {
    return this.fileEnd;
  }

  /** Unused bytes inside the file that later blocks may take. */
  get reusableBytes(): number {
    return this.gaps.reduce((n, g) => n + (g.end - g.start), 0);
  }
}

/**
 * The file's space as the image grows: ranges a BlockAllocator hands out,
 * made ready to hold a new block (the file extended, or reused space zeroed),
 * and the file's length as far as extensions have completed.
 */
export class FileSpace {
  private readonly allocator: BlockAllocator;
  private grown: Promise<void> = Promise.resolve();
  private fileLength: number;

  constructor(
    private readonly file: ImageFile,
    used: readonly Extent[],
    fileSize: number,
    /** Keep the file's blocks allocated (a fixed disk): preallocate, never punch. */
    private readonly leaveBlocksAllocated: boolean,
  ) {
    this.allocator = new BlockAllocator(used, fileSize);
    this.fileLength = fileSize;
  }

  /** The file's length as far as extensions have completed. */
  get length(): number {
    return this.fileLength;
  }

  /** Reserves a 1 MiB-aligned range; it reads as zeros when this returns. */
  async allocate(size: number): Promise<number> {
    const { offset, fresh } = this.allocator.take(size);
    if (fresh) {
      await this.growTo(offset + size);
      if (this.leaveBlocksAllocated) await this.file.preallocate(offset, size);
    } else {
      await this.file.zeroFill(offset, size, !this.leaveBlocksAllocated);
    }
    return offset;
  }

  /** Extends the file to at least `length`; extensions run in order so the file never shrinks. */
  private growTo(length: number): Promise<void> {
    const next = this.grown.then(async () => {
      if (length > this.fileLength) {
        await this.file.truncate(length);
        this.fileLength = length;
      }
    });
    this.grown = next.catch(() => undefined);
    return next;
  }
}
