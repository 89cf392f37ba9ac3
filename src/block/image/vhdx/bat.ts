import {
  LOG_SECTOR_SIZE,
  MiB,
  PAYLOAD_BLOCK_FULLY_PRESENT,
  PAYLOAD_BLOCK_NOT_PRESENT,
  PAYLOAD_BLOCK_PARTIALLY_PRESENT,
  PAYLOAD_BLOCK_UNDEFINED,
  PAYLOAD_BLOCK_UNMAPPED,
  PAYLOAD_BLOCK_UNMAPPED_V095,
  PAYLOAD_BLOCK_ZERO,
  SECTORS_PER_BITMAP_BLOCK,
} from './format.ts';

/**
 * The shape of the BAT ([MS-VHDX] 2.5): payload block entries interleaved
 * with one sector bitmap entry after every `chunkRatio` payload entries,
 * where chunkRatio = 2^23 * logicalSectorSize / blockSize (the number of
 * payload blocks one 1 MiB sector bitmap block describes).
 */
export interface BatGeometry {
  readonly blockSize: number;
  readonly logicalSectorSize: number;
  readonly virtualDiskSize: number;
  readonly hasParent: boolean;
  readonly chunkRatio: number;
  readonly payloadBlocks: number;
  readonly bitmapBlocks: number;
  /** Entries the BAT must hold (2.5: fewer for a disk without parent). */
  readonly entryCount: number;
}

export function batGeometry(
  virtualDiskSize: number,
  blockSize: number,
  logicalSectorSize: number,
  hasParent: boolean,
): BatGeometry {
  const chunkRatio = (SECTORS_PER_BITMAP_BLOCK * logicalSectorSize) / blockSize;
  const payloadBlocks = Math.ceil(virtualDiskSize / blockSize);
  const bitmapBlocks = Math.ceil(payloadBlocks / chunkRatio);
  const entryCount = hasParent
    ? bitmapBlocks * (chunkRatio + 1)
    : payloadBlocks + Math.floor((payloadBlocks - 1) / chunkRatio);
  return {
    blockSize,
    logicalSectorSize,
    virtualDiskSize,
    hasParent,
    chunkRatio,
    payloadBlocks,
    bitmapBlocks,
    entryCount,
  };
}

export function payloadEntryIndex(g: BatGeometry, block: number): number {
  return block + Math.floor(block / g.chunkRatio);
}

export function bitmapEntryIndex(g: BatGeometry, chunk: number): number {
  return chunk * (g.chunkRatio + 1) + g.chunkRatio;
}

/** States a payload entry may hold; PARTIALLY_PRESENT only in a differencing disk. */
export function isValidPayloadState(state: number, hasParent: boolean): boolean {
  switch (state) {
    case PAYLOAD_BLOCK_NOT_PRESENT:
    case PAYLOAD_BLOCK_UNDEFINED:
    case PAYLOAD_BLOCK_ZERO:
    case PAYLOAD_BLOCK_UNMAPPED:
    case PAYLOAD_BLOCK_UNMAPPED_V095:
    case PAYLOAD_BLOCK_FULLY_PRESENT:
      return true;
    case PAYLOAD_BLOCK_PARTIALLY_PRESENT:
      return hasParent;
    default:
      return false;
  }
}

/** True for the states whose FileOffsetMB points at payload in this file. */
export function hasPayload(state: number): boolean {
  return state === PAYLOAD_BLOCK_FULLY_PRESENT || state === PAYLOAD_BLOCK_PARTIALLY_PRESENT;
}

/**
 * The BAT held in memory as the bytes of its region (so that changed 4 KiB
 * sectors can go to the log as they are). An entry is a little-endian u64:
 * state in bits 0-2, FileOffsetMB in bits 20-63.
 */
export class Bat {
  private readonly view: DataView;

  constructor(
    readonly geometry: BatGeometry,
    /** The region's bytes from its start, a whole number of 4 KiB sectors. */
    readonly bytes: Uint8Array,
    /** File offset of the BAT region. */
    readonly regionOffset: number,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  state(index: number): number {
    return this.view.getUint32(index * 8, true) & 7;
  }

  /** FileOffsetMB in 1 MiB units (may exceed the safe range in a hostile file; callers validate). */
  offsetMB(index: number): number {
    const lo = this.view.getUint32(index * 8, true);
    const hi = this.view.getUint32(index * 8 + 4, true);
    return hi * 4096 + (lo >>> 20);
  }

  fileOffset(index: number): number {
    return this.offsetMB(index) * MiB;
  }

  /** Bits 3-19 must be zero. */
  reservedBits(index: number): number {
    return (this.view.getUint32(index * 8, true) >>> 3) & 0x1ffff;
  }

  /**
   * Sets an entry and returns the file offset of the 4 KiB BAT sector that
   * changed (for the log). States without payload get FileOffsetMB 0 (a
   * sector bitmap entry that is present uses the same value as FULLY_PRESENT).
   */
  set(index: number, state: number, fileOffset: number): number {
    const mb = hasPayload(state) ? fileOffset / MiB : 0;
    this.view.setUint32(index * 8, ((mb % 4096) << 20) | (state & 7), true);
    this.view.setUint32(index * 8 + 4, Math.floor(mb / 4096), true);
    return this.sectorOf(index);
  }

  /** The file offset of the 4 KiB sector holding entry `index`. */
  sectorOf(index: number): number {
    return this.regionOffset + Math.floor((index * 8) / LOG_SECTOR_SIZE) * LOG_SECTOR_SIZE;
  }

  /** The live bytes of the BAT sector at a file offset (for the log's snapshot). */
  sectorBytes(fileOffset: number): Uint8Array {
    const at = fileOffset - this.regionOffset;
    return this.bytes.subarray(at, at + LOG_SECTOR_SIZE);
  }

  containsSector(fileOffset: number): boolean {
    return fileOffset >= this.regionOffset && fileOffset < this.regionOffset + this.bytes.length;
  }
}
