import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { FcopyService } from '../../../src/devices/ic/fcopy/vsc.ts';
import { FcopyVsp } from '../../../src/devices/ic/fcopy/vsp.ts';
import { IcDriver } from '../../../src/devices/ic/vsc.ts';
import { mountTmpfs } from '../../real-tools.ts';
import { makeBus } from '../../vmbus/harness.ts';

async function setup(t: import('node:test').TestContext) {
  const root = mkdtempSync(join(tmpdir(), 'hvkit-fcopy-'));
  const bus = makeBus();
  const vsp = new FcopyVsp();
  /** Undone before the root is removed (mounts). */
  const undo: (() => void)[] = [];
  t.after(async () => {
    await bus.close();
    for (const step of undo.reverse()) step();
    rmSync(root, { recursive: true, force: true });
  });
  bus.host.addDevice(vsp);
  const service = new FcopyService(root);
  bus.client.registerDriver(new IcDriver(service));
  await bus.client.connect();
  await bus.client.requestOffers();
  await vsp.whenReady();
  return { root, vsp, service, undo };
}

async function copy(
  vsp: FcopyVsp,
  data: Uint8Array,
  directory: string,
  fileName: string,
  flags: { overwrite?: boolean; createPath?: boolean } = {},
) {
  await vsp.start({ directory, fileName, size: data.length, ...flags });
  try {
    for (let at = 0; at < data.length; at += 256 * 1024) {
      await vsp.write(at, data.subarray(at, Math.min(data.length, at + 256 * 1024)));
    }
    await vsp.complete();
  } catch (error) {
    await vsp.cancel();
    throw error;
  }
}

describe('file copy', () => {
  it('copies a file byte for byte, in 6 KiB fragments, and refuses to overwrite without the flag', async (t) => {
    const { root, vsp, service } = await setup(t);
    assert.equal(vsp.versions?.service, 0x10001);
    const data = randomBytes(3 * 1024 * 1024 + 123);
    await copy(vsp, data, '/data/in', 'blob.bin', { createPath: true });
    assert.deepEqual(readFileSync(join(root, 'data/in/blob.bin')), data);
    assert.equal(service.stats.completed, 1);
    assert.equal(service.stats.bytes, data.length);
    await assert.rejects(
      copy(vsp, data, '/data/in', 'blob.bin'),
      /\/data\/in\/blob\.bin already exists in the guest \(overwrite it with --overwrite\)/,
    );
    const smaller = randomBytes(1000);
    await copy(vsp, smaller, '/data/in', 'blob.bin', { overwrite: true });
    assert.deepEqual(
      readFileSync(join(root, 'data/in/blob.bin')),
      smaller,
      'replaced and truncated',
    );
    // An empty file.
    await copy(vsp, new Uint8Array(0), '/data/in', 'empty');
    assert.equal(readFileSync(join(root, 'data/in/empty')).length, 0);
  });

  it('reports path errors: a missing directory, a path out of the root, a bad name', async (t) => {
    const { root, vsp } = await setup(t);
    await assert.rejects(
      copy(vsp, new Uint8Array(1), '/no/such/dir', 'f'),
      /has no such directory .*--create-path/,
    );
    assert.equal(existsSync(join(root, 'no')), false);
    await assert.rejects(
      copy(vsp, new Uint8Array(1), '/../escape', 'f', { createPath: true }),
      /refused the path/,
    );
    mkdirSync(join(root, 'inside'));
    symlinkSync(tmpdir(), join(root, 'inside', 'out'));
    await assert.rejects(copy(vsp, new Uint8Array(1), '/inside/out', 'f'), /refused the path/);
    await assert.rejects(copy(vsp, new Uint8Array(1), '/inside', '..'), /refused the path/);
    writeFileSync(join(root, 'plainfile'), 'x');
    await assert.rejects(copy(vsp, new Uint8Array(1), '/plainfile', 'f'), /no such directory/);
  });

  it('reports a full destination (ENOSPC on a 1 MiB tmpfs) and removes the partial file', async (t) => {
    const { root, vsp, service, undo } = await setup(t);
    const mount = join(root, 'small');
    mkdirSync(mount);
    undo.push(mountTmpfs(mount, '1m'));
    const data = randomBytes(3 * 1024 * 1024);
    await assert.rejects(
      copy(vsp, data, '/small', 'big.bin'),
      /the guest ran out of space writing \/small\/big\.bin/,
    );
    assert.match(service.lastError, /no space left after \d+ bytes/);
    assert.equal(existsSync(join(mount, 'big.bin')), false, 'cancel removed the partial file');
    assert.equal(service.stats.cancelled, 1);
    // The service is usable afterwards.
    await copy(vsp, randomBytes(1000), '/small', 'fits.bin');
    assert.equal(readFileSync(join(mount, 'fits.bin')).length, 1000);
  });
});
