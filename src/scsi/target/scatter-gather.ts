/**
 * The initiator's data buffer is a scatter/gather list of views into guest
 * memory. These functions move bytes to and from it without ever touching
 * anything outside the views, and cut views out of it for the block device so
 * READ and WRITE data goes straight between the backend and guest memory.
 */

export function sgLength(buffers: readonly Uint8Array[]): number {
  let total = 0;
  for (const b of buffers) total += b.length;
  return total;
}

/**
 * Views covering exactly the first `length` bytes of the list (empty views
 * skipped). The caller has checked that the list holds at least that much.
 */
export function sgPrefix(buffers: readonly Uint8Array[], length: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let left = length;
  for (const b of buffers) {
    if (left <= 0) break;
    if (b.length === 0) continue;
    const n = Math.min(b.length, left);
    out.push(n === b.length ? b : b.subarray(0, n));
    left -= n;
  }
  return out;
}

/** Copies as much of `data` as fits into the list; returns the bytes copied. */
export function sgCopyIn(buffers: readonly Uint8Array[], data: Uint8Array): number {
  let at = 0;
  for (const b of buffers) {
    if (at >= data.length) break;
    const n = Math.min(b.length, data.length - at);
    b.set(data.subarray(at, at + n));
    at += n;
  }
  return at;
}

/** Gathers the first `length` bytes of the list into a new array (parameter lists). */
export function sgGather(buffers: readonly Uint8Array[], length: number): Uint8Array {
  const out = new Uint8Array(length);
  let at = 0;
  for (const b of buffers) {
    if (at >= length) break;
    const n = Math.min(b.length, length - at);
    out.set(b.subarray(0, n), at);
    at += n;
  }
  return out;
}
