import type { BlockSpan } from '../../block-spans.ts';
import { KeyedLock } from '../../concurrency.ts';
import { atVirtual } from '../../request-errors.ts';
import { sliceVectors } from '../../vectors.ts';
import type { FileSpace } from './allocation.ts';
import { bitmapEntryIndex, payloadEntryIndex } from './bat.ts';
import {
  PAYLOAD_BLOCK_FULLY_PRESENT,
  PAYLOAD_BLOCK_NOT_PRESENT,
  PAYLOAD_BLOCK_PARTIALLY_PRESENT,
  SB_BLOCK_PRESENT,
  SECTOR_BITMAP_BLOCK_SIZE,
  SECTORS_PER_BITMAP_BLOCK,
} from './format.ts';
import type { Journal } from './journal.ts';
import { mapPayload } from './payload-map.ts';
import type { PayloadSource } from './payload-reader.ts';
import { setBits } from './sector-bitmap.ts';

/**
 * The write path of an open VHDX. Data goes in place into blocks that have
 * payload; a block without is allocated on its first write (and, in a
 * differencing disk, its chunk's sector bitmap block too) and its BAT entry
 * set once the data is written. A differencing disk marks the written
 * sectors present in the bitmap. BAT and bitmap changes are marked dirty in
 * the journal, which makes them durable through the log.
 */
export class PayloadWriter {
  private readonly locks = new KeyedLock<string>();

  constructor(
    private readonly src: PayloadSource,
    private readonly journal: Journal,
    private readonly space: FileSpace,
  ) {}

  /** Writes virtual bytes [offset, offset+length) from sources. */
  async writeRange(offset: number, length: number, sources: readonly Uint8Array[]): Promise<void> {
    const tasks: Promise<void>[] = [];
    for (const piece of mapPayload(this.src.bat, offset, length)) {
      if (piece.kind === 'run') {
        tasks.push(
          this.src.file
            .writev(piece.fileOffset, sliceVectors(sources, piece.at, piece.length))
            .catch((e) => atVirtual(e, piece.virtualOffset)),
        );
        continue;
      }
      const s = piece.span;
      tasks.push(
        this.writeSpan(s, sliceVectors(sources, s.at, s.length)).catch((e) =>
          atVirtual(e, s.virtualOffset),
        ),
      );
    }
    await Promise.all(tasks);
  }

  /** Runs fn holding the lock of a payload block (its state does not change meanwhile). */
  lockBlock<T>(block: number, fn: () => Promise<T>): Promise<T> {
    return this.locks.run(`block ${block}`, fn);
  }

  /** Writes a piece into one block, allocating the block (and its sector bitmap) if needed. */
  async writeSpan(s: BlockSpan, data: readonly Uint8Array[]): Promise<void> {
    const { bat, file } = this.src;
    const g = bat.geometry;
    const index = payloadEntryIndex(g, s.block);
    const chunk = Math.floor(s.block / g.chunkRatio);
    const inPlace = async (): Promise<void> => {
      const at = bat.fileOffset(index) + s.inBlock;
      await file.writev(at, data).catch((e) => atVirtual(e, s.virtualOffset));
    };
    const state = bat.state(index);
    if (state === PAYLOAD_BLOCK_FULLY_PRESENT) return inPlace();
    if (state === PAYLOAD_BLOCK_PARTIALLY_PRESENT) {
      const bits = await this.src.bitmaps!.forBlock(chunk, index);
      await inPlace();
      if (this.markPresent(s, chunk, bits)) await this.journal.commit();
      return;
    }
    let commit = false;
    await this.lockBlock(s.block, async () => {
      const now = bat.state(index);
      if (now === PAYLOAD_BLOCK_FULLY_PRESENT) return inPlace();
      if (now === PAYLOAD_BLOCK_PARTIALLY_PRESENT) {
        const bits = await this.src.bitmaps!.forBlock(chunk, index);
        await inPlace();
        commit = this.markPresent(s, chunk, bits);
        return;
      }
      // A not-present block of a differencing disk reads from the parent; on
      // its first write it becomes partially present, tracked per sector.
      const fromParent = this.src.parent !== null && now === PAYLOAD_BLOCK_NOT_PRESENT;
      const bits = fromParent ? await this.ensureBitmap(chunk) : null;
      const blockOffset = await this.space.allocate(g.blockSize);
      await file.writev(blockOffset + s.inBlock, data).catch((e) => atVirtual(e, s.virtualOffset));
      // The entry and the bits change together, once the data is written.
      if (bits) {
        this.journal.markDirty(bat.set(index, PAYLOAD_BLOCK_PARTIALLY_PRESENT, blockOffset));
        this.markPresent(s, chunk, bits);
      } else {
        this.journal.markDirty(bat.set(index, PAYLOAD_BLOCK_FULLY_PRESENT, blockOffset));
      }
      commit = true;
    });
    if (commit) await this.journal.commit();
  }

  /** Sets the sector bits of a span in its chunk's bitmap; true when any changed. */
  markPresent(s: BlockSpan, chunk: number, bits: Uint8Array): boolean {
    const sector = this.src.bat.geometry.logicalSectorSize;
    const first = Math.floor(s.virtualOffset / sector) - chunk * SECTORS_PER_BITMAP_BLOCK;
    const base = this.src.bitmaps!.fileOffsetOf(chunk);
    let changed = false;
    for (const byteOffset of setBits(bits, first, s.length / sector)) {
      this.journal.markDirty(base + byteOffset);
      changed = true;
    }
    return changed;
  }

  /** A chunk's sector bitmap, allocating an all-zero bitmap block when it has none. */
  private ensureBitmap(chunk: number): Promise<Uint8Array> {
    const { bat, bitmaps } = this.src;
    return this.locks.run(`bitmap ${chunk}`, async () => {
      const existing = await bitmaps!.get(chunk);
      if (existing) return existing;
      const offset = await this.space.allocate(SECTOR_BITMAP_BLOCK_SIZE);
      const bits = bitmaps!.adopt(chunk, offset);
      this.journal.markDirty(
        bat.set(bitmapEntryIndex(bat.geometry, chunk), SB_BLOCK_PRESENT, offset),
      );
      return bits;
    });
  }
}
