import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { IcDriver } from '../../../src/devices/ic/vsc.ts';
import type { HookCommand } from '../../../src/devices/ic/vss/hooks.ts';
import { VssService } from '../../../src/devices/ic/vss/vsc.ts';
import { VssVsp } from '../../../src/devices/ic/vss/vsp.ts';
import { makeBus, until } from '../../vmbus/harness.ts';

async function setup(
  t: import('node:test').TestContext,
  hooks: (log: string) => { freeze: HookCommand[]; thaw: HookCommand[] },
  hookTimeoutMs = 5000,
) {
  const dir = mkdtempSync(join(tmpdir(), 'hvkit-vss-'));
  const log = join(dir, 'hooks.log');
  const bus = makeBus();
  const vsp = new VssVsp();
  t.after(async () => {
    await bus.close();
    rmSync(dir, { recursive: true, force: true });
  });
  bus.host.addDevice(vsp);
  const service = new VssService({ ...hooks(log), hookTimeoutMs });
  const driver = new IcDriver(service);
  bus.client.registerDriver(driver);
  await bus.client.connect();
  await bus.client.requestOffers();
  await vsp.whenReady();
  const lines = (): string[] => {
    try {
      return readFileSync(log, 'utf8').trim().split('\n').filter(Boolean);
    } catch {
      return [];
    }
  };
  return { vsp, service, driver, lines, log };
}

describe('backup (VSS)', () => {
  it('freezes with the freeze hooks in order, then thaws with the thaw hooks', async (t) => {
    const { vsp, service, lines } = await setup(t, (log) => ({
      freeze: [`echo freeze-1 >> ${log}`, ['/bin/sh', '-c', `echo freeze-2 >> ${log}`]],
      thaw: [`echo thaw-1 >> ${log}`, `echo thaw-2 >> ${log}`],
    }));
    assert.equal(vsp.versions?.service, 0x50000);
    let frozenDuring = false;
    const result = await vsp.backup({
      timeoutMs: 5000,
      whileFrozen: async () => {
        frozenDuring = service.frozen;
      },
    });
    assert.equal(frozenDuring, true, 'the guest was frozen while the backup ran');
    assert.equal(service.frozen, false);
    assert.deepEqual(lines(), ['freeze-1', 'freeze-2', 'thaw-1', 'thaw-2']);
    assert.equal(result.features, 5, 'HOT_BACKUP answered VSS_HBU_NO_AUTO_RECOVERY');
    assert.deepEqual(
      service.events.map((e) => [e.operation, e.ok]),
      [
        ['hot-backup', true],
        ['freeze', true],
        ['thaw', true],
      ],
    );
  });

  it('a failing freeze hook stops the freeze, thaws, and the host hears E_FAIL', async (t) => {
    const { vsp, service, lines } = await setup(t, (log) => ({
      freeze: [`echo freeze-1 >> ${log}`, 'echo cannot freeze >&2; exit 3', `echo never >> ${log}`],
      thaw: [`echo thaw-1 >> ${log}`],
    }));
    await assert.rejects(
      vsp.backup({ timeoutMs: 5000 }),
      /could not freeze \(it thawed again\): it answered E_FAIL/,
    );
    assert.deepEqual(lines(), ['freeze-1', 'thaw-1']);
    const failed = service.events.find((e) => e.operation === 'freeze');
    assert.match(failed?.error ?? '', /exit code 3: cannot freeze/);
    assert.equal(service.frozen, false);
  });

  it('a hung freeze hook is killed when its time is up, the guest thaws and the host hears E_FAIL', async (t) => {
    const { vsp, service, lines } = await setup(
      t,
      (log) => ({
        freeze: [`echo freeze-1 >> ${log}`, 'sleep 60'],
        thaw: [`echo thaw-1 >> ${log}`],
      }),
      300,
    );
    const started = Date.now();
    await assert.rejects(vsp.backup({ timeoutMs: 10_000 }), /could not freeze/);
    assert.ok(Date.now() - started < 10_000, 'did not wait for the hook');
    assert.deepEqual(lines(), ['freeze-1', 'thaw-1']);
    const failed = service.events.find((e) => e.operation === 'freeze');
    assert.match(failed?.error ?? '', /sleep 60: timed out after \d+ ms \(killed\)/);
    assert.equal(service.frozen, false);
  });

  it('a backup after a failed one works', async (t) => {
    const { vsp, service, lines, log } = await setup(t, (log) => ({
      // Fails once (while the marker file exists), then freezes.
      freeze: [`if [ -e ${log}.fail ]; then rm ${log}.fail; exit 3; fi; echo freeze >> ${log}`],
      thaw: [`echo thaw >> ${log}`],
    }));
    writeFileSync(`${log}.fail`, '');
    await assert.rejects(vsp.backup({ timeoutMs: 5000 }), /could not freeze/);
    assert.equal(service.frozen, false);
    service.events.length = 0;
    const result = await vsp.backup({ timeoutMs: 5000 });
    assert.ok(result.frozenMs >= 0);
    assert.deepEqual(
      service.events.map((e) => [e.operation, e.ok]),
      [
        ['hot-backup', true],
        ['freeze', true],
        ['thaw', true],
      ],
    );
    // The failed freeze thawed; the good one froze and thawed.
    assert.deepEqual(lines(), ['thaw', 'freeze', 'thaw']);
    assert.equal(service.frozen, false);
  });

  it('a guest that answers too late gets a clean timeout; the host still sends THAW', async (t) => {
    const { vsp, service, lines } = await setup(t, (log) => ({
      freeze: [`sleep 1; echo freeze >> ${log}`],
      thaw: [`echo thaw >> ${log}`],
    }));
    await assert.rejects(
      vsp.backup({ timeoutMs: 300 }),
      /freeze: the guest did not answer the vss request within 0\.3s; thaw sent/,
    );
    assert.ok(vsp.stats.timeouts >= 1);
    // The guest finishes freezing, then reads the THAW that waited and ends thawed.
    await until(() => lines().length >= 2 && !service.frozen, 5000, 'freeze and thaw ran');
    assert.deepEqual(lines(), ['freeze', 'thaw']);
    await until(() => vsp.stats.unexpected >= 1, 5000, 'the late answer was dropped');
  });

  it('a guest that stopped reading its channel times out cleanly and works once it reads again', async (t) => {
    const { vsp, driver } = await setup(t, () => ({ freeze: [], thaw: [] }));
    driver.pause();
    await assert.rejects(
      vsp.backup({ timeoutMs: 200 }),
      /did not answer the vss request within 0\.2s/,
    );
    driver.resume();
    const result = await vsp.backup({ timeoutMs: 5000 });
    assert.equal(result.features, 5);
  });
});
