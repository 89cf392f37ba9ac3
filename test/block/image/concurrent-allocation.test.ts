import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { openImage } from '../../../src/block/image/open.ts';
import { createVhd } from '../../../src/block/image/vhd/create.ts';
import { VhdDisk } from '../../../src/block/image/vhd/vhd-disk.ts';
import { createVhdx } from '../../../src/block/image/vhdx/create.ts';
import { PAYLOAD_BLOCK_FULLY_PRESENT } from '../../../src/block/image/vhdx/format.ts';
import { VhdxDisk } from '../../../src/block/image/vhdx/vhdx-disk.ts';
import { run, tempDir } from '../../real-tools.ts';
import { firstDifference, MiB, readAll } from './content.ts';

/**
 * The SCSI target keeps up to 32 requests in flight: 32 concurrent writes
 * into the same unallocated block, and into many new blocks at once, must
 * all land, with one allocation per block.
 */

const SIZE = 16 * MiB;

const images = [
  {
    format: 'vhdx',
    qemu: 'vhdx',
    create: (p: string) => createVhdx(p, { size: SIZE, type: 'dynamic', blockSize: MiB }),
  },
  {
    format: 'vhd',
    qemu: 'vpc',
    create: (p: string) => createVhd(p, { size: SIZE, type: 'dynamic' }),
  },
] as const;

for (const image of images) {
  test(`${image.format}: 32 concurrent writes to one new block and to many new blocks`, async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, `image.${image.format}`);
    await image.create(path);
    const expected = new Uint8Array(SIZE);
    const disk = await openImage(path);
    try {
      // Bad requests reject (they do not throw synchronously), with the offset.
      await assert.rejects(disk.read(SIZE, new Uint8Array(512)), { code: 'ERANGE', offset: SIZE });
      await assert.rejects(disk.write(100, new Uint8Array(512)), { code: 'EINVAL', offset: 100 });
      const writes: Promise<void>[] = [];
      for (let i = 0; i < 32; i++) {
        const offset = 3 * MiB + i * 16384;
        const data = randomBytes(8192);
        expected.set(data, offset);
        writes.push(disk.write(offset, data));
      }
      await Promise.all(writes);
      writes.length = 0;
      for (let i = 0; i < 32; i++) {
        // Four writes into each of eight new 1 MiB stretches, interleaved.
        const offset = 8 * MiB + (i % 8) * MiB + Math.floor(i / 8) * 65536;
        const data = randomBytes(65536);
        expected.set(data, offset);
        writes.push(disk.write(offset, data));
      }
      await Promise.all(writes);
      assert.equal(firstDifference(await readAll(disk), expected), -1);
      // One allocation per block: 1 + 8 blocks of 1 MiB (VHDX), 1 + 4 of 2 MiB (VHD).
      if (disk instanceof VhdxDisk)
        assert.equal(disk.blockStateCounts().get(PAYLOAD_BLOCK_FULLY_PRESENT), 9);
      if (disk instanceof VhdDisk) assert.equal(disk.blockCounts().allocated, 5);
      const end =
        disk instanceof VhdxDisk ? 4 * MiB + 9 * MiB : 3 * 512 + 512 + 5 * (2 * MiB + 512) + 512;
      assert.equal((await stat(path)).size, end);
    } finally {
      await disk.close();
    }
    const reference = join(dir, 'expected.raw');
    await writeFile(reference, expected);
    if (image.qemu === 'vhdx') {
      const check = await run('qemu-img', ['check', '-f', 'vhdx', path]);
      assert.equal(check.code, 0, check.stdout + check.stderr);
    }
    const compare = await run('qemu-img', [
      'compare',
      '-f',
      image.qemu,
      '-F',
      'raw',
      path,
      reference,
    ]);
    assert.equal(compare.code, 0, compare.stdout + compare.stderr);
  });
}
