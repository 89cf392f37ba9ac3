import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { ImageFormatError } from '../../../src/block/block-device.ts';
import { createVhdx } from '../../../src/block/image/vhdx/create.ts';
import { PAYLOAD_BLOCK_PARTIALLY_PRESENT } from '../../../src/block/image/vhdx/format.ts';
import { VhdxDisk } from '../../../src/block/image/vhdx/vhdx-disk.ts';
import { tempDir } from '../../real-tools.ts';
import { firstDifference, MiB, readAll } from './content.ts';

const SIZE = 12 * MiB;

async function sha(path: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(path))
    .digest('hex');
}

/** A parent with random content over most of it; returns the content. */
async function makeParent(path: string): Promise<Uint8Array> {
  await createVhdx(path, { size: SIZE, type: 'dynamic', blockSize: MiB });
  const content = new Uint8Array(SIZE);
  content.set(randomBytes(9 * MiB), MiB);
  const disk = await VhdxDisk.open(path);
  await disk.write(0, content);
  await disk.close();
  return content;
}

test('a child reads through to its parent; writes land only in the child', async (t) => {
  const dir = await tempDir(t);
  const parentPath = join(dir, 'parent.vhdx');
  const childPath = join(dir, 'child.vhdx');
  const expected = await makeParent(parentPath);
  const parentHash = await sha(parentPath);
  await createVhdx(childPath, { type: 'differencing', parent: parentPath });

  const child = await VhdxDisk.open(childPath);
  try {
    assert.equal(child.size, SIZE);
    assert.equal(child.parentPath, parentPath);
    assert.equal(firstDifference(await readAll(child), expected), -1);

    // Sector-granular writes inside not-present blocks (they become partially
    // present), across a block boundary, and in a block the parent lacks.
    const writes: [number, number][] = [
      [MiB + 512, 1536],
      [2 * MiB - 4096, 8192],
      [5 * MiB + 100 * 512, 3 * 512],
      [11 * MiB, 64 * 1024],
    ];
    for (const [offset, length] of writes) {
      const data = randomBytes(length);
      expected.set(data, offset);
      await child.write(offset, data);
    }
    // Discard a whole block and zero part of another: zeros, not the parent's data.
    await child.discard(3 * MiB, MiB);
    expected.fill(0, 3 * MiB, 4 * MiB);
    await child.writeZeroes(6 * MiB + 4096, 4096);
    expected.fill(0, 6 * MiB + 4096, 6 * MiB + 8192);
    assert.equal(firstDifference(await readAll(child), expected), -1);
    const counts = child.blockStateCounts();
    assert.ok((counts.get(PAYLOAD_BLOCK_PARTIALLY_PRESENT) ?? 0) >= 4);
  } finally {
    await child.close();
  }
  assert.equal(await sha(parentPath), parentHash, 'the parent file changed');

  const again = await VhdxDisk.open(childPath, { readOnly: true });
  try {
    assert.equal(firstDifference(await readAll(again), expected), -1);
  } finally {
    await again.close();
  }
});

test('a chain of three: grandchild over child over parent', async (t) => {
  const dir = await tempDir(t);
  const expected = await makeParent(join(dir, 'base.vhdx'));
  await createVhdx(join(dir, 'mid.vhdx'), { type: 'differencing', parent: join(dir, 'base.vhdx') });
  const mid = await VhdxDisk.open(join(dir, 'mid.vhdx'));
  const midData = randomBytes(MiB + 4096);
  await mid.write(4 * MiB - 4096, midData);
  expected.set(midData, 4 * MiB - 4096);
  await mid.close();
  await createVhdx(join(dir, 'top.vhdx'), {
    type: 'differencing',
    parent: join(dir, 'mid.vhdx'),
    blockSize: 4 * MiB,
  });
  const top = await VhdxDisk.open(join(dir, 'top.vhdx'));
  try {
    const topData = randomBytes(2048);
    await top.write(4 * MiB, topData);
    expected.set(topData, 4 * MiB);
    assert.equal(firstDifference(await readAll(top), expected), -1);
  } finally {
    await top.close();
  }
});

test('many concurrent writes into one unallocated block of a child all land', async (t) => {
  const dir = await tempDir(t);
  const expected = await makeParent(join(dir, 'parent.vhdx'));
  await createVhdx(join(dir, 'child.vhdx'), {
    type: 'differencing',
    parent: join(dir, 'parent.vhdx'),
    blockSize: MiB,
  });
  const child = await VhdxDisk.open(join(dir, 'child.vhdx'));
  try {
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 32; i++) {
      const offset = 2 * MiB + i * 8192;
      const data = randomBytes(4096);
      expected.set(data, offset);
      writes.push(child.write(offset, data));
    }
    await Promise.all(writes);
  } finally {
    await child.close();
  }
  const again = await VhdxDisk.open(join(dir, 'child.vhdx'), { readOnly: true });
  try {
    assert.equal(firstDifference(await readAll(again), expected), -1);
  } finally {
    await again.close();
  }
});

test('a parent that changed after the child was made is refused (parent_linkage)', async (t) => {
  const dir = await tempDir(t);
  const parentPath = join(dir, 'parent.vhdx');
  await makeParent(parentPath);
  await createVhdx(join(dir, 'child.vhdx'), { type: 'differencing', parent: parentPath });
  const parent = await VhdxDisk.open(parentPath);
  const before = parent.guids.dataWrite;
  await parent.write(0, new Uint8Array(512).fill(1));
  const after = parent.guids.dataWrite;
  await parent.close();
  assert.notEqual(before, after, 'a write must change the DataWriteGuid');

  await assert.rejects(VhdxDisk.open(join(dir, 'child.vhdx'), { readOnly: true }), (e) => {
    assert.ok(e instanceof ImageFormatError);
    assert.equal(e.structure, 'VHDX parent locator');
    assert.match(e.message, /parent_linkage/);
    assert.ok(e.message.includes(before) && e.message.includes(after), e.message);
    return true;
  });
});

test('the parent is found by relative path after both move, and a missing one is named', async (t) => {
  const dir = await tempDir(t);
  await mkdir(join(dir, 'a'));
  const expected = await makeParent(join(dir, 'a', 'parent.vhdx'));
  await createVhdx(join(dir, 'a', 'child.vhdx'), {
    type: 'differencing',
    parent: join(dir, 'a', 'parent.vhdx'),
  });
  await rename(join(dir, 'a'), join(dir, 'b'));
  const moved = await VhdxDisk.open(join(dir, 'b', 'child.vhdx'), { readOnly: true });
  try {
    assert.equal(moved.parentPath, join(dir, 'b', 'parent.vhdx'));
    assert.equal(firstDifference(await readAll(moved), expected), -1);
  } finally {
    await moved.close();
  }

  await rename(join(dir, 'b', 'parent.vhdx'), join(dir, 'b', 'gone.vhdx'));
  await assert.rejects(VhdxDisk.open(join(dir, 'b', 'child.vhdx'), { readOnly: true }), (e) => {
    assert.ok(e instanceof ImageFormatError);
    assert.match(e.message, /parent not found; tried relative_path/);
    return true;
  });
});

test('differencing over 4096-byte sectors: per-sector presence at that size', async (t) => {
  const dir = await tempDir(t);
  const parentPath = join(dir, 'parent4k.vhdx');
  await createVhdx(parentPath, {
    size: 8 * MiB,
    type: 'dynamic',
    blockSize: MiB,
    logicalSectorSize: 4096,
  });
  const expected = new Uint8Array(8 * MiB);
  expected.set(randomBytes(6 * MiB), MiB);
  const parent = await VhdxDisk.open(parentPath);
  await parent.write(0, expected);
  await parent.close();
  await createVhdx(join(dir, 'child4k.vhdx'), { type: 'differencing', parent: parentPath });
  const child = await VhdxDisk.open(join(dir, 'child4k.vhdx'));
  try {
    assert.equal(child.logicalSectorSize, 4096);
    await assert.rejects(child.write(512, new Uint8Array(512)), { code: 'EINVAL' });
    const data = randomBytes(3 * 4096);
    await child.write(2 * MiB + 4096, data);
    expected.set(data, 2 * MiB + 4096);
    assert.equal(firstDifference(await readAll(child), expected), -1);
  } finally {
    await child.close();
  }
});
