import assert from 'node:assert/strict';
import { copyFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { ImageFile } from '../../../src/block/image/image-file.ts';
import { payloadEntryIndex } from '../../../src/block/image/vhdx/bat.ts';
import { createVhdx } from '../../../src/block/image/vhdx/create.ts';
import { PAYLOAD_BLOCK_FULLY_PRESENT } from '../../../src/block/image/vhdx/format.ts';
import { HeaderWriter } from '../../../src/block/image/vhdx/header-writer.ts';
import { Journal } from '../../../src/block/image/vhdx/journal.ts';
import { readVhdxLayout } from '../../../src/block/image/vhdx/layout.ts';
import { VhdxDisk } from '../../../src/block/image/vhdx/vhdx-disk.ts';
import { tempDir } from '../../real-tools.ts';
import { MiB } from './content.ts';
import { qemuImg } from './qemu.ts';

/**
 * The journal's order ([MS-VHDX] 2.3): flush the data, write the log entry,
 * flush, write the metadata in place, flush. A crash after the entry is
 * durable but before it is applied must be repaired by replay, by hvkit and
 * by qemu alike.
 */

/** hvkit's creation layout puts the BAT at 3 MiB. */
const BAT_OFFSET = 3 * MiB;

type Call = { op: 'write'; at: number } | { op: 'sync' };

/** Opens an image's layout and journal over a file that records (and may refuse) writes. */
async function journalOver(path: string, refuse?: (at: number) => boolean) {
  const file = await ImageFile.open(path, false);
  const layout = await readVhdxLayout(file, 'apply');
  const calls: Call[] = [];
  const recording = {
    write: (at: number, data: Uint8Array) => {
      calls.push({ op: 'write', at });
      if (refuse?.(at)) return Promise.reject(new Error('simulated crash'));
      return file.write(at, data);
    },
    sync: () => {
      calls.push({ op: 'sync' });
      return file.sync();
    },
  } as unknown as ImageFile;
  const headers = new HeaderWriter(file, layout.current);
  await headers.update({ logGuid: crypto.randomUUID() });
  const h = layout.current.header;
  const journal = new Journal({
    file: recording,
    logOffset: h.logOffset,
    logLength: h.logLength,
    sectorBytes: (offset) => layout.bat.sectorBytes(offset),
    logGuid: () => headers.header.logGuid,
    fileLength: () => 8 * MiB + MiB,
  });
  return { file, layout, journal, calls };
}

/** Appends a 1 MiB block at 8 MiB filled with `fill` and points payload block 2 at it (in memory). */
async function allocateBlock(
  file: ImageFile,
  layout: Awaited<ReturnType<typeof readVhdxLayout>>,
  fill: number,
) {
  await file.write(8 * MiB, new Uint8Array(MiB).fill(fill));
  return layout.bat.set(
    payloadEntryIndex(layout.geometry, 2),
    PAYLOAD_BLOCK_FULLY_PRESENT,
    8 * MiB,
  );
}

test('commit order: flush data, write the entry, flush, apply in place, flush', async (t) => {
  const dir = await tempDir(t);
  const image = join(dir, 'j.vhdx');
  await createVhdx(image, { size: 8 * MiB, type: 'dynamic', blockSize: MiB });
  const { file, layout, journal, calls } = await journalOver(image);
  try {
    journal.markDirty(await allocateBlock(file, layout, 0x3d));
    await journal.commit();
    const h = layout.current.header;
    assert.deepEqual(calls, [
      { op: 'sync' },
      { op: 'write', at: h.logOffset },
      { op: 'sync' },
      { op: 'write', at: layout.bat.regionOffset },
      { op: 'sync' },
    ]);
    // A second commit with nothing dirty writes nothing.
    calls.length = 0;
    await journal.commit();
    assert.deepEqual(calls, []);
  } finally {
    await file.close();
  }
});

test('a crash between log and apply is repaired by replay, in hvkit and in qemu', async (t) => {
  const dir = await tempDir(t);
  const image = join(dir, 'crash.vhdx');
  await createVhdx(image, { size: 8 * MiB, type: 'dynamic', blockSize: MiB });
  const { file, layout, journal } = await journalOver(
    image,
    (at) => at >= BAT_OFFSET && at < BAT_OFFSET + MiB,
  );
  try {
    journal.markDirty(await allocateBlock(file, layout, 0x5b));
    await assert.rejects(journal.commit(), /simulated crash/);
  } finally {
    await file.close();
  }
  // On disk: the BAT still says block 2 is absent; the log holds the change.
  const bat = new DataView((await readFile(image)).buffer).getBigUint64(BAT_OFFSET + 16, true);
  assert.equal(bat & 7n, 0n);

  const byQemu = join(dir, 'qemu.vhdx');
  await copyFile(image, byQemu);
  await qemuImg('check', '-r', 'all', '-f', 'vhdx', byQemu);
  const raw = join(dir, 'qemu.raw');
  await qemuImg('convert', '-f', 'vhdx', '-O', 'raw', byQemu, raw);
  const expected = new Uint8Array(await readFile(raw));
  assert.ok(expected.subarray(2 * MiB, 3 * MiB).every((b) => b === 0x5b));

  const disk = await VhdxDisk.open(image);
  try {
    assert.deepEqual(disk.layout.replayed, { entries: 1, inMemory: false });
    const got = new Uint8Array(8 * MiB);
    await disk.read(0, got);
    assert.deepEqual(got, expected);
  } finally {
    await disk.close();
  }
  await qemuImg('check', '-f', 'vhdx', image);
});
