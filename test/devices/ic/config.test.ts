import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { version } from '../../../src/devices/ic/protocol.ts';
import { ConfigError, defaultConfig, validateConfig } from '../../../src/vm/config.ts';
import { defaultIcEntry, type IcConfig } from '../../../src/vm/devices/ic.ts';

describe('the ic device entry', () => {
  it('defaults to every service with the documented settings', () => {
    const entry = defaultIcEntry();
    assert.deepEqual(entry.services, ['heartbeat', 'shutdown', 'timesync', 'kvp', 'fcopy', 'vss']);
    assert.equal(entry.heartbeat_interval, 2000);
    assert.equal(entry.shutdown.refuse, false);
    assert.deepEqual(entry.timesync, { guest_clock_offset: 0, interval: 5000, adjust: false });
    assert.equal(entry.vss.timeout, 10_000);
    assert.deepEqual(entry.vss.freeze, []);
    // The built-in VM has it.
    assert.ok(defaultConfig().devices.some((d) => d.type === 'ic'));
  });

  it('parses durations (negative clock offsets too), hook commands and host version lists', () => {
    const config = validateConfig({
      devices: [
        {
          type: 'ic',
          services: ['heartbeat', 'timesync'],
          heartbeat_interval: '250ms',
          timesync: { guest_clock_offset: '-1.5s', interval: 1 },
          vss: { freeze: ['fsfreeze -f /mnt', ['/usr/bin/true', '--flag']], timeout: '2s' },
          host_versions: { framework: ['1.0'], timesync: ['1.0', '3.0'] },
        },
      ],
    });
    const ic = config.devices[0] as IcConfig;
    assert.equal(ic.heartbeat_interval, 250);
    assert.equal(ic.timesync.guest_clock_offset, -1500);
    assert.equal(ic.timesync.interval, 1000);
    assert.deepEqual(ic.vss.freeze, ['fsfreeze -f /mnt', ['/usr/bin/true', '--flag']]);
    assert.deepEqual(ic.host_versions?.timesync, [version(1, 0), version(3, 0)]);
  });

  it('explains bad entries by field', () => {
    const bad = (entry: Record<string, unknown>, pattern: RegExp): void => {
      assert.throws(
        () => validateConfig({ devices: [{ type: 'ic', ...entry }] }, 'vm.yaml'),
        (error: Error) => error instanceof ConfigError && pattern.test(error.message),
      );
    };
    bad({ services: ['teleport'] }, /devices\.0\.services\.0: Invalid option/);
    bad({ heartbeat_interval: '1ms' }, /heartbeat_interval must be at least 10ms/);
    bad(
      { timesync: { guest_clock_offset: 'soon' } },
      /devices\.0\.timesync\.guest_clock_offset: duration "soon"/,
    );
    bad({ host_versions: { kvp: ['four'] } }, /"four" is not a version like "3\.0"/);
    bad({ shutdown: { refuse: 'yes' } }, /devices\.0\.shutdown\.refuse/);
    bad({ vss: { freeze: [''] } }, /devices\.0\.vss\.freeze\.0/);
    bad({ colour: 'blue' }, /Unrecognized key/);
  });
});
