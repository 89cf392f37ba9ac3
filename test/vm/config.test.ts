import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  ConfigError,
  defaultConfig,
  loadConfig,
  parseDuration,
  parseSize,
  validateConfig,
  versionPlan,
} from '../../src/vm/config.ts';
import { deviceKind } from '../../src/vm/device-kinds.ts';
import {
  FREEBSD_VERSION_ORDER,
  LINUX_VERSION_ORDER,
  VmbusVersion,
} from '../../src/vmbus/protocol.ts';

describe('VM configuration', () => {
  it('has a built-in default: 64 MiB, 2 vCPUs, one echo device, Linux negotiation', () => {
    const config = defaultConfig();
    assert.equal(config.memory, 64 * 1024 * 1024);
    assert.equal(config.vcpus, 2);
    assert.equal(config.devices.filter((d) => d.type === 'echo').length, 1, 'one echo device');
    for (const d of config.devices) assert.ok(deviceKind(d.type), `${d.type} is a device kind`);
    const plan = versionPlan(config);
    assert.deepEqual(plan.guest, LINUX_VERSION_ORDER);
    assert.equal(plan.host.at(-1), VmbusVersion.Win10V5_3);
  });

  it('parses sizes and durations with units', () => {
    assert.equal(parseSize('64M'), 64 * 1024 * 1024);
    assert.equal(parseSize('1.5k'), 1536);
    assert.equal(parseSize(4096), 4096);
    assert.throws(() => parseSize('12 parsecs'), /expected a number with an optional unit/);
    assert.equal(parseDuration('5s'), 5000);
    assert.equal(parseDuration('250ms'), 250);
    assert.equal(parseDuration('2m'), 120_000);
    assert.throws(() => parseDuration('soon'), /expected e.g. 500ms/);
  });

  it('resolves version settings', () => {
    const config = validateConfig({
      vmbus: { host_max_version: '4.0', guest_versions: 'freebsd' },
    });
    const plan = versionPlan(config);
    assert.equal(plan.host.at(-1), VmbusVersion.Win10);
    assert.deepEqual(plan.guest, FREEBSD_VERSION_ORDER);
    const listed = validateConfig({ vmbus: { guest_versions: ['5.2', '3.0'] } });
    assert.deepEqual(versionPlan(listed).guest, [VmbusVersion.Win10V5_2, VmbusVersion.Win8_1]);
  });

  it('reports every problem with its path and a clear message', () => {
    const bad = {
      memory: 'lots',
      vcpus: 99,
      vmbus: { guest_versions: ['9.9'] },
      devices: [{ type: 'toaster' }],
      extra: 1,
    };
    assert.throws(
      () => validateConfig(bad, 'vm.yaml'),
      (error: Error) => {
        assert.ok(error instanceof ConfigError);
        assert.match(error.message, /^vm\.yaml: invalid configuration/);
        assert.match(error.message, /memory: size "lots"/);
        assert.match(error.message, /vcpus: .*16/);
        assert.match(error.message, /vmbus\.guest_versions\.0: unknown VMBus version "9\.9"/);
        assert.match(error.message, /devices\.0\.type/);
        assert.match(error.message, /extra/);
        return true;
      },
    );
    assert.throws(() => validateConfig({ memory: '1M' }), /at least 4 MiB/);
  });

  it('loads YAML files and explains unreadable or malformed ones', () => {
    const dir = mkdtempSync(join(tmpdir(), 'hvkit-config-'));
    try {
      const good = join(dir, 'vm.yaml');
      writeFileSync(good, 'name: demo\nmemory: 32M\ndevices:\n  - type: echo\n    rate: 0\n');
      const config = loadConfig(good);
      assert.equal(config.name, 'demo');
      assert.equal(config.devices[0]?.rate, 0);
      const broken = join(dir, 'broken.yaml');
      writeFileSync(broken, 'name: [unclosed\n');
      assert.throws(() => loadConfig(broken), /broken\.yaml: not valid YAML/);
      assert.throws(
        () => loadConfig(join(dir, 'missing.yaml')),
        /cannot read .*missing\.yaml: ENOENT/,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
