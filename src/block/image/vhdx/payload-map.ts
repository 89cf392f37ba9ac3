import { type BlockSpan, blockSpans } from '../../block-spans.ts';
import { type Bat, payloadEntryIndex } from './bat.ts';
import { PAYLOAD_BLOCK_FULLY_PRESENT } from './format.ts';

/** Bytes of a request that lie one after another in the file, in fully present blocks. */
export interface FileRun {
  readonly kind: 'run';
  readonly fileOffset: number;
  /** Offset of the run within the request. */
  readonly at: number;
  readonly length: number;
  readonly virtualOffset: number;
}

/** A piece of a request in a block that is not fully present. */
export interface OtherBlock {
  readonly kind: 'block';
  readonly span: BlockSpan;
  /** The block's payload BAT entry and its state when the piece was reached. */
  readonly index: number;
  readonly state: number;
}

/**
 * Maps a request onto the file, in the request's order: pieces in fully
 * present blocks that follow each other in the file are merged into one run
 * (one file call for the lot); every other piece comes with its BAT entry
 * for the caller to handle. A run is yielded as soon as it ends.
 */
export function* mapPayload(
  bat: Bat,
  offset: number,
  length: number,
): Generator<FileRun | OtherBlock> {
  const g = bat.geometry;
  let run: { fileOffset: number; at: number; length: number; virtualOffset: number } | null = null;
  for (const s of blockSpans(g.blockSize, offset, length)) {
    const index = payloadEntryIndex(g, s.block);
    const state = bat.state(index);
    if (state === PAYLOAD_BLOCK_FULLY_PRESENT) {
      const at = bat.fileOffset(index) + s.inBlock;
      if (run && run.fileOffset + run.length === at) run.length += s.length;
      else {
        if (run) yield { kind: 'run', ...run };
        run = { fileOffset: at, at: s.at, length: s.length, virtualOffset: s.virtualOffset };
      }
      continue;
    }
    if (run) yield { kind: 'run', ...run };
    run = null;
    yield { kind: 'block', span: s, index, state };
  }
  if (run) yield { kind: 'run', ...run };
}
