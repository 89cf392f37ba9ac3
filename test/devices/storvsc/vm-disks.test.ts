import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { mkdir, readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { callVm } from '../../../src/cli/control-client.ts';
import { connectNbd } from '../../../src/nbd/client/client.ts';
import { hvkit } from '../../cli/hvkit.ts';
import {
  cleanupMount,
  requireTools,
  run,
  runOk,
  spawnTool,
  tempDir,
  waitFor,
} from '../../real-tools.ts';
import { bootVm, guestController, hostController } from './running-vm.ts';

const MiB = 1024 * 1024;
const sha = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

/**
 * A VM with one SCSI controller (two channels) holding a dynamic VHDX and a
 * raw file: the guest sees both LUNs, fio verifies data over both channels,
 * and a real ext4 filesystem made through nbdfuse + a loop device survives
 * in the VHDX after the VM stops.
 */
describe('a VM with a VHDX and a raw disk on one SCSI controller', () => {
  it('shows both LUNs, verifies fio data over two channels, and keeps a real filesystem', async (t) => {
    requireTools('qemu-img', 'fio', 'nbdfuse', 'losetup', 'mkfs.ext4', 'e2fsck', 'mount', 'umount');
    const dir = await tempDir(t);
    const vhdx = join(dir, 'disk0.vhdx');
    const raw = join(dir, 'data.raw');
    await runOk('qemu-img', ['create', '-q', '-f', 'vhdx', vhdx, '64M']);
    await writeFile(raw, '');
    await truncate(raw, 32 * MiB);
    const vm = await bootVm(t, dir, {
      name: 'storage-e2e',
      memory: '96M',
      devices: [
        {
          type: 'scsi',
          channels: 2,
          disks: [
            { path: vhdx, lun: 0 },
            { path: raw, lun: 1 },
          ],
          export: { socket_dir: dir },
        },
        // A second controller: one channel, a scratch disk, exported on loopback TCP.
        { type: 'scsi', channels: 1, disks: [{ memory: '8M', lun: 3 }], export: { tcp_port: 0 } },
      ],
    });

    // 1. Both LUNs, with the host's capacity and identifiers, exported over NBD.
    let status = await vm.status();
    const host = hostController(status);
    const guest = guestController(status);
    assert.equal(guest.version, '6.2');
    assert.equal(guest.channels.length, 2);
    assert.deepEqual(
      host.disks.map((d) => [d.lun, d.capacity, d.format]),
      [
        [0, 64 * MiB, 'vhdx'],
        [1, 32 * MiB, 'raw'],
      ],
    );
    assert.deepEqual(
      guest.disks.map((d) => [d.lun, d.capacity, d.blockSize, d.vendor, d.product, d.identifier]),
      host.disks.map((d) => [d.lun, d.capacity, 512, 'Msft', 'Virtual Disk', d.identifier]),
    );
    const socket0 = join(dir, 'storage-e2e-scsi0-lun0.sock');
    const socket1 = join(dir, 'storage-e2e-scsi0-lun1.sock');
    assert.equal(guest.disks[0]!.uri, `nbd+unix:///?socket=${socket0}`);
    assert.equal(guest.disks[1]!.uri, `nbd+unix:///?socket=${socket1}`);
    // The second controller is a device of its own, with its own instance and channel.
    const second = guestController(status, 1);
    assert.equal(second.channels.length, 1);
    assert.deepEqual(
      hostController(status, 1).disks.map((d) => [d.lun, d.capacity, d.format]),
      [[3, 8 * MiB, 'memory']],
    );
    assert.equal(second.disks[0]!.lun, 3);
    assert.match(second.disks[0]!.uri ?? '', /^nbd:\/\/127\.0\.0\.1:\d+\/$/);
    const tcp = await connectNbd(second.disks[0]!.uri!);
    const block = randomBytes(65536);
    await tcp.write(8 * MiB - 65536, block);
    const echo = new Uint8Array(65536);
    await tcp.read(8 * MiB - 65536, echo);
    assert.deepEqual(echo, new Uint8Array(block));
    await tcp.close();
    const text = await hvkit(['status', '--socket', vm.control]);
    assert.match(
      text.stdout,
      /host scsi0: protocol 6\.2, LUN 0 64 MiB vhdx .*disk0\.vhdx, LUN 1 32 MiB raw .*data\.raw/,
    );
    assert.match(
      text.stdout,
      /guest storvsc: scsi0 protocol 6\.2, 2 channels: LUN 0 64 MiB nbd\+unix/,
    );
    assert.match(text.stdout, /host scsi1: protocol 6\.2, LUN 3 8 MiB memory/);
    assert.match(
      text.stdout,
      /scsi1 protocol 6\.2, 1 channel: LUN 3 8 MiB nbd:\/\/127\.0\.0\.1:\d+/,
    );

    // 2. fio random writes of 4 KiB..1 MiB with crc32c verification, over both channels.
    const fio = await run(
      'fio',
      [
        '--name=verify',
        '--ioengine=nbd',
        `--uri=${guest.disks[1]!.uri}`,
        '--rw=randwrite',
        '--bsrange=4k-1M',
        '--size=32M',
        '--iodepth=16',
        '--verify=crc32c',
        '--do_verify=1',
        '--verify_fatal=1',
        '--verify_state_save=0',
        '--randrepeat=0',
        '--output-format=json',
      ],
      120_000,
    );
    assert.equal(fio.code, 0, `fio failed:\n${fio.stdout}\n${fio.stderr}`);
    const job = JSON.parse(fio.stdout.slice(fio.stdout.indexOf('{'))).jobs[0];
    assert.equal(job.error, 0);
    assert.equal(job.write.io_bytes, 32 * MiB);
    assert.equal(job.read.io_bytes, 32 * MiB, 'every written byte was read back and verified');
    status = await vm.status();
    for (const side of [hostController(status).channels, guestController(status).channels]) {
      assert.equal(side.length, 2);
      for (const c of side) {
        assert.ok(c.requests > 50, `channel ${c.index} carried ${c.requests} requests`);
        assert.ok(
          c.bytesWritten > 2 * MiB && c.bytesRead > 2 * MiB,
          `channel ${c.index} moved data both ways`,
        );
        assert.equal(c.errors, 0);
      }
    }

    // 3. ext4 through nbdfuse and a loop device on the VHDX's export.
    const fuseDir = join(dir, 'fuse');
    const mnt = join(dir, 'mnt');
    await mkdir(fuseDir);
    await mkdir(mnt);
    const fuse = spawnTool(t, 'nbdfuse', [join(fuseDir, 'disk'), '--unix', socket0]);
    t.after(() => cleanupMount(fuseDir));
    await waitFor(() => existsSync(join(fuseDir, 'disk')), 'the nbdfuse file');
    assert.equal(statSync(join(fuseDir, 'disk')).size, 64 * MiB);
    const files = new Map<string, string>();
    let loop = (await runOk('losetup', ['-f', '--show', join(fuseDir, 'disk')])).trim();
    t.after(() => cleanupMount(mnt, loop));
    await runOk('mkfs.ext4', ['-q', '-F', loop], 120_000);
    await runOk('mount', [loop, mnt]);
    await mkdir(join(mnt, 'dir'));
    for (const [name, size] of [
      ['a.bin', MiB],
      ['dir/b.bin', 5 * MiB + 123],
      ['c.txt', 300_000],
    ] as const) {
      const data = randomBytes(size);
      await writeFile(join(mnt, name), data);
      files.set(name, sha(data));
    }
    await runOk('umount', [mnt]);
    await runOk('losetup', ['-d', loop]);
    // A fresh loop device: what is read now comes from the guest's disk, not a cache.
    loop = (await runOk('losetup', ['-f', '--show', join(fuseDir, 'disk')])).trim();
    await runOk('mount', [loop, mnt]);
    for (const [name, hash] of files)
      assert.equal(sha(await readFile(join(mnt, name))), hash, name);
    await runOk('umount', [mnt]);
    const fsck = await run('e2fsck', ['-fn', loop]);
    assert.equal(fsck.code, 0, `e2fsck through the VM: ${fsck.stdout}${fsck.stderr}`);
    await runOk('losetup', ['-d', loop]);
    await runOk('umount', [fuseDir]);
    await waitFor(() => fuse.exitCode !== null, 'nbdfuse to exit');

    // 4. Stopped, the VHDX is a clean image holding the same filesystem.
    await callVm(vm.control, 'stop');
    const exit = await vm.exit;
    assert.equal(exit.code, 0, exit.stderr);
    assert.match(exit.stdout, /shut down cleanly/);
    const check = await run('qemu-img', ['check', vhdx]);
    assert.equal(check.code, 0, `qemu-img check: ${check.stdout}${check.stderr}`);
    assert.match(check.stdout, /No errors were found/);
    const copy = join(dir, 'copy.raw');
    await runOk('qemu-img', ['convert', '-O', 'raw', vhdx, copy]);
    const offline = await run('e2fsck', ['-fn', copy]);
    assert.equal(
      offline.code,
      0,
      `e2fsck of the converted image: ${offline.stdout}${offline.stderr}`,
    );
    const m2 = join(dir, 'm2');
    await mkdir(m2);
    await runOk('mount', ['-o', 'loop,ro', copy, m2]);
    t.after(() => cleanupMount(m2));
    for (const [name, hash] of files) assert.equal(sha(await readFile(join(m2, name))), hash, name);
    await runOk('umount', [m2]);
  });
});
