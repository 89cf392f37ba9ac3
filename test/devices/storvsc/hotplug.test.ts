import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { callVm } from '../../../src/cli/control-client.ts';
import { connectNbd } from '../../../src/nbd/client/client.ts';
import { hvkit } from '../../cli/hvkit.ts';
import { requireTools, spawnTool, tempDir, waitFor } from '../../real-tools.ts';
import { withTimeout } from './harness.ts';
import { bootVm, guestController, hostController } from './running-vm.ts';

const MiB = 1024 * 1024;
const BLOCK = 4096;

/** A raw image of `size` bytes whose block n starts with the 32-bit number n. */
async function numberedImage(path: string, size: number): Promise<void> {
  const data = Buffer.alloc(size);
  for (let n = 0; n < size / BLOCK; n++) data.writeUInt32LE(n, n * BLOCK);
  await writeFile(path, data);
}

describe('hot add and hot remove on a running VM', () => {
  it('hvkit disk attach/detach add and remove exports, also under fio load', async (t) => {
    requireTools('fio');
    const dir = await tempDir(t);
    // A VM of the test's own: one controller (two channels) with a 64 MiB scratch disk.
    const vm = await bootVm(t, dir, {
      name: 'hvkit-vm',
      devices: [{ type: 'scsi', channels: 2, disks: [{ memory: '64M', lun: 0 }] }],
    });

    let status = await vm.status();
    assert.deepEqual(
      hostController(status).disks.map((d) => [d.lun, d.capacity, d.format]),
      [[0, 64 * MiB, 'memory']],
    );
    const scratch = guestController(status).disks[0]!;
    assert.equal(scratch.capacity, 64 * MiB);
    assert.match(scratch.uri ?? '', /^nbd\+unix:\/\/\/\?socket=.*hvkit-vm-scsi0-lun0\.sock$/);

    // Hot add: the guest rescans and exports the new disk; its data is the image's.
    const image = join(dir, 'hot.raw');
    await numberedImage(image, 64 * MiB);
    const attach = await hvkit(['disk', 'attach', image, '--socket', vm.control, '--lun', '1']);
    assert.equal(attach.code, 0, attach.stderr);
    assert.match(attach.stdout, /attached .*hot\.raw to scsi0 LUN 1 \(64 MiB raw\)/);
    const uri = /guest export: (\S+)/.exec(attach.stdout)?.[1];
    assert.ok(uri, attach.stdout);
    const reader = await connectNbd(uri, { readOnly: true });
    const sector = new Uint8Array(BLOCK);
    await reader.read(777 * BLOCK, sector);
    assert.equal(Buffer.from(sector).readUInt32LE(0), 777);
    assert.equal(reader.size, 64 * MiB);
    await reader.close();

    // Read-only: the guest sees a write-protected disk and exports it read-only.
    const ro = join(dir, 'ro.raw');
    await numberedImage(ro, 4 * MiB);
    const roAttach = await hvkit([
      'disk',
      'attach',
      ro,
      '--socket',
      vm.control,
      '--lun',
      '2',
      '--read-only',
      '--json',
    ]);
    assert.equal(roAttach.code, 0, roAttach.stderr);
    const roJson = JSON.parse(roAttach.stdout) as { lun: number; uri: string; readOnly: boolean };
    assert.equal(roJson.readOnly, true);
    assert.equal(
      guestController(await vm.status()).disks.find((d) => d.lun === 2)?.readOnly,
      true,
      'the guest saw write protection',
    );
    const roClient = await connectNbd(roJson.uri);
    assert.equal(roClient.readOnly, true);
    await roClient.close();
    const roDetach = await hvkit(['disk', 'detach', '--lun', '2', '--socket', vm.control]);
    assert.equal(roDetach.code, 0, roDetach.stderr);

    // Mistakes get clear errors and change nothing.
    const taken = await hvkit(['disk', 'attach', image, '--socket', vm.control, '--lun', '0']);
    assert.equal(taken.code, 1);
    assert.match(taken.stderr, /controller 0: LUN 0 already holds a disk \(memory\)/);
    const missing = await hvkit(['disk', 'attach', join(dir, 'nope.raw'), '--socket', vm.control]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no such file/);
    const absent = await hvkit(['disk', 'detach', '--lun', '9', '--socket', vm.control]);
    assert.equal(absent.code, 1);
    assert.match(absent.stderr, /no disk is attached at LUN 9/);
    const badLun = await hvkit(['disk', 'detach', '--lun', 'x', '--socket', vm.control]);
    assert.notEqual(badLun.code, 0);
    assert.match(badLun.stderr, /a LUN is an integer 0\.\.254/);
    const noVm = await hvkit(['disk', 'detach', '--lun', '1', '--socket', join(dir, 'none.sock')]);
    assert.equal(noVm.code, 1);
    assert.match(noVm.stderr, /no VM is running with control socket/);
    status = await vm.status();
    assert.deepEqual(
      hostController(status).disks.map((d) => d.lun),
      [0, 1],
    );

    // Hot remove under load: fio on the second half of the disk, our own writers on the first half.
    const fio = spawnTool(t, 'fio', [
      '--name=load',
      '--ioengine=nbd',
      `--uri=${uri}`,
      '--rw=randwrite',
      '--bs=64k',
      '--iodepth=8',
      '--offset=32M',
      '--size=32M',
      '--time_based',
      '--runtime=60',
    ]);
    const writer = await connectNbd(uri);
    const acked = new Map<number, number>();
    let writeErrors = 0;
    const writers = Array.from({ length: 8 }, async (_, w) => {
      // Each writer runs until its I/O fails (the disk goes away under it).
      for (let i = 0; ; i++) {
        const block = (w * 1009 + i * 7) % ((32 * MiB) / BLOCK);
        const fill = (w * 37 + i) % 251 || 1;
        try {
          await writer.write(block * BLOCK, new Uint8Array(BLOCK).fill(fill));
          acked.set(block * BLOCK, fill);
        } catch {
          writeErrors++;
          return;
        }
      }
    });
    await waitFor(() => acked.size > 200, 'writes to be acknowledged');
    await new Promise((r) => setTimeout(r, 300));
    const started = Date.now();
    const detach = await hvkit(['disk', 'detach', '--lun', '1', '--socket', vm.control]);
    assert.equal(detach.code, 0, detach.stderr);
    assert.match(detach.stdout, /detached .*hot\.raw from scsi0 LUN 1/);
    assert.match(detach.stdout, /the guest removed its export/);
    // Nothing hangs: the writers and fio end promptly, with errors.
    await withTimeout(Promise.all(writers), 15_000, 'NBD writers hung');
    await waitFor(() => fio.exitCode !== null, 'fio to end after the removal');
    assert.ok(Date.now() - started < 20_000, 'fio ended well before its 60 s');
    assert.notEqual(fio.exitCode, 0, `fio should report the lost disk:\n${fio.output()}`);
    assert.equal(writeErrors, 8, 'every writer saw its I/O fail');
    await writer.close().catch(() => {});
    status = await vm.status();
    assert.deepEqual(
      hostController(status).disks.map((d) => d.lun),
      [0],
    );
    assert.deepEqual(
      guestController(status).disks.map((d) => d.lun),
      [0],
    );
    assert.ok(!existsSync(/socket=(\S+)/.exec(uri)![1]!), 'the export socket is gone');

    // No acknowledged write was lost: the file holds each block's last acknowledged contents.
    const file = await open(image, 'r');
    try {
      const block = new Uint8Array(BLOCK);
      for (const [offset, fill] of acked) {
        await file.read(block, 0, BLOCK, offset);
        assert.ok(
          block.every((b) => b === fill),
          `block at ${offset} holds ${block[0]}, acknowledged ${fill}`,
        );
      }
    } finally {
      await file.close();
    }

    // Attached again, the disk comes back with those writes, and the scratch disk never noticed.
    const again = await hvkit(['disk', 'attach', image, '--socket', vm.control, '--json']);
    assert.equal(again.code, 0, again.stderr);
    const json = JSON.parse(again.stdout) as { lun: number; uri: string };
    assert.equal(json.lun, 1, 'the lowest free LUN');
    const back = await connectNbd(json.uri, { readOnly: true });
    const [offset, fill] = [...acked][0]!;
    await back.read(offset, sector);
    assert.ok(sector.every((b) => b === fill));
    await back.close();
    const scratchClient = await connectNbd(scratch.uri!);
    const data = randomBytes(MiB);
    await scratchClient.write(0, data);
    const check = new Uint8Array(MiB);
    await scratchClient.read(0, check);
    assert.deepEqual(check, new Uint8Array(data));
    await scratchClient.close();
    await callVm(vm.control, 'stop');
    assert.equal((await vm.exit).code, 0);
  });
});
