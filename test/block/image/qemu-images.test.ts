import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { detectFormat, openImage } from '../../../src/block/image/open.ts';
import { tempDir } from '../../real-tools.ts';
import { firstDifference, MiB, randomContent, readAll, writeSparse } from './content.ts';
import { qemuImg, qemuInfo, qemuIo } from './qemu.ts';

/**
 * Images made by qemu-img open in hvkit and read exactly what
 * `qemu-img convert -O raw` makes of them.
 */

async function expectSameAsQemu(
  image: string,
  format: 'vhdx' | 'vhd',
  qemuFormat: string,
  dir: string,
) {
  const expectedPath = join(dir, `${qemuFormat}-expected.raw`);
  await qemuImg('convert', '-f', qemuFormat, '-O', 'raw', image, expectedPath);
  const expected = new Uint8Array(await readFile(expectedPath));
  assert.equal(await detectFormat(image), format);
  const disk = await openImage(image, { readOnly: true });
  try {
    assert.equal(disk.format, format);
    assert.equal(disk.size, (await qemuInfo(image, qemuFormat))['virtual-size']);
    const got = await readAll(disk);
    assert.equal(got.length, expected.length);
    const at = firstDifference(got, expected);
    assert.equal(at, -1, `${image}: first difference at byte ${at}`);
  } finally {
    await disk.close();
  }
}

const SIZE = 24 * MiB;

test('qemu-img convert to dynamic VHDX (qemu default and 1 MiB blocks) reads identically', async (t) => {
  const dir = await tempDir(t);
  const raw = join(dir, 'source.raw');
  await writeSparse(raw, randomContent(SIZE));
  for (const options of ['subformat=dynamic', 'subformat=dynamic,block_size=1M']) {
    const image = join(dir, `dynamic-${options.length}.vhdx`);
    await qemuImg('convert', '-f', 'raw', '-O', 'vhdx', '-o', options, raw, image);
    await expectSameAsQemu(image, 'vhdx', 'vhdx', dir);
  }
});

test('qemu-img convert to fixed VHDX with block_state_zero=off reads identically', async (t) => {
  const dir = await tempDir(t);
  const raw = join(dir, 'source.raw');
  await writeSparse(raw, randomContent(SIZE));
  const image = join(dir, 'fixed.vhdx');
  await qemuImg(
    'convert',
    '-f',
    'raw',
    '-O',
    'vhdx',
    '-o',
    'subformat=fixed,block_state_zero=off,block_size=2M',
    raw,
    image,
  );
  await expectSameAsQemu(image, 'vhdx', 'vhdx', dir);
});

test('a qemu VHDX with zero-state blocks, written by qemu-io, reads identically', async (t) => {
  const dir = await tempDir(t);
  const image = join(dir, 'zero-state.vhdx');
  // block_state_zero defaults to on: every BAT entry starts as PAYLOAD_BLOCK_ZERO.
  await qemuImg('create', '-f', 'vhdx', '-o', 'block_size=1M', image, '16M');
  await qemuIo(
    '-f',
    'vhdx',
    '-c',
    'write -P 0xa5 0 64k',
    '-c',
    'write -P 0x3c 1536k 1M',
    '-c',
    'write -P 0x77 7M 4k',
    '-c',
    'write -P 0x11 15M 1M',
    image,
  );
  await expectSameAsQemu(image, 'vhdx', 'vhdx', dir);
  const disk = await openImage(image, { readOnly: true });
  try {
    const probe = new Uint8Array(4096);
    await disk.read(7 * MiB, probe);
    assert.ok(probe.every((b) => b === 0x77));
  } finally {
    await disk.close();
  }
});

test('qemu-img convert to VHD fixed and dynamic with force_size=on reads identically', async (t) => {
  const dir = await tempDir(t);
  const raw = join(dir, 'source.raw');
  // Not a CHS product: force_size keeps the exact size in the footer.
  const size = SIZE - 3 * 512;
  await writeSparse(raw, randomContent(size));
  for (const subformat of ['fixed', 'dynamic']) {
    const image = join(dir, `${subformat}.vhd`);
    await qemuImg(
      'convert',
      '-f',
      'raw',
      '-O',
      'vpc',
      '-o',
      `subformat=${subformat},force_size=on`,
      raw,
      image,
    );
    assert.equal((await qemuInfo(image, 'vpc'))['virtual-size'], size);
    await expectSameAsQemu(image, 'vhd', 'vpc', dir);
  }
});

test('a qemu dynamic VHD written by qemu-io reads identically', async (t) => {
  const dir = await tempDir(t);
  const image = join(dir, 'written.vhd');
  await qemuImg('create', '-f', 'vpc', '-o', 'subformat=dynamic,force_size=on', image, '10M');
  await qemuIo('-f', 'vpc', '-c', 'write -P 0x5e 3M 5k', '-c', 'write -P 0x61 9M 1M', image);
  await expectSameAsQemu(image, 'vhd', 'vpc', dir);
});
