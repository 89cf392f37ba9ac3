import { type BlockSpan, blockSpans } from '../../block-spans.ts';
import { atVirtual } from '../../request-errors.ts';
import { hasPayload, payloadEntryIndex } from './bat.ts';
import {
  MiB,
  PAYLOAD_BLOCK_FULLY_PRESENT,
  PAYLOAD_BLOCK_NOT_PRESENT,
  PAYLOAD_BLOCK_PARTIALLY_PRESENT,
  PAYLOAD_BLOCK_UNMAPPED,
  PAYLOAD_BLOCK_ZERO,
} from './format.ts';
import type { Journal } from './journal.ts';
import type { PayloadSource } from './payload-reader.ts';
import type { PayloadWriter } from './payload-writer.ts';

const ZEROS = new Uint8Array(MiB);

/** What zeroing changes in an open VHDX. */
export interface ZeroTarget extends PayloadSource {
  readonly journal: Journal;
  readonly writer: PayloadWriter;
  /** The file keeps its blocks allocated (a fixed disk). */
  readonly leaveBlocksAllocated: boolean;
}

/** discard, write-zeroes that may unmap, and write-zeroes that may not. */
export type ZeroMode = 'discard' | 'unmap' | 'zero';

/**
 * Zeroes virtual bytes [offset, offset+length). Whole blocks are
 * deallocated (state UNMAPPED for a discard, ZERO for write-zeroes that may
 * unmap) unless the file keeps its blocks allocated (a fixed disk); their
 * space is punched out of the file once the new BAT is durable. Parts of
 * blocks are zeroed in place.
 */
export async function zeroPayload(
  t: ZeroTarget,
  offset: number,
  length: number,
  mode: ZeroMode,
): Promise<void> {
  const { bat, parent } = t;
  const g = bat.geometry;
  const keep = t.leaveBlocksAllocated || mode === 'zero';
  const freed: number[] = [];
  const tasks: Promise<void>[] = [];
  for (const s of blockSpans(g.blockSize, offset, length)) {
    const index = payloadEntryIndex(g, s.block);
    const used = Math.min(g.blockSize, g.virtualDiskSize - s.block * g.blockSize);
    const whole = s.inBlock === 0 && s.length === used;
    const state = bat.state(index);
    if (whole && (!keep || (!hasPayload(state) && parent))) {
      if (state === PAYLOAD_BLOCK_NOT_PRESENT && !parent) continue;
      tasks.push(
        t.writer.lockBlock(s.block, async () => {
          const now = bat.state(index);
          if (hasPayload(now)) freed.push(bat.fileOffset(index));
          const next = mode === 'discard' ? PAYLOAD_BLOCK_UNMAPPED : PAYLOAD_BLOCK_ZERO;
          if (now !== next) t.journal.markDirty(bat.set(index, next, 0));
        }),
      );
      continue;
    }
    const deallocate = mode !== 'zero' && !t.leaveBlocksAllocated;
    tasks.push(zeroSpan(t, s, index, deallocate).catch((e) => atVirtual(e, s.virtualOffset)));
  }
  await Promise.all(tasks);
  await t.journal.commit();
  await Promise.all(freed.map((o) => t.file.punchHole(o, g.blockSize)));
}

async function zeroSpan(
  t: ZeroTarget,
  s: BlockSpan,
  index: number,
  deallocate: boolean,
): Promise<void> {
  const state = t.bat.state(index);
  if (state === PAYLOAD_BLOCK_FULLY_PRESENT || state === PAYLOAD_BLOCK_PARTIALLY_PRESENT) {
    const at = t.bat.fileOffset(index) + s.inBlock;
    if (state === PAYLOAD_BLOCK_FULLY_PRESENT) {
      await t.file.zeroFill(at, s.length, deallocate).catch((e) => atVirtual(e, s.virtualOffset));
      return;
    }
    const chunk = Math.floor(s.block / t.bat.geometry.chunkRatio);
    const bits = await t.bitmaps!.forBlock(chunk, index);
    await t.file.zeroFill(at, s.length, deallocate).catch((e) => atVirtual(e, s.virtualOffset));
    if (t.writer.markPresent(s, chunk, bits)) await t.journal.commit();
    return;
  }
  if (state === PAYLOAD_BLOCK_NOT_PRESENT && t.parent) {
    // The parent's data shows through here: write real zeros into the child.
    const pieces: Uint8Array[] = [];
    for (let n = s.length; n > 0; n -= ZEROS.length)
      pieces.push(ZEROS.subarray(0, Math.min(n, ZEROS.length)));
    await t.writer.writeSpan(s, pieces);
  }
  // Other states already read as zeros.
}
