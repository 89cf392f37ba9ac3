import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { hvkit, runDir, startVm } from './hvkit.ts';

function config(name: string, extra = ''): string {
  const file = join(runDir, `${name}.yaml`);
  writeFileSync(
    file,
    `name: ${name}\ndevices:\n  - type: ic\n    services: [heartbeat, shutdown, kvp]\n    heartbeat_interval: 200ms\n${extra}`,
  );
  return file;
}

async function until(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('hvkit shutdown', () => {
  it('the guest answers S_OK, flushes, unloads the VMBus, and the VM process exits 0', async () => {
    const vm = await startVm([config('sd-ok')]);
    let done = false;
    try {
      const result = await hvkit(['shutdown', '--vm', 'sd-ok', '--message', 'maintenance']);
      assert.equal(result.code, 0, result.stderr);
      assert.match(
        result.stdout,
        /the guest accepted the shutdown with S_OK \(0x00000000\) and is stopping/,
      );
      done = true;
    } finally {
      if (!done) vm.kill();
    }
    const exit = await vm.exit;
    assert.equal(exit.code, 0, exit.stderr);
    assert.match(
      exit.stderr,
      /guest: ic: the host asked to shut down \("maintenance"\); stopping cleanly/,
    );
    assert.match(exit.stderr, /guest: ic: flushed 5 KVP pool files/);
    assert.match(exit.stdout, /shut down cleanly: guest unloaded the VMBus, host stopped/);
    assert.doesNotMatch(exit.stdout, /restarting/);
  });

  it('--restart brings the VM back up; a later shutdown ends it', async () => {
    const vm = await startVm([config('sd-restart')]);
    try {
      const restart = await hvkit(['shutdown', '--vm', 'sd-restart', '--restart', '--force']);
      assert.equal(restart.code, 0, restart.stderr);
      assert.match(restart.stdout, /accepted the restart/);
      await until(() => vm.output().split('booted').length === 3, 30_000, 'the second boot');
      assert.match(vm.output(), /sd-restart restarting/);
      const status = await hvkit(['status', '--vm', 'sd-restart']);
      assert.equal(status.code, 0, status.stderr);
      assert.match(status.stdout, /host ic: heartbeat (healthy|waiting)/);
      const stop = await hvkit(['shutdown', '--vm', 'sd-restart']);
      assert.equal(stop.code, 0, stop.stderr);
    } catch (error) {
      vm.kill();
      throw error;
    }
    const exit = await vm.exit;
    assert.equal(exit.code, 0, exit.stderr);
    assert.equal(exit.stdout.split('shut down cleanly').length, 3, 'two clean shutdowns');
  });

  it('a guest configured to refuse answers E_FAIL: non-zero exit, the VM keeps running', async () => {
    const vm = await startVm([config('sd-refuse', '    shutdown: { refuse: true }\n')]);
    try {
      const result = await hvkit(['shutdown', '--vm', 'sd-refuse']);
      assert.equal(result.code, 1);
      assert.match(
        result.stderr,
        /hvkit: the guest refused to shut down: it answered E_FAIL \(0x80004005\)/,
      );
      const status = await hvkit(['status', '--vm', 'sd-refuse']);
      assert.equal(status.code, 0, 'still running');
      const missing = await hvkit(['shutdown', '--vm', 'no-such-vm']);
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /no VM is running with control socket/);
      assert.equal((await hvkit(['stop', '--vm', 'sd-refuse'])).code, 0);
    } catch (error) {
      vm.kill();
      throw error;
    }
    assert.equal((await vm.exit).code, 0);
  });
});
