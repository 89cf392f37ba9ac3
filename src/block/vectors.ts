/**
 * Scatter/gather lists: a request's data as an ordered list of buffers (a
 * guest page list as it is). Backends split a request at block boundaries
 * and hand each piece to the file as views into the caller's buffers,
 * never copies.
 */

export function totalLength(buffers: readonly Uint8Array[]): number {
  let n = 0;
  for (const b of buffers) n += b.length;
  return n;
}

/** Views of bytes [start, start+length) of the concatenation of buffers. */
export function sliceVectors(
  buffers: readonly Uint8Array[],
  start: number,
  length: number,
): Uint8Array[] {
  const out: Uint8Array[] = [];
  let skip = start;
  let want = length;
  for (const b of buffers) {
    if (want === 0) break;
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    const n = Math.min(b.length - skip, want);
    out.push(b.subarray(skip, skip + n));
    want -= n;
    skip = 0;
  }
  return out;
}

/** Fills bytes [start, start+length) of the concatenation with zeros. */
export function zeroVectors(buffers: readonly Uint8Array[], start: number, length: number): void {
  for (const b of sliceVectors(buffers, start, length)) b.fill(0);
}

/** True when every byte is zero. */
export function isAllZero(bytes: Uint8Array): boolean {
  // Compare four bytes at a time where the view is aligned for it.
  const aligned = bytes.byteOffset % 4 === 0 ? Math.floor(bytes.length / 4) : 0;
  if (aligned > 0) {
    const words = new Uint32Array(bytes.buffer, bytes.byteOffset, aligned);
    for (let i = 0; i < words.length; i++) if (words[i] !== 0) return false;
  }
  for (let i = aligned * 4; i < bytes.length; i++) if (bytes[i] !== 0) return false;
  return true;
}
