import { ImageFormatError } from '../../block-device.ts';
import type { ImageFile } from '../image-file.ts';
import { type Bat, bitmapEntryIndex } from './bat.ts';
import { LOG_SECTOR_SIZE, SB_BLOCK_PRESENT, SECTOR_BITMAP_BLOCK_SIZE } from './format.ts';

/**
 * The sector bitmap blocks of a differencing VHDX ([MS-VHDX] 2.5.1.2,
 * 3.2.1): one bit per logical sector, bit 0 of byte 0 first; 1 means the
 * sector is in this file, 0 that it comes from the parent. Each 1 MiB block
 * covers one chunk (chunkRatio payload blocks). Blocks are loaded on first
 * use and kept; changes are made here and reach the file through the log.
 */
export class SectorBitmaps {
  private readonly loaded = new Map<number, Promise<Uint8Array | null>>();
  private readonly byFileOffset = new Map<number, Uint8Array>();

  constructor(
    private readonly file: ImageFile,
    private readonly bat: Bat,
  ) {}

  /** The chunk's bitmap, or null when its sector bitmap block is not present. */
  get(chunk: number): Promise<Uint8Array | null> {
    let p = this.loaded.get(chunk);
    if (!p) {
      p = this.load(chunk);
      this.loaded.set(chunk, p);
      p.catch(() => this.loaded.delete(chunk));
    }
    return p;
  }

  /**
   * The bitmap a partially present block (payload BAT entry `payloadIndex`)
   * relies on; an ImageFormatError when its chunk has no bitmap block.
   */
  async forBlock(chunk: number, payloadIndex: number): Promise<Uint8Array> {
    const bits = await this.get(chunk);
    if (!bits) {
      throw new ImageFormatError(
        `VHDX BAT entry ${payloadIndex}`,
        `sector bitmap block ${chunk} is missing`,
      );
    }
    return bits;
  }

  private async load(chunk: number): Promise<Uint8Array | null> {
    const index = bitmapEntryIndex(this.bat.geometry, chunk);
    if (this.bat.state(index) !== SB_BLOCK_PRESENT) return null;
    const offset = this.bat.fileOffset(index);
    const bits = await this.file.readStructure(
      offset,
      SECTOR_BITMAP_BLOCK_SIZE,
      `VHDX sector bitmap block ${chunk}`,
    );
    this.byFileOffset.set(offset, bits);
    return bits;
  }

  /** Registers a newly allocated (all-zero) bitmap block for a chunk. */
  adopt(chunk: number, fileOffset: number): Uint8Array {
    const bits = new Uint8Array(SECTOR_BITMAP_BLOCK_SIZE);
    this.byFileOffset.set(fileOffset, bits);
    this.loaded.set(chunk, Promise.resolve(bits));
    return bits;
  }

  containsSector(fileOffset: number): boolean {
    const base = fileOffset - (fileOffset % SECTOR_BITMAP_BLOCK_SIZE);
    return this.byFileOffset.has(base);
  }

  sectorBytes(fileOffset: number): Uint8Array {
    const base = fileOffset - (fileOffset % SECTOR_BITMAP_BLOCK_SIZE);
    const bits = this.byFileOffset.get(base);
    if (!bits) throw new ImageFormatError('VHDX sector bitmap', `no bitmap block at ${base}`);
    const at = fileOffset - base;
    return bits.subarray(at, at + LOG_SECTOR_SIZE);
  }

  /** The file offset of a chunk's loaded bitmap block. */
  fileOffsetOf(chunk: number): number {
    return this.bat.fileOffset(bitmapEntryIndex(this.bat.geometry, chunk));
  }
}

export function bitIsSet(bits: Uint8Array, index: number): boolean {
  return ((bits[index >>> 3]! >>> (index & 7)) & 1) === 1;
}

/**
 * Sets bits [first, first+count); returns the 4 KiB-aligned byte offsets
 * (within the bitmap) of the sectors that changed.
 */
export function setBits(bits: Uint8Array, first: number, count: number): number[] {
  const changed = new Set<number>();
  for (let i = first; i < first + count; i++) {
    const byte = i >>> 3;
    const mask = 1 << (i & 7);
    if ((bits[byte]! & mask) === 0) {
      bits[byte] = bits[byte]! | mask;
      changed.add(byte - (byte % LOG_SECTOR_SIZE));
    }
  }
  return [...changed];
}

/** Splits [first, first+count) into runs of equal bits: [start, length, set]. */
export function bitRuns(
  bits: Uint8Array,
  first: number,
  count: number,
): [number, number, boolean][] {
  const runs: [number, number, boolean][] = [];
  let start = first;
  let value = bitIsSet(bits, first);
  for (let i = first + 1; i < first + count; i++) {
    const v = bitIsSet(bits, i);
    if (v !== value) {
      runs.push([start, i - start, value]);
      start = i;
      value = v;
    }
  }
  if (count > 0) runs.push([start, first + count - start, value]);
  return runs;
}
