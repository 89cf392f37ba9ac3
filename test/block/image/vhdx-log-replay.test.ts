import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { copyFile, open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { ImageFormatError } from '../../../src/block/block-device.ts';
import { checkImage } from '../../../src/block/image/check.ts';
import { inspectImage } from '../../../src/block/image/inspect.ts';
import { VhdxDisk } from '../../../src/block/image/vhdx/vhdx-disk.ts';
import { guidToBytes, NULL_GUID } from '../../../src/wire/index.ts';
import { run, tempDir } from '../../real-tools.ts';
import { firstDifference, MiB, readAll } from './content.ts';
import { qemuImg } from './qemu.ts';

/**
 * A VHDX with a pending log, built here byte by byte (independently of the
 * log writer under test): a new payload block is appended to the file and a
 * single log entry changes the BAT to point at it, with LogGuid set in both
 * headers. qemu replays a copy (`qemu-img check -r all`); hvkit must read the
 * same after its own replay.
 */

/** Bitwise CRC-32C, kept separate from the table-driven one under test. */
function crc32c(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const b of bytes) {
    crc ^= b;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

function withChecksum(block: Uint8Array, at: number): Uint8Array {
  const view = new DataView(block.buffer, block.byteOffset, block.byteLength);
  view.setUint32(at, 0, true);
  view.setUint32(at, crc32c(block), true);
  return block;
}

const BAT_REGION = guidToBytes('2dc27766-f623-4200-9d64-115e9bfd4a08');

async function buildPendingLog(path: string): Promise<{ pattern: number; block: number }> {
  const handle = await open(path, 'r+');
  try {
    const read = async (offset: number, length: number) => {
      const b = new Uint8Array(length);
      await handle.read(b, 0, length, offset);
      return b;
    };
    // Region table 1: find the BAT.
    const regions = await read(192 * 1024, 64 * 1024);
    const rv = new DataView(regions.buffer);
    let batOffset = -1;
    for (let i = 0; i < rv.getUint32(8, true); i++) {
      const e = 16 + i * 32;
      if (Buffer.from(regions.subarray(e, e + 16)).equals(Buffer.from(BAT_REGION))) {
        batOffset = Number(rv.getBigUint64(e + 16, true));
      }
    }
    assert.ok(batOffset > 0, 'BAT region not found');

    // The current header (highest sequence number) gives the log's place.
    const headers = [await read(64 * 1024, 4096), await read(128 * 1024, 4096)];
    const seq = headers.map((h) => new DataView(h.buffer).getBigUint64(8, true));
    const currentSlot = seq[0]! > seq[1]! ? 0 : 1;
    const current = headers[currentSlot]!;
    const hv = new DataView(current.buffer);
    const logLength = hv.getUint32(68, true);
    const logOffset = Number(hv.getBigUint64(72, true));
    const top = seq[currentSlot]!;

    // A new 1 MiB payload block at the 1 MiB-aligned end of the file.
    const size = (await handle.stat()).size;
    const blockOffset = Math.ceil(size / MiB) * MiB;
    const pattern = 0xc7;
    await handle.write(new Uint8Array(MiB).fill(pattern), 0, MiB, blockOffset);
    const fileSize = blockOffset + MiB;

    // The BAT sector with payload block 3 set FULLY_PRESENT (6) at the new block.
    const block = 3;
    const batSector = await read(batOffset, 4096);
    new DataView(batSector.buffer).setBigUint64(
      block * 8,
      (BigInt(blockOffset / MiB) << 20n) | 6n,
      true,
    );

    const logGuid = crypto.randomUUID();
    const entry = new Uint8Array(8192);
    const ev = new DataView(entry.buffer);
    ev.setUint32(0, 0x65676f6c, true); // "loge"
    ev.setUint32(8, entry.length, true);
    ev.setUint32(12, 0, true); // tail: this entry
    ev.setBigUint64(16, 1n, true); // sequence number
    ev.setUint32(24, 1, true); // one descriptor
    entry.set(guidToBytes(logGuid), 32);
    ev.setBigUint64(48, BigInt(fileSize), true); // FlushedFileOffset
    ev.setBigUint64(56, BigInt(fileSize), true); // LastFileOffset
    // Data descriptor at 64: "desc", trailing 4 bytes, leading 8 bytes, offset, sequence.
    ev.setUint32(64, 0x63736564, true);
    entry.set(batSector.subarray(4092, 4096), 68);
    entry.set(batSector.subarray(0, 8), 72);
    ev.setBigUint64(80, BigInt(batOffset), true);
    ev.setBigUint64(88, 1n, true);
    // Data sector: "data", sequence high, bytes 8..4091, sequence low.
    ev.setUint32(4096, 0x61746164, true);
    ev.setUint32(4100, 0, true);
    entry.set(batSector.subarray(8, 4092), 4104);
    ev.setUint32(8188, 1, true);
    withChecksum(entry, 4);
    await handle.write(entry, 0, entry.length, logOffset);
    assert.equal(logLength >= entry.length, true);

    // Both headers carry the LogGuid; sequence numbers keep increasing.
    for (const [i, at] of [64 * 1024, 128 * 1024].entries()) {
      const h = current.slice();
      const v = new DataView(h.buffer);
      v.setBigUint64(8, top + 1n + BigInt(i), true);
      h.set(guidToBytes(logGuid), 48);
      withChecksum(h, 4);
      await handle.write(h, 0, h.length, at);
    }
    return { pattern, block };
  } finally {
    await handle.close();
  }
}

async function sha(path: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(path))
    .digest('hex');
}

test('a pending log is replayed on a writable open and reads what qemu-img check -r all yields', async (t) => {
  const dir = await tempDir(t);
  const image = join(dir, 'pending.vhdx');
  await qemuImg('create', '-f', 'vhdx', '-o', 'block_size=1M', image, '8M');
  const { pattern, block } = await buildPendingLog(image);

  // qemu refuses a read-only open of it: proof that the log is pending and valid to qemu.
  const refused = await run('qemu-img', ['info', '-f', 'vhdx', image]);
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /log that needs to be replayed/);

  const byQemu = join(dir, 'qemu-copy.vhdx');
  await copyFile(image, byQemu);
  await qemuImg('check', '-r', 'all', '-f', 'vhdx', byQemu);
  const expectedRaw = join(dir, 'expected.raw');
  await qemuImg('convert', '-f', 'vhdx', '-O', 'raw', byQemu, expectedRaw);
  const expected = new Uint8Array(await readFile(expectedRaw));
  assert.ok(expected.subarray(block * MiB, (block + 1) * MiB).every((b) => b === pattern));

  const disk = await VhdxDisk.open(image);
  try {
    assert.deepEqual(disk.layout.replayed, { entries: 1, inMemory: false });
    assert.equal(disk.guids.log, NULL_GUID);
    const at = firstDifference(await readAll(disk), expected);
    assert.equal(at, -1, `first difference at ${at}`);
  } finally {
    await disk.close();
  }
  // The replayed file is clean for qemu too, and equal to qemu's replay.
  await qemuImg('check', '-f', 'vhdx', image);
  await qemuImg('compare', '-f', 'vhdx', '-F', 'vhdx', image, byQemu);
});

test('a read-only open replays the log in memory and leaves the file untouched', async (t) => {
  const dir = await tempDir(t);
  const image = join(dir, 'pending.vhdx');
  await qemuImg('create', '-f', 'vhdx', '-o', 'block_size=1M', image, '8M');
  const { pattern, block } = await buildPendingLog(image);
  const before = await sha(image);

  const disk = await VhdxDisk.open(image, { readOnly: true });
  try {
    assert.deepEqual(disk.layout.replayed, { entries: 1, inMemory: true });
    const got = await readAll(disk);
    assert.ok(got.subarray(block * MiB, (block + 1) * MiB).every((b) => b === pattern));
    assert.ok(got.subarray(0, block * MiB).every((b) => b === 0));
  } finally {
    await disk.close();
  }
  assert.equal(await sha(image), before);

  await assert.rejects(VhdxDisk.open(image, { readOnly: true, readOnlyReplay: 'refuse' }), (e) => {
    assert.ok(e instanceof ImageFormatError);
    assert.equal(e.structure, 'VHDX log');
    assert.match(e.message, /pending log \(1 entries\) that must be replayed/);
    return true;
  });
});

test('a log entry with a bad checksum is not replayed', async (t) => {
  const dir = await tempDir(t);
  const image = join(dir, 'torn.vhdx');
  await qemuImg('create', '-f', 'vhdx', '-o', 'block_size=1M', image, '8M');
  const { block } = await buildPendingLog(image);
  // Tear the entry: flip a byte of its data sector (log at 1 MiB in qemu's layout).
  const handle = await open(image, 'r+');
  const b = new Uint8Array(1);
  await handle.read(b, 0, 1, MiB + 4096 + 100);
  b[0] = b[0]! ^ 0xff;
  await handle.write(b, 0, 1, MiB + 4096 + 100);
  await handle.close();
  const disk = await VhdxDisk.open(image, { readOnly: true });
  try {
    assert.equal(disk.layout.replayed, null);
    const got = new Uint8Array(MiB);
    await disk.read(block * MiB, got);
    assert.ok(got.every((x) => x === 0));
  } finally {
    await disk.close();
  }
});

test('check reports a pending log as a corruption; check --repair replays it', async (t) => {
  const dir = await tempDir(t);
  const image = join(dir, 'pending.vhdx');
  await qemuImg('create', '-f', 'vhdx', '-o', 'block_size=1M', image, '8M');
  const { pattern, block } = await buildPendingLog(image);
  assert.equal((await inspectImage(image))['dirty-flag'], true);

  const before = await checkImage(image);
  assert.equal(before.corruptions.length, 1);
  assert.match(before.corruptions[0]!, /pending log \(1 entries\)/);

  const repaired = await checkImage(image, { repair: true });
  assert.deepEqual(repaired.corruptions, []);
  assert.deepEqual(repaired.repaired, ['replayed the pending log (1 entries)']);
  assert.equal((await inspectImage(image))['dirty-flag'], false);
  const disk = await VhdxDisk.open(image, { readOnly: true });
  try {
    const got = new Uint8Array(MiB);
    await disk.read(block * MiB, got);
    assert.ok(got.every((b) => b === pattern));
  } finally {
    await disk.close();
  }
});
