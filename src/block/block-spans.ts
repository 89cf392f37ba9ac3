/**
 * Splitting a request at block boundaries. Image formats map each block of
 * the virtual disk on its own (VHD and VHDX BAT entries), so a request is
 * handled as pieces that each lie inside one block.
 */

/** One piece of a request, inside one block. */
export interface BlockSpan {
  readonly block: number;
  /** Offset of the piece within its block. */
  readonly inBlock: number;
  readonly virtualOffset: number;
  readonly length: number;
  /** Offset of the piece within the request. */
  readonly at: number;
}

/** The pieces of [offset, offset+length) in blocks of `blockSize` bytes, in order. */
export function* blockSpans(
  blockSize: number,
  offset: number,
  length: number,
): Generator<BlockSpan> {
  let done = 0;
  while (done < length) {
    const pos = offset + done;
    const block = Math.floor(pos / blockSize);
    const inBlock = pos - block * blockSize;
    const n = Math.min(blockSize - inBlock, length - done);
    yield { block, inBlock, virtualOffset: pos, length: n, at: done };
    done += n;
  }
}
