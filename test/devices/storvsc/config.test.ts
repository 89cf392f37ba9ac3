import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { VmstorVersion } from '../../../src/devices/storvsc/protocol.ts';
import { ConfigError, defaultConfig, validateConfig } from '../../../src/vm/config.ts';
import { controllerInstanceId, type ScsiConfig } from '../../../src/vm/devices/scsi.ts';
import { hvkit } from '../../cli/hvkit.ts';
import { tempDir } from '../../real-tools.ts';

const scsi = (entry: Record<string, unknown>) =>
  validateConfig({ devices: [{ type: 'scsi', ...entry }] });

describe('scsi device configuration', () => {
  it('fills in defaults and reads versions and sizes as people write them', () => {
    const config = scsi({
      disks: [{ path: 'a.vhdx' }, { memory: '16M', lun: 0 }, { path: 'b.raw', read_only: true }],
      versions: ['6.2', 0x501],
      guest_versions: ['6.0', '5.1'],
      max_transfer: '256K',
    }).devices[0] as ScsiConfig;
    assert.equal(config.channels, 2);
    assert.deepEqual(config.versions, [VmstorVersion.Win10, VmstorVersion.Win8]);
    assert.deepEqual(config.guest_versions, [VmstorVersion.Win8_1, VmstorVersion.Win8]);
    assert.equal(config.max_transfer, 256 * 1024);
    assert.equal(config.buffers, 8 * 1024 * 1024);
    assert.equal(config.disks[1]!.memory, 16 * 1024 * 1024);
    assert.equal(config.disks[2]!.read_only, true);
  });

  it('gives the built-in VM a 64 MiB scratch disk beside the echo device', () => {
    const devices = defaultConfig().devices;
    const types = devices.map((d) => d.type);
    assert.ok(types.includes('echo') && types.includes('scsi'), types.join());
    const entry = devices.find((d) => d.type === 'scsi') as ScsiConfig;
    assert.deepEqual(entry.disks, [{ memory: 64 * 1024 * 1024, lun: 0, read_only: false }]);
  });

  for (const [what, entry, message] of [
    [
      'a LUN used twice',
      {
        disks: [
          { path: 'a', lun: 1 },
          { path: 'b', lun: 1 },
        ],
      },
      /disks\.1\.lun: LUN 1 is used twice/,
    ],
    [
      'a disk with both a path and a size',
      { disks: [{ path: 'a', memory: '1M' }] },
      /exactly one of path or memory/,
    ],
    ['a disk with neither', { disks: [{ lun: 2 }] }, /exactly one of path or memory/],
    [
      'a memory disk not in whole sectors',
      { disks: [{ memory: 1000 }] },
      /positive multiple of 512, got 1000/,
    ],
    ['a LUN past 254', { disks: [{ path: 'a', lun: 255 }] }, /disks\.0\.lun/],
    [
      'an unknown version',
      { versions: ['7.0'] },
      /unknown storage protocol version "7\.0"; known: 6\.2, 6\.0, 5\.1, 4\.2, 2\.0/,
    ],
    ['too many channels', { channels: 9 }, /channels/],
    [
      'a maximum transfer over 1 MiB',
      { max_transfer: '2M' },
      /max_transfer: must be a multiple of 4096 in 4096\.\.1048576, got 2097152/,
    ],
    [
      'buffers smaller than one transfer',
      { buffers: '64K' },
      /buffers: must hold at least one maximum transfer/,
    ],
    [
      'two export places',
      { export: { socket_dir: '/tmp', tcp_port: 1 } },
      /give socket_dir or tcp_port, not both/,
    ],
    ['an unknown field', { disk: [] }, /disk/],
  ] as const) {
    it(`refuses ${what}`, () => {
      assert.throws(
        () => scsi(entry as Record<string, unknown>),
        (e: Error) => e instanceof ConfigError && (message as RegExp).test(e.message),
      );
    });
  }

  it('names each controller with a stable instance id per VM and index', () => {
    const a = controllerInstanceId('vm', 0);
    assert.match(a, /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(controllerInstanceId('vm', 0), a);
    assert.notEqual(controllerInstanceId('vm', 1), a);
    assert.notEqual(controllerInstanceId('other', 0), a);
  });

  it('hvkit run refuses a disk it cannot open, naming it, with a non-zero exit', async (t) => {
    const dir = await tempDir(t);
    const config = join(dir, 'vm.json');
    await writeFile(
      config,
      JSON.stringify({ devices: [{ type: 'scsi', disks: [{ path: join(dir, 'missing.vhdx') }] }] }),
    );
    const result = await hvkit(['run', config, '--no-control', '--duration', '1s']);
    assert.equal(result.code, 1);
    assert.match(
      result.stderr,
      /the VM did not boot: .*scsi controller 0, disk 0 \(.*missing\.vhdx\): cannot open/,
    );
  });
});
