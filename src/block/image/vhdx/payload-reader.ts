import type { BlockDevice } from '../../block-device.ts';
import type { BlockSpan } from '../../block-spans.ts';
import { atVirtual } from '../../request-errors.ts';
import { sliceVectors } from '../../vectors.ts';
import type { ImageFile } from '../image-file.ts';
import type { Bat } from './bat.ts';
import {
  PAYLOAD_BLOCK_NOT_PRESENT,
  PAYLOAD_BLOCK_PARTIALLY_PRESENT,
  SECTORS_PER_BITMAP_BLOCK,
} from './format.ts';
import { mapPayload } from './payload-map.ts';
import { bitRuns, type SectorBitmaps } from './sector-bitmap.ts';

/** What the payload of an open VHDX is read from. */
export interface PayloadSource {
  readonly file: ImageFile;
  readonly bat: Bat;
  /** The parent of a differencing disk. */
  readonly parent: BlockDevice | null;
  /** The sector bitmaps of a differencing disk. */
  readonly bitmaps: SectorBitmaps | null;
}

/**
 * Reads virtual bytes [offset, offset+length) into targets by block state
 * ([MS-VHDX] 2.5.1.1): fully present blocks from the file (neighbours in the
 * file with one call), partially present ones sector run by sector run from
 * the file or the parent as the sector bitmap says, not-present ones of a
 * differencing disk from the parent; every other state reads as zeros.
 */
export async function readPayload(
  src: PayloadSource,
  offset: number,
  length: number,
  targets: readonly Uint8Array[],
): Promise<void> {
  const tasks: Promise<void>[] = [];
  for (const piece of mapPayload(src.bat, offset, length)) {
    if (piece.kind === 'run') {
      tasks.push(
        src.file
          .readv(piece.fileOffset, sliceVectors(targets, piece.at, piece.length))
          .catch((e) => atVirtual(e, piece.virtualOffset)),
      );
      continue;
    }
    const { span: s, index, state } = piece;
    const slice = sliceVectors(targets, s.at, s.length);
    if (state === PAYLOAD_BLOCK_PARTIALLY_PRESENT) {
      tasks.push(readPartial(src, index, s, slice));
    } else if (state === PAYLOAD_BLOCK_NOT_PRESENT && src.parent) {
      tasks.push(readParent(src.parent, s.virtualOffset, s.length, slice));
    } else {
      for (const t of slice) t.fill(0);
    }
  }
  await Promise.all(tasks);
}

/** Reads from the parent; what lies past the parent's end (a smaller parent) reads as zeros. */
async function readParent(
  parent: BlockDevice,
  offset: number,
  length: number,
  targets: readonly Uint8Array[],
): Promise<void> {
  const inside = Math.max(0, Math.min(length, parent.size - offset));
  if (inside > 0) await parent.readv(offset, sliceVectors(targets, 0, inside));
  if (inside < length) for (const t of sliceVectors(targets, inside, length - inside)) t.fill(0);
}

/** Reads a partially present block sector run by sector run: child or parent per the bitmap. */
async function readPartial(
  src: PayloadSource,
  index: number,
  s: BlockSpan,
  targets: readonly Uint8Array[],
): Promise<void> {
  const g = src.bat.geometry;
  const sector = g.logicalSectorSize;
  const chunk = Math.floor(s.block / g.chunkRatio);
  const bits = await src.bitmaps!.forBlock(chunk, index);
  const firstSector = Math.floor(s.virtualOffset / sector);
  const endSector = Math.ceil((s.virtualOffset + s.length) / sector);
  const base = chunk * SECTORS_PER_BITMAP_BLOCK;
  const blockFile = src.bat.fileOffset(index);
  const blockStart = s.block * g.blockSize;
  const tasks: Promise<void>[] = [];
  for (const [first, count, present] of bitRuns(
    bits,
    firstSector - base,
    endSector - firstSector,
  )) {
    const from = Math.max(s.virtualOffset, (first + base) * sector);
    const to = Math.min(s.virtualOffset + s.length, (first + base + count) * sector);
    const slice = sliceVectors(targets, from - s.virtualOffset, to - from);
    if (present) {
      tasks.push(
        src.file.readv(blockFile + (from - blockStart), slice).catch((e) => atVirtual(e, from)),
      );
    } else {
      tasks.push(readParent(src.parent!, from, to - from, slice));
    }
  }
  await Promise.all(tasks);
}
