import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { loadConfig } from '../../src/vm/config.ts';
import { hvkit } from '../cli/hvkit.ts';

describe('relative paths in a config file', () => {
  it('resolve against the file’s directory, wherever hvkit runs from', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hvkit-relative-'));
    try {
      writeFileSync(join(dir, 'data.raw'), Buffer.alloc(4 * 1024 * 1024));
      const file = join(dir, 'vm.yaml');
      writeFileSync(
        file,
        'name: rel\ndevices:\n  - type: scsi\n    disks:\n      - path: data.raw\n        lun: 0\n',
      );
      assert.equal(loadConfig(file).base_dir, dir);
      // hvkit runs from the repository root, not from `dir`.
      const result = await hvkit(['run', file, '--duration', '1s', '--json']);
      assert.equal(result.code, 0, result.stderr);
      const report = JSON.parse(result.stdout);
      const summary = JSON.stringify(report.status.guest.devices);
      assert.match(summary, /LUN 0 4 MiB/, 'the guest sees the 4 MiB disk');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
