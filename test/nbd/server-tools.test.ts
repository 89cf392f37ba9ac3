import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, it, type TestContext } from 'node:test';
import type { BlockDevice } from '../../src/block/block-device.ts';
import { openImage } from '../../src/block/image/open.ts';
import { NbdServer } from '../../src/nbd/server/server.ts';
import { requireTools, run, runOk, tempDir } from '../real-tools.ts';
import { patternBytes, startServer } from './nbd-fixtures.ts';

/**
 * hvkit's NBD server against the real tools: nbdinfo, nbdcopy, qemu-io,
 * qemu-img compare and fio's nbd engine, over a raw image file opened with
 * openImage (the same path `hvkit disk serve` takes).
 */

const MiB = 1024 * 1024;

/** A raw image opened with openImage; the caller closes it after the servers using it. */
async function rawImage(dir: string, size: number) {
  const path = join(dir, 'disk.raw');
  await writeFile(path, new Uint8Array(size));
  const device = await openImage(path, { format: 'raw' });
  return { path, device };
}

/** Serves `device`; after-hooks run in order, so the server stops before the image closes. */
async function serve(t: TestContext, device: BlockDevice, readOnly = false) {
  const served = await startServer(t, {
    exports: [{ name: 'disk', device, readOnly, description: 'raw image' }],
  });
  t.after(() => device.close().catch(() => {}));
  return served;
}

describe('NBD server with the real tools', () => {
  before(() => {
    requireTools('nbdinfo', 'nbdcopy', 'qemu-io', 'qemu-img', 'fio');
  });

  it('nbdinfo --json sees size, flush, trim, zero, and read-only', async (t) => {
    const dir = await tempDir(t);
    const { device } = await rawImage(dir, 8 * MiB);
    const { socket } = await serve(t, device);
    const info = JSON.parse(
      await runOk('nbdinfo', ['--json', `nbd+unix:///disk?socket=${socket}`]),
    );
    assert.equal(info.protocol, 'newstyle-fixed');
    assert.equal(info.structured, true);
    const e = info.exports[0];
    assert.equal(e['export-size'], 8 * MiB);
    assert.equal(e.can_flush, true);
    assert.equal(e.can_trim, true);
    assert.equal(e.can_zero, true);
    assert.equal(e.can_fua, true);
    assert.equal(e.is_read_only, false);
    assert.equal(e.block_size_minimum, 512);
    assert.equal(e.description, 'raw image');

    const ro = await serve(t, device, true);
    const roInfo = JSON.parse(
      await runOk('nbdinfo', ['--json', `nbd+unix:///?socket=${ro.socket}`]),
    );
    assert.equal(roInfo.exports[0].is_read_only, true);
    assert.equal(roInfo.exports[0].can_trim, false);
  });

  it('nbdinfo over loopback TCP', async (t) => {
    const dir = await tempDir(t);
    const { device } = await rawImage(dir, 4 * MiB);
    const server = new NbdServer({ exports: [{ name: 'disk', device }] });
    const where = await server.listen({ port: 0 });
    t.after(async () => {
      await server.close();
      await device.close();
    });
    assert.equal(where.address.transport, 'tcp');
    assert.match(where.uri, /^nbd:\/\/127\.0\.0\.1:\d+\/$/);
    const out = await runOk('nbdinfo', ['--size', where.uri]);
    assert.equal(out.trim(), String(4 * MiB));
  });

  it('nbdcopy copies a random file in and out unchanged; qemu-img compare agrees', async (t) => {
    const dir = await tempDir(t);
    const source = join(dir, 'source.bin');
    const back = join(dir, 'back.bin');
    const contents = patternBytes(16 * MiB, 42);
    contents.fill(0, 3 * MiB, 5 * MiB); // a zero run, which nbdcopy may send as WRITE_ZEROES
    await writeFile(source, contents);
    const { device } = await rawImage(dir, 16 * MiB);
    const { socket } = await serve(t, device);
    const uri = `nbd+unix:///disk?socket=${socket}`;
    await runOk('nbdcopy', [source, uri]);
    await runOk('nbdcopy', [uri, back]);
    assert.ok(Buffer.from(contents).equals(await readFile(back)), 'round trip differs');
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', source, uri]);
    assert.equal(cmp.code, 0, cmp.stdout + cmp.stderr);
    assert.match(cmp.stdout, /Images are identical/);
    // And a difference is seen as one.
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 1M 4k', uri]);
    const diff = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', source, uri]);
    assert.equal(diff.code, 1, diff.stdout + diff.stderr);
  });

  it('qemu-io pattern writes, reads, write -z and discard', async (t) => {
    const dir = await tempDir(t);
    const { device } = await rawImage(dir, 8 * MiB);
    const { socket } = await serve(t, device);
    const uri = `nbd+unix:///?socket=${socket}`;
    const out = await runOk('qemu-io', [
      '-f',
      'raw',
      '-c',
      'write -P 0xab 0 1M',
      '-c',
      'write -P 0xcd 1M 64k',
      '-c',
      'write -P 0xef -f 2M 4k',
      '-c',
      'aio_write -P 0x5a 3M 64k',
      '-c',
      'aio_write -P 0x5b 4M 64k',
      '-c',
      'aio_flush',
      '-c',
      'read -P 0xab 0 1M',
      '-c',
      'read -P 0xcd 1M 64k',
      '-c',
      'read -P 0xef 2M 4k',
      '-c',
      'read -P 0x5a 3M 64k',
      '-c',
      'read -P 0x5b 4M 64k',
      '-c',
      'write -z 512k 64k',
      '-c',
      'read -P 0 512k 64k',
      '-c',
      'read -P 0xab 576k 64k',
      '-c',
      'discard 1M 64k',
      '-c',
      'read -P 0 1M 64k',
      '-c',
      'flush',
      uri,
    ]);
    assert.doesNotMatch(out, /verification failed|error|failed/i, out);
    assert.equal((out.match(/^read \d+\/\d+ bytes/gm) ?? []).length, 8);
    // What qemu-io wrote is on the image.
    const probe = new Uint8Array(4096);
    await device.read(2 * MiB, probe);
    assert.ok(probe.every((b) => b === 0xef));
  });

  for (const [format, create] of [
    ['raw', ['-f', 'raw']],
    ['vhdx', ['-f', 'vhdx', '-o', 'subformat=dynamic']],
    ['vhd', ['-f', 'vpc', '-o', 'subformat=dynamic,force_size=on']],
  ] as const) {
    it(`fio --ioengine=nbd random writes verify with crc32c over ${format}, two connections; qemu reads the result as hvkit does`, async (t) => {
      const dir = await tempDir(t);
      const image = join(dir, `disk.${format}`);
      await runOk('qemu-img', ['create', ...create, image, '32M']);
      const device = await openImage(image, { format });
      assert.equal(device.format, format);
      const { server, socket } = await startServer(t, { exports: [{ name: '', device }] });
      t.after(() => device.close().catch(() => {}));
      const out = await runOk(
        'fio',
        [
          '--name=verify',
          '--ioengine=nbd',
          `--uri=nbd+unix:///?socket=${socket}`,
          '--rw=randwrite',
          '--bs=4k',
          '--iodepth=32',
          '--size=8M',
          '--numjobs=2',
          '--offset_increment=16M',
          '--verify=crc32c',
          '--do_verify=1',
          '--verify_fatal=1',
          '--verify_state_save=0',
          '--group_reporting',
        ],
        120_000,
      );
      assert.doesNotMatch(out, /verify: bad|crc32c: verify failed|err=\s*[1-9]/, out);
      assert.match(out, /WRITE: bw=/);
      assert.match(out, /READ: bw=/, 'the verify pass read everything back');
      await server.close();
      await device.close();
      if (format !== 'raw') {
        // The image our backend wrote through NBD is one qemu reads as we do:
        // qemu-img check where qemu has one (VHDX; it has none for VHD), and
        // for both, qemu's raw conversion equals hvkit's own read of the image.
        const qemuFormat = format === 'vhd' ? 'vpc' : format;
        if (format === 'vhdx') {
          const check = await run('qemu-img', ['check', '-f', qemuFormat, image]);
          assert.equal(check.code, 0, check.stdout + check.stderr);
        }
        const converted = join(dir, 'qemu.raw');
        await runOk('qemu-img', ['convert', '-f', qemuFormat, '-O', 'raw', image, converted]);
        const again = await openImage(image, { readOnly: true });
        try {
          const ours = new Uint8Array(again.size);
          for (let at = 0; at < ours.length; at += MiB) {
            await again.read(at, ours.subarray(at, Math.min(ours.length, at + MiB)));
          }
          const theirs = new Uint8Array(await readFile(converted));
          assert.equal(theirs.length, ours.length, 'qemu sees the same size');
          assert.ok(Buffer.from(theirs).equals(Buffer.from(ours)), 'qemu reads what hvkit reads');
          assert.ok(
            ours.some((b) => b !== 0),
            'fio wrote data',
          );
        } finally {
          await again.close();
        }
      }
    });
  }
});
