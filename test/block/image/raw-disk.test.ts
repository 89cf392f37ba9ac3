import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { DiskIoError } from '../../../src/block/block-device.ts';
import { nativeAddonError } from '../../../src/block/image/fallocate.ts';
import { detectFormat, openImage } from '../../../src/block/image/open.ts';
import { RawDisk } from '../../../src/block/image/raw-disk.ts';
import { tempDir } from '../../real-tools.ts';

const MiB = 1 << 20;

test('the native fallocate addon is built and loads', () => {
  assert.equal(nativeAddonError, null);
});

test('raw disk reads and writes at file offsets, vectored too', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'disk.img');
  const content = randomBytes(4 * MiB);
  await writeFile(path, content);
  const disk = await RawDisk.open(path);
  t.after(() => disk.close());
  assert.equal(disk.size, 4 * MiB);
  assert.equal(disk.format, 'raw');

  const got = new Uint8Array(8192);
  await disk.read(MiB + 512, got);
  assert.deepEqual(got, new Uint8Array(content.subarray(MiB + 512, MiB + 512 + 8192)));

  const a = randomBytes(4096);
  const b = randomBytes(512);
  await disk.writev(2 * MiB, [a, b], { fua: true });
  const back = [new Uint8Array(1000), new Uint8Array(3608)];
  await disk.readv(2 * MiB, back);
  assert.deepEqual(Buffer.concat(back), Buffer.concat([a, b]));
});

test('discard punches a hole and write-zeroes zeroes, keeping the size', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'disk.img');
  await writeFile(path, Buffer.alloc(8 * MiB, 0xab));
  const disk = await RawDisk.open(path);
  t.after(() => disk.close());
  const before = (await stat(path)).blocks;

  await disk.discard(MiB, 4 * MiB);
  const after = (await stat(path)).blocks;
  assert.ok(after <= before - (4 * MiB) / 512, `blocks ${before} -> ${after}: no hole punched`);
  assert.equal((await stat(path)).size, 8 * MiB);

  await disk.writeZeroes(6 * MiB, 4096, { mayUnmap: false });
  const probe = new Uint8Array(4096 + 512);
  await disk.read(6 * MiB, probe);
  assert.ok(probe.subarray(0, 4096).every((x) => x === 0));
  assert.ok(probe.subarray(4096).every((x) => x === 0xab));

  const hole = new Uint8Array(4 * MiB);
  await disk.read(MiB, hole);
  assert.ok(hole.every((x) => x === 0));
});

test('a file whose length is not sector aligned is rounded up; the tail reads zeros', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'odd.img');
  await writeFile(path, Buffer.alloc(1000, 7));
  const disk = await RawDisk.open(path, { readOnly: true });
  t.after(() => disk.close());
  assert.equal(disk.size, 1024);
  const all = new Uint8Array(1024);
  await disk.read(0, all);
  assert.ok(all.subarray(0, 1000).every((x) => x === 7));
  assert.ok(all.subarray(1000).every((x) => x === 0));
});

test('range, read-only and closed errors are DiskIoErrors with the offset', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'disk.img');
  await writeFile(path, Buffer.alloc(MiB));
  const disk = await RawDisk.open(path, { readOnly: true });
  await assert.rejects(disk.read(MiB - 512, new Uint8Array(1024)), (e: unknown) => {
    assert.ok(e instanceof DiskIoError);
    assert.equal(e.code, 'ERANGE');
    assert.equal(e.offset, MiB - 512);
    return true;
  });
  await assert.rejects(disk.write(0, new Uint8Array(512)), { name: 'DiskIoError', code: 'EROFS' });
  await disk.close();
  await assert.rejects(disk.read(0, new Uint8Array(512)), { code: 'ECLOSED' });
});

test('the identifier is stable for a path and differs between files', async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'a.img'), Buffer.alloc(4096));
  await writeFile(join(dir, 'b.img'), Buffer.alloc(4096));
  const a1 = await RawDisk.open(join(dir, 'a.img'), { readOnly: true });
  const a2 = await RawDisk.open(join(dir, '.', 'a.img'), { readOnly: true });
  const b = await RawDisk.open(join(dir, 'b.img'), { readOnly: true });
  t.after(async () => {
    await a1.close();
    await a2.close();
    await b.close();
  });
  assert.equal(a1.identifier.length, 16);
  assert.deepEqual(a1.identifier, a2.identifier);
  assert.notDeepEqual(a1.identifier, b.identifier);
});

test('openImage detects raw and opens it', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'plain.img');
  await writeFile(path, Buffer.alloc(MiB, 1));
  assert.equal(await detectFormat(path), 'raw');
  const disk = await openImage(path, { readOnly: true });
  t.after(() => disk.close());
  assert.equal(disk.format, 'raw');
  assert.equal(disk.readOnly, true);
});
