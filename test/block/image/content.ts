import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import type { BlockDevice } from '../../../src/block/block-device.ts';

/** Disk contents for the image tests: random data with holes, written sparsely, read back and compared. */

export const MiB = 1 << 20;

/**
 * Random disk content with holes: each 256 KiB piece is random, zero (left
 * as a hole in the file) or half random, so images built from it have
 * present, absent and partly zero blocks.
 */
export function randomContent(size: number): Uint8Array {
  const out = new Uint8Array(size);
  const piece = 256 * 1024;
  for (let at = 0; at < size; at += piece) {
    const n = Math.min(piece, size - at);
    const kind = Math.floor(Math.random() * 3);
    if (kind === 0) out.set(randomBytes(n), at);
    if (kind === 1) out.set(randomBytes(n / 2), at + n / 4);
  }
  return out;
}

/** Writes content to a new raw file, skipping zero 64 KiB runs so they stay holes. */
export async function writeSparse(path: string, content: Uint8Array): Promise<void> {
  const handle = await open(path, 'w');
  try {
    const run = 64 * 1024;
    for (let at = 0; at < content.length; at += run) {
      const part = content.subarray(at, at + run);
      if (part.some((b) => b !== 0)) await handle.write(part, 0, part.length, at);
    }
    await handle.truncate(content.length);
  } finally {
    await handle.close();
  }
}

/** Reads a whole device in 1 MiB requests. */
export async function readAll(disk: BlockDevice): Promise<Uint8Array> {
  const out = new Uint8Array(disk.size);
  for (let at = 0; at < disk.size; at += MiB) {
    await disk.read(at, out.subarray(at, Math.min(disk.size, at + MiB)));
  }
  return out;
}

/** The first offset where two buffers differ, or -1. */
export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}
