import type { Extent } from '../extents.ts';
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
