/**
 * Reused buffers for large payloads: READ replies (back to the pool once
 * the socket has taken them) and assembled WRITE payloads (back once the
 * device has written them). A fresh multi-megabyte buffer per request costs
 * page faults on first touch and external-memory pressure on the garbage
 * collector, which dominated large transfers. Size classes are powers of two
 * from 64 KiB; smaller payloads use Node's own small-buffer pool.
 */
const MIN_POOLED = 64 * 1024;
const KEEP_PER_CLASS = 8;
const MAX_POOLED_BYTES = 64 * 1024 * 1024;

const free = new Map<number, ArrayBuffer[]>();
const pooled = new WeakSet<ArrayBufferLike>();
let keptBytes = 0;

function sizeClass(size: number): number {
  return 2 ** Math.ceil(Math.log2(size));
}

/** A buffer of exactly `size` bytes; pass it to release() once the socket is done with it. */
export function acquirePayloadBuffer(size: number): Buffer {
  if (size < MIN_POOLED) return Buffer.allocUnsafe(size);
  const cls = sizeClass(size);
  const list = free.get(cls);
  const reused = list?.pop();
  if (reused) {
    keptBytes -= cls;
    return Buffer.from(reused, 0, size);
  }
  const fresh = new ArrayBuffer(cls);
  pooled.add(fresh);
  return Buffer.from(fresh, 0, size);
}

/** True when `bytes` came from the pool and should be released after writing. */
export function isPooledPayload(bytes: Uint8Array): boolean {
  return pooled.has(bytes.buffer);
}

export function releasePayloadBuffer(bytes: Uint8Array): void {
  const buffer = bytes.buffer;
  if (!pooled.has(buffer) || !(buffer instanceof ArrayBuffer)) return;
  const cls = buffer.byteLength;
  const list = free.get(cls) ?? [];
  if (list.length >= KEEP_PER_CLASS || keptBytes + cls > MAX_POOLED_BYTES || list.includes(buffer))
    return;
  list.push(buffer);
  free.set(cls, list);
  keptBytes += cls;
}
