import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFile, open, stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { DiskIoError, ImageFormatError } from '../../../src/block/block-device.ts';
import { openImage } from '../../../src/block/image/open.ts';
import { createVhd } from '../../../src/block/image/vhd/create.ts';
import { VhdDisk } from '../../../src/block/image/vhd/vhd-disk.ts';
import { crc32cWithZeroedField } from '../../../src/block/image/vhdx/crc32c.ts';
import { createVhdx } from '../../../src/block/image/vhdx/create.ts';
import { VhdxDisk } from '../../../src/block/image/vhdx/vhdx-disk.ts';
import { tempDir } from '../../real-tools.ts';
import { MiB } from './content.ts';

/**
 * Damaged and hostile images: a bad header falls back to the good one;
 * otherwise the open fails with an ImageFormatError naming the structure.
 * Then fast-check mutates valid images at random (bytes, with and without
 * fixed-up checksums, and truncation): opening and reading them may only
 * fail with ImageFormatError or DiskIoError, and never hangs.
 */

// hvkit's VHDX layout: headers at 64/128 KiB, region tables at 192/256 KiB,
// log at 1 MiB, metadata at 2 MiB (items from +64 KiB, file parameters
// first), BAT at 3 MiB.
const HEADERS = [64 * 1024, 128 * 1024];
const REGION_TABLES = [192 * 1024, 256 * 1024];
const METADATA = 2 * MiB;
const BAT = 3 * MiB;

async function patch(path: string, offset: number, bytes: Uint8Array): Promise<void> {
  const h = await open(path, 'r+');
  try {
    await h.write(bytes, 0, bytes.length, offset);
  } finally {
    await h.close();
  }
}

async function readAt(path: string, offset: number, length: number): Promise<Uint8Array> {
  const h = await open(path, 'r');
  try {
    const b = new Uint8Array(length);
    await h.read(b, 0, length, offset);
    return b;
  } finally {
    await h.close();
  }
}

function u64le(value: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(value), true);
  return b;
}

function u32le(value: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, value, true);
  return b;
}

/** Recomputes the CRC-32C of both headers and both region tables after a mutation. */
async function fixVhdxChecksums(path: string): Promise<void> {
  for (const [at, size] of [
    ...HEADERS.map((o) => [o, 4096] as const),
    ...REGION_TABLES.map((o) => [o, 65536] as const),
  ]) {
    const block = await readAt(path, at, size);
    await patch(path, at + 4, u32le(crc32cWithZeroedField(block, 4)));
  }
}

function rejectsWith(structure: RegExp, message: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof ImageFormatError, `expected an ImageFormatError, got ${String(e)}`);
    assert.match(e.structure, structure);
    assert.match(e.message, message);
    return true;
  };
}

async function dynamicVhdx(dir: string, name = 'base.vhdx'): Promise<string> {
  const path = join(dir, name);
  await createVhdx(path, { size: 8 * MiB, type: 'dynamic', blockSize: MiB });
  const disk = await VhdxDisk.open(path);
  await disk.write(MiB, new Uint8Array(2 * MiB).fill(0x42));
  await disk.close();
  return path;
}

test('a header with a bad CRC is skipped for the other one', async (t) => {
  const dir = await tempDir(t);
  const path = await dynamicVhdx(dir);
  const disk0 = await VhdxDisk.open(path, { readOnly: true });
  const slot = disk0.layout.current.slot;
  await disk0.close();
  // Damage the current header: the older one takes over.
  await patch(path, HEADERS[slot]! + 40, new Uint8Array([0xde, 0xad]));
  const disk = await VhdxDisk.open(path, { readOnly: true });
  try {
    assert.equal(disk.layout.current.slot, slot === 0 ? 1 : 0);
    assert.match(
      disk.layout.current.otherError ?? '',
      /CRC-32C mismatch \(stored 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}\)/,
    );
    const probe = new Uint8Array(4096);
    await disk.read(MiB, probe);
    assert.ok(probe.every((b) => b === 0x42));
  } finally {
    await disk.close();
  }
});

test('two bad headers: an error naming both', async (t) => {
  const dir = await tempDir(t);
  const path = await dynamicVhdx(dir);
  await patch(path, HEADERS[0]! + 100, new Uint8Array([1]));
  await patch(path, HEADERS[1]! + 8, new Uint8Array([0x99]));
  await assert.rejects(
    openImage(path),
    rejectsWith(
      /^VHDX headers$/,
      /header 1: CRC-32C mismatch \(stored 0x\w+, computed 0x\w+\); header 2: CRC-32C mismatch/,
    ),
  );
});

test('a BAT entry pointing past the end of the file', async (t) => {
  const dir = await tempDir(t);
  const path = await dynamicVhdx(dir);
  // Payload block 5: FULLY_PRESENT at 900 MiB.
  await patch(path, BAT + 5 * 8, u64le(900 * MiB + 6));
  await assert.rejects(
    openImage(path),
    rejectsWith(/^VHDX BAT entry 5$/, /points past the end of the \d+-byte file/),
  );
});

test('two BAT entries pointing at the same block', async (t) => {
  const dir = await tempDir(t);
  const path = await dynamicVhdx(dir);
  const entry1 = await readAt(path, BAT + 8, 8);
  await patch(path, BAT + 6 * 8, entry1);
  await assert.rejects(
    openImage(path),
    rejectsWith(
      /^VHDX file layout$/,
      /payload block 6 at file offset \d+ overlaps payload block 1/,
    ),
  );
});

test('a block size that is not a power of two', async (t) => {
  const dir = await tempDir(t);
  const path = await dynamicVhdx(dir);
  await patch(path, METADATA + 64 * 1024, u32le(3 * MiB));
  await assert.rejects(
    openImage(path),
    rejectsWith(/^VHDX file parameters$/, /block size 3145728 is not a power of two/),
  );
});

test('truncated VHDX files', async (t) => {
  const dir = await tempDir(t);
  const base = await dynamicVhdx(dir);
  const cases: [number, RegExp, RegExp][] = [
    [100 * 1024, /^VHDX header section$/, /smaller than the 1 MiB header section/],
    [
      2 * MiB + 1000,
      /^VHDX metadata table$/,
      /needs 65536 bytes at file offset 2097152, but the file is only 2098152 bytes/,
    ],
    [4 * MiB + 4096, /^VHDX BAT entry 1$/, /points past the end/],
  ];
  for (const [size, structure, message] of cases) {
    const path = join(dir, `truncated-${size}.vhdx`);
    await copyFile(base, path);
    await truncate(path, size);
    await assert.rejects(openImage(path, { readOnly: true }), rejectsWith(structure, message));
  }
});

test('VHD: a bad footer falls back to the copy; bad everything is an error', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'd.vhd');
  await createVhd(path, { size: 6 * MiB, type: 'dynamic' });
  const disk = await VhdDisk.open(path);
  await disk.write(2 * MiB, new Uint8Array(4096).fill(7));
  await disk.close();
  const size = (await stat(path)).size;
  await patch(path, size - 512 + 70, new Uint8Array([0xff]));
  const fallback = await VhdDisk.open(path, { readOnly: true });
  try {
    assert.match(fallback.layout.footerError ?? '', /checksum mismatch/);
    const probe = new Uint8Array(4096);
    await fallback.read(2 * MiB, probe);
    assert.ok(probe.every((b) => b === 7));
  } finally {
    await fallback.close();
  }
  await patch(path, 70, new Uint8Array([0xff]));
  await assert.rejects(openImage(path), rejectsWith(/^VHD footer$/, /checksum mismatch/));
});

test('VHD: a BAT entry past the footer and a truncated fixed disk', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'd.vhd');
  await createVhd(path, { size: 6 * MiB, type: 'dynamic' });
  const entry = new Uint8Array(4);
  new DataView(entry.buffer).setUint32(0, 0x100000, false);
  await patch(path, 1536 + 4, entry);
  await assert.rejects(openImage(path), rejectsWith(/^VHD BAT entry 1$/, /points past the footer/));

  const fixed = join(dir, 'f.vhd');
  await createVhd(fixed, { size: 6 * MiB, type: 'fixed' });
  const footer = await readAt(fixed, 6 * MiB, 512);
  await truncate(fixed, 4 * MiB);
  await patch(fixed, 4 * MiB, footer);
  await assert.rejects(
    openImage(fixed),
    rejectsWith(/^VHD footer$/, /needs a file of 6291968 bytes/),
  );
});

// ---- Random mutation ----

interface Base {
  readonly path: string;
  readonly kind: 'vhdx' | 'vhd';
  /** Ranges worth mutating: [start, length]. */
  readonly hot: readonly [number, number][];
}

const mutation = fc.record({
  base: fc.nat(),
  edits: fc.array(
    fc.record({
      range: fc.nat(),
      at: fc.nat(),
      bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }),
    }),
    { minLength: 1, maxLength: 6 },
  ),
  fixChecksums: fc.boolean(),
  truncateTo: fc.option(fc.double({ min: 0, max: 1, noNaN: true }), { freq: 4 }),
  write: fc.boolean(),
});

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`hang: ${what} took over ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Opens, reads (at most 32 MiB from the start and the last MiB), maybe writes, closes. */
async function exercise(path: string, write: boolean): Promise<void> {
  const disk = await openImage(path, { readOnly: !write });
  try {
    const first = Math.min(disk.size, 32 * MiB);
    for (let at = 0; at < first; at += MiB) {
      await disk.read(at, new Uint8Array(Math.min(MiB, first - at)));
    }
    if (disk.size > first) {
      const tail = Math.min(MiB, disk.size - first);
      await disk.read(disk.size - tail, new Uint8Array(tail));
    }
    if (write && disk.size >= 3 * MiB) {
      const sector = disk.logicalSectorSize;
      await disk.write(MiB - sector, randomBytes(2 * sector + MiB));
      await disk.discard(2 * MiB, MiB);
      await disk.writeZeroes(sector * 3, sector);
    }
  } finally {
    await disk.close();
  }
}

async function fixVhdChecksums(path: string): Promise<void> {
  const { vhdChecksum } = await import('../../../src/block/image/vhd/footer.ts');
  const size = (await stat(path)).size;
  for (const at of [0, size - 512]) {
    const footer = await readAt(path, at, 512);
    const sum = new Uint8Array(4);
    new DataView(sum.buffer).setUint32(0, vhdChecksum(footer, 64), false);
    await patch(path, at + 64, sum);
  }
  const header = await readAt(path, 512, 1024);
  const sum = new Uint8Array(4);
  new DataView(sum.buffer).setUint32(0, vhdChecksum(header, 36), false);
  await patch(path, 512 + 36, sum);
}

test('fast-check: mutated images open and read with only ImageFormatError/DiskIoError, never hang', async (t) => {
  const dir = await tempDir(t);
  const bases: Base[] = [];
  const vhdx = await dynamicVhdx(dir, 'dynamic.vhdx');
  const vhdxHot: [number, number][] = [
    [0, 16],
    [HEADERS[0]!, 80],
    [HEADERS[1]!, 80],
    [REGION_TABLES[0]!, 80],
    [REGION_TABLES[1]!, 80],
    [METADATA, 32 + 6 * 32],
    [METADATA + 64 * 1024, 64],
    [BAT, 64],
    [MiB, 4096],
  ];
  bases.push({ path: vhdx, kind: 'vhdx', hot: vhdxHot });
  const fixed = join(dir, 'fixed.vhdx');
  await createVhdx(fixed, { size: 4 * MiB, type: 'fixed', blockSize: MiB });
  bases.push({ path: fixed, kind: 'vhdx', hot: vhdxHot });
  const child = join(dir, 'child.vhdx');
  await createVhdx(child, { type: 'differencing', parent: vhdx, blockSize: MiB });
  const c = await VhdxDisk.open(child);
  await c.write(MiB + 512, new Uint8Array(4096).fill(9));
  await c.close();
  bases.push({ path: child, kind: 'vhdx', hot: [...vhdxHot, [METADATA + 64 * 1024 + 40, 400]] });
  const vhd = join(dir, 'dynamic.vhd');
  await createVhd(vhd, { size: 6 * MiB, type: 'dynamic' });
  const v = await VhdDisk.open(vhd);
  await v.write(2 * MiB, new Uint8Array(8192).fill(3));
  await v.close();
  const vhdSize = (await stat(vhd)).size;
  bases.push({
    path: vhd,
    kind: 'vhd',
    hot: [
      [0, 512],
      [512, 64],
      [1536, 16],
      [vhdSize - 512, 100],
    ],
  });

  let run = 0;
  let refused = 0;
  await fc.assert(
    fc.asyncProperty(mutation, async (m) => {
      const base = bases[m.base % bases.length]!;
      const path = join(dir, `mutant-${run++}.${base.kind}`);
      await copyFile(base.path, path);
      const size = (await stat(path)).size;
      for (const e of m.edits) {
        const [start, length] = base.hot[e.range % base.hot.length]!;
        await patch(path, Math.min(size - e.bytes.length, start + (e.at % length)), e.bytes);
      }
      if (m.fixChecksums) {
        if (base.kind === 'vhdx') await fixVhdxChecksums(path);
        else await fixVhdChecksums(path);
      }
      if (m.truncateTo !== null) await truncate(path, Math.floor(size * m.truncateTo));
      try {
        await withTimeout(exercise(path, m.write), 20_000, path);
      } catch (error) {
        if (!(error instanceof ImageFormatError || error instanceof DiskIoError)) throw error;
        refused++;
      }
    }),
    { numRuns: 300 },
  );
  // The property is only meaningful if the mutations are caught some of the time.
  assert.ok(refused > 20, `only ${refused} mutants were refused`);
});
