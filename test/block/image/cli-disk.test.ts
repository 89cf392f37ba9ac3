import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { open, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { checkImage } from '../../../src/block/image/check.ts';
import { openImage } from '../../../src/block/image/open.ts';
import { createVhd } from '../../../src/block/image/vhd/create.ts';
import { createVhdx } from '../../../src/block/image/vhdx/create.ts';
import { hvkit } from '../../cli/hvkit.ts';
import { tempDir } from '../../real-tools.ts';
import { MiB } from './content.ts';
import { qemuImg, qemuInfo } from './qemu.ts';

/** `hvkit disk ...` as a user runs it: a child process, exit codes and output. */

const hvkitDisk = (...args: string[]) => hvkit(['disk', ...args], { timeoutMs: 120_000 });

test('create: formats, sizes with units, refusal to overwrite, bad input', async (t) => {
  const dir = await tempDir(t);
  const [vhdx, vhd, raw, fixed] = await Promise.all([
    hvkitDisk('create', join(dir, 'a.vhdx'), '64M', '--block-size', '1M'),
    hvkitDisk('create', '-f', 'vhd', join(dir, 'b.disk'), '10G'),
    hvkitDisk('create', join(dir, 'c.img'), '1048576'),
    hvkitDisk(
      'create',
      join(dir, 'd.vhdx'),
      '8M',
      '--type',
      'fixed',
      '--logical-sector',
      '4096',
      '--block-size',
      '1M',
    ),
  ]);
  for (const r of [vhdx, vhd, raw, fixed]) assert.equal(r.code, 0, r.stderr);
  assert.match(
    vhdx.stdout,
    /^Formatting '.*a\.vhdx', fmt=vhdx size=67108864 type=dynamic block_size=1048576$/m,
  );
  assert.equal((await qemuInfo(join(dir, 'a.vhdx')))['virtual-size'], 64 * MiB);
  assert.equal((await qemuInfo(join(dir, 'b.disk'), 'vpc'))['virtual-size'], 10 * 1024 * MiB);
  assert.equal((await stat(join(dir, 'd.vhdx'))).size, 12 * MiB);

  const before = await stat(join(dir, 'a.vhdx'));
  const again = await hvkitDisk('create', join(dir, 'a.vhdx'), '1G');
  assert.equal(again.code, 1);
  assert.match(again.stderr, /already exists; refusing to overwrite it/);
  assert.deepEqual((await stat(join(dir, 'a.vhdx'))).mtimeMs, before.mtimeMs);

  const [badSize, badFormat, badBlock] = await Promise.all([
    hvkitDisk('create', join(dir, 'x.vhdx'), '12Q'),
    hvkitDisk('create', '-f', 'qcow2', join(dir, 'x.img'), '1M'),
    hvkitDisk('create', join(dir, 'x.vhdx'), '8M', '--block-size', '3M'),
  ]);
  for (const r of [badSize, badFormat, badBlock]) assert.notEqual(r.code, 0);
  assert.match(badSize.stderr, /"12Q" is not a size/);
  assert.match(badFormat.stderr, /"qcow2" is not a format/);
  assert.match(badBlock.stderr, /block size 3145728 is not a power of two/);
  await assert.rejects(stat(join(dir, 'x.vhdx')), { code: 'ENOENT' });
});

test('info --json agrees with qemu-img info --output=json; human output; parent chain', async (t) => {
  const dir = await tempDir(t);
  const image = join(dir, 'q.vhdx');
  await qemuImg('create', '-f', 'vhdx', '-o', 'block_size=2M', image, '20M');
  const vhd = join(dir, 'q.vhd');
  await qemuImg('create', '-f', 'vpc', '-o', 'subformat=dynamic,force_size=on', vhd, '9M');
  for (const [path, qemuFormat, ours] of [
    [image, 'vhdx', 'vhdx'],
    [vhd, 'vpc', 'vhd'],
  ] as const) {
    const r = await hvkitDisk('info', '--json', path);
    assert.equal(r.code, 0, r.stderr);
    const mine = JSON.parse(r.stdout) as Record<string, unknown>;
    const theirs = await qemuInfo(path, qemuFormat);
    assert.equal(mine.format, ours);
    for (const key of ['virtual-size', 'cluster-size', 'actual-size', 'dirty-flag']) {
      assert.equal(mine[key], theirs[key], `${path}: ${key}`);
    }
  }

  const child = join(dir, 'child.vhdx');
  await createVhdx(child, { type: 'differencing', parent: image });
  const human = await hvkitDisk('info', child);
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, /^file format: vhdx$/m);
  assert.match(human.stdout, /^virtual size: 20 MiB \(20971520 bytes\)$/m);
  assert.match(human.stdout, /^backing file: q\.vhdx /m);
  assert.match(human.stdout, /type: differencing/);
  assert.match(human.stdout, /parent_linkage \{[0-9A-F-]{36}\}/);
  assert.match(human.stdout, new RegExp(`^image: ${image}$`, 'm'));

  const missing = await hvkitDisk('info', join(dir, 'nope.vhdx'));
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /cannot open .*nope\.vhdx/);
});

test('check: exit 0 clean, 2 corrupt, 3 leaks only, 63 raw; --repair fixes', async (t) => {
  const dir = await tempDir(t);
  const clean = join(dir, 'clean.vhdx');
  await createVhdx(clean, { size: 8 * MiB, type: 'dynamic', blockSize: MiB });

  const corrupt = join(dir, 'corrupt.vhdx');
  await createVhdx(corrupt, { size: 8 * MiB, type: 'dynamic', blockSize: MiB });
  const h = await open(corrupt, 'r+');
  await h.write(new Uint8Array([0xee]), 0, 1, 64 * 1024 + 200); // header 1
  await h.close();

  const leaky = join(dir, 'leaky.vhd');
  await createVhd(leaky, { size: 4 * MiB, type: 'dynamic' });
  {
    // Push the footer 1 MiB further: the space before it is leaked.
    const f = await open(leaky, 'r+');
    const size = (await f.stat()).size;
    const footer = new Uint8Array(512);
    await f.read(footer, 0, 512, size - 512);
    await f.write(new Uint8Array(512), 0, 512, size - 512);
    await f.write(footer, 0, 512, size - 512 + MiB);
    await f.close();
  }
  const raw = join(dir, 'plain.img');
  await writeFile(raw, Buffer.alloc(4096));

  const [c0, c2, c3, c63] = await Promise.all([
    hvkitDisk('check', clean),
    hvkitDisk('check', corrupt),
    hvkitDisk('check', leaky),
    hvkitDisk('check', raw),
  ]);
  assert.equal(c0.code, 0, c0.stdout + c0.stderr);
  assert.match(c0.stdout, /No errors were found on the image\./);
  assert.equal(c2.code, 2, c2.stdout + c2.stderr);
  assert.match(c2.stdout, /ERROR: header 1: CRC-32C mismatch/);
  assert.match(c2.stdout, /1 errors were found on the image\./);
  assert.equal(c3.code, 3, c3.stdout + c3.stderr);
  assert.match(c3.stdout, /1048576 bytes of leaked space were found/);
  assert.equal(c63.code, 63);
  assert.match(c63.stderr, /does not support checks/);

  const [r2, r3] = await Promise.all([
    hvkitDisk('check', '--repair', corrupt),
    hvkitDisk('check', '-r', leaky),
  ]);
  assert.equal(r2.code, 0, r2.stdout + r2.stderr);
  assert.match(r2.stdout, /Repaired: rewrote header 1/);
  assert.equal(r3.code, 0, r3.stdout + r3.stderr);
  assert.match(r3.stdout, /Repaired: trimmed 1048576 unused bytes/);
  for (const path of [corrupt, leaky]) {
    const report = await checkImage(path);
    assert.deepEqual([report.corruptions, report.leaks], [[], []]);
  }
  assert.equal((await qemuInfo(leaky, 'vpc'))['virtual-size'], 4 * MiB);
});

test('convert and compare: formats round trip; compare exit codes and first offset', async (t) => {
  const dir = await tempDir(t);
  const source = join(dir, 'source.vhdx');
  await createVhdx(source, { size: 6 * MiB, type: 'dynamic', blockSize: MiB });
  const data = randomBytes(MiB);
  const disk = await openImage(source);
  await disk.write(2 * MiB, data);
  await disk.close();

  const [toVhd, toRaw] = await Promise.all([
    hvkitDisk('convert', source, join(dir, 'out.vhd'), '-O', 'vhd', '--type', 'fixed'),
    hvkitDisk('convert', '-f', 'vhdx', source, join(dir, 'out.raw'), '-O', 'raw'),
  ]);
  assert.equal(toVhd.code, 0, toVhd.stderr);
  assert.equal(toRaw.code, 0, toRaw.stderr);
  await qemuImg('compare', '-f', 'vhdx', '-F', 'vpc', source, join(dir, 'out.vhd'));
  await qemuImg('compare', '-f', 'vhdx', '-F', 'raw', source, join(dir, 'out.raw'));
  const same = await hvkitDisk('compare', source, join(dir, 'out.vhd'));
  assert.equal(same.code, 0, same.stdout + same.stderr);
  assert.match(same.stdout, /Images are identical\./);

  const changed = await openImage(join(dir, 'out.vhd'));
  await changed.write(3 * MiB - 512, new Uint8Array(512).fill(1));
  await changed.close();
  const differ = await hvkitDisk('compare', source, join(dir, 'out.vhd'));
  assert.equal(differ.code, 1);
  const expectedOffset =
    3 * MiB - 512 + new Uint8Array(data.subarray(MiB - 512)).findIndex((b) => b !== 1);
  assert.match(differ.stdout, new RegExp(`Content mismatch at offset ${expectedOffset}!`));

  const [missing, badArgs, exists] = await Promise.all([
    hvkitDisk('compare', source, join(dir, 'nope.vhdx')),
    hvkitDisk('compare', source),
    hvkitDisk('convert', source, join(dir, 'out.raw'), '-O', 'raw'),
  ]);
  assert.equal(missing.code, 2);
  assert.equal(badArgs.code, 2);
  assert.equal(exists.code, 1);
  assert.match(exists.stderr, /already exists; refusing to overwrite it/);
});
