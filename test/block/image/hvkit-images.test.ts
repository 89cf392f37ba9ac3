import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import type { BlockDevice } from '../../../src/block/block-device.ts';
import { openImage } from '../../../src/block/image/open.ts';
import { createVhd } from '../../../src/block/image/vhd/create.ts';
import { createVhdx } from '../../../src/block/image/vhdx/create.ts';
import { run, tempDir } from '../../real-tools.ts';
import { firstDifference, MiB, readAll } from './content.ts';
import { qemuImg, qemuInfo } from './qemu.ts';

/**
 * Images hvkit creates and writes (random writes, discards and
 * write-zeroes, many in flight at once) pass `qemu-img check`, compare
 * equal to the expected raw content with `qemu-img compare`, and report
 * the right virtual size in `qemu-img info`.
 */

interface Case {
  readonly name: string;
  readonly format: 'vhdx' | 'vhd' | 'raw';
  readonly qemuFormat: string;
  readonly size: number;
  /** qemu reads only 512-byte-sector VHDX; other images are checked by reading them back. */
  readonly qemuReadable?: false;
  create(path: string): Promise<void>;
}

const SIZE = 20 * MiB;

const cases: Case[] = [
  {
    name: 'dynamic VHDX, 1 MiB blocks',
    format: 'vhdx',
    qemuFormat: 'vhdx',
    size: SIZE,
    create: (p) => createVhdx(p, { size: SIZE, type: 'dynamic', blockSize: MiB }),
  },
  {
    name: 'dynamic VHDX, default (32 MiB) blocks, size not a block multiple',
    format: 'vhdx',
    qemuFormat: 'vhdx',
    size: SIZE + 7 * 512,
    create: (p) => createVhdx(p, { size: SIZE + 7 * 512, type: 'dynamic' }),
  },
  {
    name: 'fixed VHDX, 2 MiB blocks',
    format: 'vhdx',
    qemuFormat: 'vhdx',
    size: SIZE,
    create: (p) => createVhdx(p, { size: SIZE, type: 'fixed', blockSize: 2 * MiB }),
  },
  {
    name: 'dynamic VHDX with 4096-byte logical sectors',
    format: 'vhdx',
    qemuFormat: 'vhdx',
    size: SIZE,
    qemuReadable: false,
    create: (p) =>
      createVhdx(p, { size: SIZE, type: 'dynamic', blockSize: MiB, logicalSectorSize: 4096 }),
  },
  {
    name: 'dynamic VHD',
    format: 'vhd',
    qemuFormat: 'vpc',
    size: SIZE - 512,
    create: (p) => createVhd(p, { size: SIZE - 512, type: 'dynamic' }),
  },
  {
    name: 'fixed VHD',
    format: 'vhd',
    qemuFormat: 'vpc',
    size: SIZE - 512,
    create: (p) => createVhd(p, { size: SIZE - 512, type: 'fixed' }),
  },
  {
    name: 'raw',
    format: 'raw',
    qemuFormat: 'raw',
    size: SIZE,
    create: async (p) => {
      await writeFile(p, new Uint8Array(0), { flag: 'wx' });
      await truncate(p, SIZE);
    },
  },
];

/** Applies random operations in batches of concurrent requests, mirroring them on `expected`. */
async function randomOperations(
  disk: BlockDevice,
  expected: Uint8Array,
  rounds: number,
): Promise<void> {
  const sector = disk.logicalSectorSize;
  const sectors = disk.size / sector;
  const pick = (max: number) => Math.floor(Math.random() * max);
  for (let round = 0; round < rounds; round++) {
    const batch: Promise<void>[] = [];
    // Requests in one batch do not overlap, so their order does not matter.
    const taken: [number, number][] = [];
    for (let i = 0; i < 12; i++) {
      const length = (1 + pick(Math.random() < 0.2 ? 2048 : 64)) * sector;
      const offset = pick(sectors - length / sector) * sector;
      if (taken.some(([a, b]) => offset < b && a < offset + length)) continue;
      taken.push([offset, offset + length]);
      const kind = pick(10);
      if (kind < 6) {
        const data = randomBytes(length);
        expected.set(data, offset);
        batch.push(disk.write(offset, data, { fua: kind === 0 }));
      } else if (kind < 8) {
        expected.fill(0, offset, offset + length);
        batch.push(disk.discard(offset, length));
      } else {
        expected.fill(0, offset, offset + length);
        batch.push(disk.writeZeroes(offset, length, { mayUnmap: kind === 8 }));
      }
    }
    await Promise.all(batch);
    if (round % 5 === 4) await disk.flush();
  }
}

for (const c of cases) {
  test(`hvkit-written ${c.name}: ${c.qemuReadable === false ? 'qemu refuses only the sector size it does not support' : 'qemu-img check, compare and info agree'}`, async (t) => {
    const dir = await tempDir(t);
    const image = join(dir, `image.${c.format}`);
    await c.create(image);
    const expected = new Uint8Array(c.size);
    const disk = await openImage(image, { format: c.format });
    assert.equal(disk.size, c.size);
    try {
      // A whole-disk pattern first, so discards and zeroes have data to remove.
      const fill = randomBytes(4 * MiB);
      for (let at = 0; at + fill.length <= c.size; at += 8 * MiB) {
        await disk.write(at, fill);
        expected.set(fill, at);
      }
      // Whole blocks deallocated (UNMAPPED / ZERO states in a dynamic VHDX).
      await disk.discard(2 * MiB, 2 * MiB);
      expected.fill(0, 2 * MiB, 4 * MiB);
      await disk.writeZeroes(10 * MiB, 2 * MiB, { mayUnmap: true });
      expected.fill(0, 10 * MiB, 12 * MiB);
      await randomOperations(disk, expected, 25);
    } finally {
      await disk.close();
    }

    const reference = join(dir, 'expected.raw');
    await writeFile(reference, expected);
    if (c.qemuReadable === false) {
      // qemu refuses VHDX with 4096-byte logical sectors: it says exactly that
      // it does not support them (any other failure would be a broken image).
      const info = await run('qemu-img', ['info', '-f', c.qemuFormat, image]);
      assert.notEqual(info.code, 0);
      assert.match(info.stderr, /Could not open '.*': Operation not supported$/m, info.stderr);
    } else {
      if (c.qemuFormat === 'vhdx') {
        const check = await run('qemu-img', ['check', '-f', 'vhdx', image]);
        assert.equal(check.code, 0, `qemu-img check: ${check.stdout}${check.stderr}`);
      }
      const args = ['compare', '-f', c.qemuFormat, '-F', 'raw', image, reference];
      const compare = await run('qemu-img', args);
      assert.equal(compare.code, 0, `qemu-img compare: ${compare.stdout}${compare.stderr}`);
      assert.equal((await qemuInfo(image, c.qemuFormat))['virtual-size'], c.size);
    }

    // And hvkit reads back the same after reopening.
    const again = await openImage(image, { readOnly: true });
    try {
      const at = firstDifference(await readAll(again), expected);
      assert.equal(at, -1, `first difference at ${at}`);
    } finally {
      await again.close();
    }
  });
}

test('an hvkit VHDX converted by qemu-img to raw matches what hvkit wrote', async (t) => {
  const dir = await tempDir(t);
  const image = join(dir, 'image.vhdx');
  await createVhdx(image, { size: 8 * MiB, type: 'dynamic', blockSize: MiB });
  const disk = await openImage(image);
  const data = randomBytes(3 * MiB + 512);
  await disk.write(2 * MiB - 512, data);
  await disk.close();
  const out = join(dir, 'out.raw');
  await qemuImg('convert', '-f', 'vhdx', '-O', 'raw', image, out);
  const raw = new Uint8Array(await readFile(out));
  assert.deepEqual(raw.subarray(2 * MiB - 512, 5 * MiB), new Uint8Array(data));
  assert.ok(raw.subarray(0, 2 * MiB - 512).every((b) => b === 0));
});
