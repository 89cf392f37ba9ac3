import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { callVm } from '../../src/cli/control-client.ts';
import { hvkit, runDir, startVm } from './hvkit.ts';

describe('the control socket of a running VM', () => {
  it('answers status, lists commands, refuses unknown ones and stops the VM cleanly', async () => {
    const socket = join(runDir, 'ctl-a.sock');
    const vm = await startVm(['--control', socket]);
    let stopped = false;
    try {
      const status = await hvkit(['status', '--socket', socket]);
      assert.equal(status.code, 0, status.stderr);
      assert.match(status.stdout, /VMBus 5\.3/);
      assert.match(status.stdout, /hvkit_echo/);
      const json = JSON.parse((await hvkit(['status', '--socket', socket, '--json'])).stdout);
      assert.equal(json.guest.version, 0x50003);
      assert.deepEqual(((await callVm(socket, 'commands')) as string[]).slice(0, 3), [
        'status',
        'commands',
        'stop',
      ]);
      await assert.rejects(callVm(socket, 'frobnicate'), /unknown command frobnicate/);
      // A second VM on the same socket is refused.
      const second = await hvkit(['run', '--control', socket, '--duration', '1s']);
      assert.equal(second.code, 1);
      assert.match(second.stderr, /already running with control socket/);
      const stop = await hvkit(['stop', '--socket', socket]);
      assert.equal(stop.code, 0, stop.stderr);
      stopped = true;
    } finally {
      if (!stopped) vm.kill();
    }
    const result = await vm.exit;
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /shut down cleanly/);
  });

  it('uses the per-name socket by default and replaces a stale one', async () => {
    // A stale socket file: bound once, then the process "died" (server closed without unlinking).
    const stale = join(runDir, 'named-vm.sock');
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(stale, resolve));
    await new Promise<void>((resolve) => server.close(() => resolve()));
    writeFileSync(join(runDir, 'named.yaml'), 'name: named-vm\n');
    const vm = await startVm([join(runDir, 'named.yaml')]);
    try {
      const status = await hvkit(['status', '--vm', 'named-vm']);
      assert.equal(status.code, 0, status.stderr);
      assert.match(status.stdout, /^named-vm: up/m);
    } finally {
      vm.kill();
    }
    assert.equal((await vm.exit).code, 0);
    const gone = await hvkit(['status', '--vm', 'named-vm']);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /no VM is running with control socket .*named-vm\.sock/);
  });

  it('answers malformed requests with errors and keeps serving', async () => {
    const socket = join(runDir, 'ctl-b.sock');
    const vm = await startVm(['--control', socket]);
    try {
      const { connect } = await import('node:net');
      const conn = connect(socket);
      conn.setEncoding('utf8');
      let text = '';
      conn.on('data', (d: string) => {
        text += d;
      });
      await new Promise((resolve) => conn.once('connect', resolve));
      conn.write(
        'not json\n{"id":"x","command":"status"}\n{"id":7}\n{"id":8,"command":"status"}\n',
      );
      for (let i = 0; i < 200 && text.split('\n').length < 5; i++)
        await new Promise((r) => setTimeout(r, 20));
      conn.end();
      const lines = text
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      assert.deepEqual(
        lines.slice(0, 3).map((l) => l.error),
        ['request is not valid JSON', 'request needs a numeric id', 'request needs a command name'],
      );
      assert.equal(lines[3].id, 8);
      assert.equal(lines[3].ok, true);
    } finally {
      vm.kill();
      await vm.exit;
    }
  });
});
