import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFile, open, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { openImage } from '../../../src/block/image/open.ts';
import { connectNbd } from '../../../src/nbd/client/client.ts';
import { requireTools, run, runOk, tempDir } from '../../real-tools.ts';
import { bootVm, guestController } from './running-vm.ts';

const MiB = 1024 * 1024;

async function readAt(path: string, offset: number, length: number): Promise<Uint8Array> {
  const file = await open(path, 'r');
  try {
    const out = new Uint8Array(length);
    await file.read(out, 0, length, offset);
    return out;
  } finally {
    await file.close();
  }
}

describe('data safety across a killed VM', () => {
  it('keeps flushed and FUA writes after kill -9; the reopened VHDX is clean', async (t) => {
    requireTools('qemu-img');
    const dir = await tempDir(t);
    const vhdx = join(dir, 'disk.vhdx');
    const raw = join(dir, 'data.raw');
    await runOk('qemu-img', ['create', '-q', '-f', 'vhdx', vhdx, '64M']);
    await writeFile(raw, '');
    await truncate(raw, 16 * MiB);
    const vm = await bootVm(t, dir, {
      name: 'crash',
      devices: [
        {
          type: 'scsi',
          disks: [
            { path: vhdx, lun: 0 },
            { path: raw, lun: 1 },
          ],
          export: { socket_dir: dir },
        },
      ],
    });
    const disks = guestController(await vm.status()).disks;
    const vhdxClient = await connectNbd(disks[0]!.uri!);
    const rawClient = await connectNbd(disks[1]!.uri!);
    // New blocks of the dynamic VHDX (its BAT changes), then FLUSH.
    const a = randomBytes(4 * MiB + 4096);
    const b = randomBytes(MiB);
    await Promise.all([vhdxClient.write(5 * MiB, a), vhdxClient.write(40 * MiB, b)]);
    await vhdxClient.flush();
    // A FUA write on the raw disk.
    const c = randomBytes(MiB);
    await rawClient.write(3 * MiB, c, { fua: true });

    vm.kill('SIGKILL');
    const exit = await vm.exit;
    assert.equal(exit.signal, 'SIGKILL');
    await vhdxClient.close().catch(() => {});
    await rawClient.close().catch(() => {});

    // A VHDX written to at the crash keeps its metadata log active (as Hyper-V's do):
    // qemu-img refuses a read-only check until the log is replayed, and its repair replays it.
    const pending = await run('qemu-img', ['check', vhdx]);
    assert.match(pending.stdout + pending.stderr, /contains a log that needs to be replayed/);
    const qemuCopy = join(dir, 'qemu-repair.vhdx');
    await copyFile(vhdx, qemuCopy);
    const repaired = await run('qemu-img', ['check', '-r', 'all', qemuCopy]);
    assert.equal(repaired.code, 0, `qemu-img check -r all: ${repaired.stdout}${repaired.stderr}`);
    assert.match(repaired.stdout, /No errors were found/);
    // Reopened (as the next boot would), the log is replayed and the image is clean.
    const reopened = await openImage(vhdx);
    const head = new Uint8Array(4096);
    await reopened.read(5 * MiB, head);
    assert.deepEqual(head, new Uint8Array(a.subarray(0, 4096)));
    await reopened.close();
    const check = await run('qemu-img', ['check', vhdx]);
    assert.equal(check.code, 0, `qemu-img check after reopening: ${check.stdout}${check.stderr}`);
    assert.match(check.stdout, /No errors were found/);
    const copy = join(dir, 'copy.raw');
    await runOk('qemu-img', ['convert', '-O', 'raw', vhdx, copy]);
    assert.deepEqual(await readAt(copy, 5 * MiB, a.length), new Uint8Array(a));
    assert.deepEqual(await readAt(copy, 40 * MiB, b.length), new Uint8Array(b));
    assert.ok(
      (await readAt(copy, 0, MiB)).every((x) => x === 0),
      'nothing written elsewhere',
    );
    assert.deepEqual(await readAt(raw, 3 * MiB, c.length), new Uint8Array(c));
  });
});
