import type { BlockDevice } from '../block-device.ts';
import { isAllZero } from '../vectors.ts';

const CHUNK = 1 << 20;
/** Chunks read ahead while earlier ones are written. */
const IN_FLIGHT = 4;

export type ProgressCallback = (done: number, total: number) => void;

/**
 * Copies every byte of `source` to a freshly created `target` of at least
 * the same size, in 1 MiB chunks with a few in flight. All-zero chunks are
 * skipped: a new image already reads zeros there, and staying unallocated
 * keeps it sparse. Returns the bytes actually written.
 */
export async function copyDisk(
  source: BlockDevice,
  target: BlockDevice,
  onProgress?: ProgressCallback,
): Promise<number> {
  const total = source.size;
  let written = 0;
  let done = 0;
  let next = 0;
  const worker = async (): Promise<void> => {
    const buffer = new Uint8Array(CHUNK);
    while (next < total) {
      const at = next;
      const n = Math.min(CHUNK, total - at);
      next += n;
      const view = buffer.subarray(0, n);
      await source.read(at, view);
      if (!isAllZero(view)) {
        await target.write(at, view);
        written += n;
      }
      done += n;
      onProgress?.(done, total);
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  await target.flush();
  return written;
}

export type CompareResult =
  | { readonly identical: true; readonly sizeMismatch: boolean }
  | { readonly identical: false; readonly offset: number; readonly sizeMismatch: boolean };

/**
 * Compares two devices as qemu-img compare does: the common part byte for
 * byte; beyond it, the larger device must read zeros (unless strict, when
 * any size difference is a mismatch at the smaller size).
 */
export async function compareDisks(
  a: BlockDevice,
  b: BlockDevice,
  options: { strict?: boolean; onProgress?: ProgressCallback } = {},
): Promise<CompareResult> {
  const sizeMismatch = a.size !== b.size;
  const common = Math.min(a.size, b.size);
  if (sizeMismatch && options.strict) return { identical: false, offset: common, sizeMismatch };
  const total = Math.max(a.size, b.size);
  const ba = new Uint8Array(CHUNK);
  const bb = new Uint8Array(CHUNK);
  for (let at = 0; at < common; at += CHUNK) {
    const n = Math.min(CHUNK, common - at);
    const va = ba.subarray(0, n);
    const vb = bb.subarray(0, n);
    await Promise.all([a.read(at, va), b.read(at, vb)]);
    if (Buffer.compare(va, vb) !== 0) {
      for (let i = 0; i < n; i++)
        if (va[i] !== vb[i]) return { identical: false, offset: at + i, sizeMismatch };
    }
    options.onProgress?.(at + n, total);
  }
  const larger = a.size > b.size ? a : b;
  for (let at = common; at < larger.size; at += CHUNK) {
    const n = Math.min(CHUNK, larger.size - at);
    const v = ba.subarray(0, n);
    await larger.read(at, v);
    if (!isAllZero(v)) {
      const i = v.findIndex((x) => x !== 0);
      return { identical: false, offset: at + i, sizeMismatch };
    }
    options.onProgress?.(at + n, total);
  }
  return { identical: true, sizeMismatch };
}
