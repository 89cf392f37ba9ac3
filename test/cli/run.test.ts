import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ECHO_CLASS_ID } from '../../src/devices/echo/protocol.ts';
import { defaultConfig } from '../../src/vm/config.ts';
import { icSchema } from '../../src/vm/devices/ic.ts';
import { nicSchema } from '../../src/vm/devices/nic-config.ts';
import { scsiSchema } from '../../src/vm/devices/scsi.ts';
import { hvkit } from './hvkit.ts';

/**
 * The channels the built-in VM's devices imply: one per echo device, each
 * SCSI controller's and NIC's primary plus sub-channels, one per integration service.
 */
function defaultChannelCount(): number {
  let n = 0;
  for (const d of defaultConfig().devices) {
    if (d.type === 'echo') n += 1;
    else if (d.type === 'scsi') n += scsiSchema.parse(d).channels;
    else if (d.type === 'ic') n += icSchema.parse(d).services.length;
    else if (d.type === 'nic') n += nicSchema.parse(d).channels;
    else throw new Error(`the default VM has a ${d.type} device this test does not count`);
  }
  return n;
}

describe('hvkit run', () => {
  it('boots the default VM, runs for the duration, prints the summary and exits 0', async () => {
    const result = await hvkit(['run', '--duration', '2s']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(
      result.stdout,
      new RegExp(`hvkit-vm booted: VMBus 5\\.3, ${defaultChannelCount()} channel\\(s\\)`),
    );
    assert.match(result.stdout, /messages on connection id 4/);
    assert.match(result.stdout, /^\d+ +hvkit_echo +0 +open/m);
    assert.match(result.stdout, /shut down cleanly: guest unloaded the VMBus/);
  });

  it('prints the final status as JSON with traffic counters', async () => {
    const result = await hvkit(['run', '--duration', '1s', '--json']);
    assert.equal(result.code, 0, result.stderr);
    const report = JSON.parse(result.stdout) as {
      status: {
        guest: {
          version: number;
          channels: {
            classId: string;
            counters: { packetsSent: number; packetsReceived: number };
          }[];
        };
      };
      shutdown: string;
    };
    assert.equal(report.shutdown, 'clean');
    assert.equal(report.status.guest.version, 0x50003);
    const echo = report.status.guest.channels.find((c) => c.classId === ECHO_CLASS_ID);
    assert.ok(echo, 'the default VM has an echo channel');
    const counters = echo.counters;
    assert.ok(counters.packetsReceived > 0);
    // The status is taken while the echo traffic runs: at most its 128 requests in flight lack an echo.
    const unanswered = counters.packetsSent - counters.packetsReceived;
    assert.ok(unanswered >= 0 && unanswered <= 128, `${unanswered} requests without an echo`);
  });

  it('runs a config file with an older host and the FreeBSD order', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hvkit-run-'));
    try {
      const file = join(dir, 'vm.yaml');
      writeFileSync(
        file,
        'name: old\nvcpus: 1\nvmbus:\n  host_max_version: "3.0"\n  guest_versions: freebsd\n',
      );
      const result = await hvkit(['run', file, '--duration', '1s']);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /old booted: VMBus 3\.0/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('shuts down cleanly on SIGINT', async () => {
    let sent = false;
    const result = await hvkit(['run'], {
      onStdout: (text, child) => {
        if (!sent && text.includes('booted')) {
          sent = true;
          setTimeout(() => child.kill('SIGINT'), 300);
        }
      },
    });
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /shut down cleanly/);
  });

  it('refuses a bad config with a clear message and exit code 2', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hvkit-run-'));
    try {
      const file = join(dir, 'bad.yaml');
      writeFileSync(file, 'memory: huge\n');
      const result = await hvkit(['run', file]);
      assert.equal(result.code, 2);
      assert.match(result.stderr, /bad\.yaml: invalid configuration\n {2}memory: size "huge"/);
      const missing = await hvkit(['run', join(dir, 'nope.yaml')]);
      assert.equal(missing.code, 2);
      assert.match(missing.stderr, /cannot read .*nope\.yaml: ENOENT/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reports a guest that cannot negotiate with the host', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hvkit-run-'));
    try {
      const file = join(dir, 'vm.yaml');
      writeFileSync(file, 'vmbus:\n  host_max_version: "1.1"\n  guest_versions: linux\n');
      const result = await hvkit(['run', file, '--duration', '1s']);
      assert.equal(result.code, 1);
      assert.match(result.stderr, /did not boot: .*supports none of the versions 5\.3, 5\.2/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
