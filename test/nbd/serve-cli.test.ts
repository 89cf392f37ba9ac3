import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { access, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { connectNbd } from '../../src/nbd/client/client.ts';
import { requireTools, runOk, spawnTool, tempDir } from '../real-tools.ts';
import { patternBytes } from './nbd-fixtures.ts';
import { RawPeer } from './raw-peer.ts';

/**
 * `hvkit disk serve` as a process: it prints where it listens, serves the
 * image, stops on SIGTERM/SIGINT with exit code 0 after flushing, and
 * refuses bad input with a message and a non-zero exit.
 */

const MiB = 1024 * 1024;
const repo = join(import.meta.dirname, '../..');
const main = join(repo, 'src/cli/main.ts');

interface Served {
  child: ChildProcess;
  uri: string;
  output: () => string;
  exit: Promise<number | null>;
}

function serveProcess(t: TestContext, args: string[]): Served {
  const child = spawnTool(
    t,
    process.execPath,
    ['--import', 'tsx', main, 'disk', 'serve', ...args],
    {
      cwd: repo,
    },
  );
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, uri: '', output: child.output, exit };
}

async function started(t: TestContext, args: string[]): Promise<Served> {
  const served = serveProcess(t, args);
  const deadline = Date.now() + 30_000;
  for (;;) {
    const match = served.output().match(/ at (nbd\S+)\n/);
    if (match) return { ...served, uri: match[1]! };
    if (served.child.exitCode !== null) throw new Error(`serve exited early:\n${served.output()}`);
    if (Date.now() > deadline) throw new Error(`serve did not start:\n${served.output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function finished(
  t: TestContext,
  args: string[],
): Promise<{ code: number | null; output: string }> {
  const served = serveProcess(t, args);
  const code = await served.exit;
  return { code, output: served.output() };
}

describe('hvkit disk serve', () => {
  it('serves an image on a Unix socket and stops cleanly on SIGTERM', async (t) => {
    requireTools('nbdinfo');
    const dir = await tempDir(t);
    const image = join(dir, 'disk.raw');
    await writeFile(image, new Uint8Array(8 * MiB));
    const socket = join(dir, 'serve.sock');
    const served = await started(t, [image, '--socket', socket, '--export', 'd0']);
    assert.equal(served.uri, `nbd+unix:///d0?socket=${socket}`);
    assert.match(served.output(), /serving .*disk\.raw \(raw, 8 MiB, read-write\) as export "d0"/);

    const info = JSON.parse(await runOk('nbdinfo', ['--json', served.uri]));
    assert.equal(info.exports[0]['export-size'], 8 * MiB);
    const client = await connectNbd(served.uri);
    const data = patternBytes(65536, 31);
    await client.write(MiB, data);
    await client.close();

    // A client breaking the protocol is dropped and reported, and the server goes on.
    const rude = await RawPeer.connect(socket);
    await rude.greet(0xff);
    assert.equal(await rude.closedWithin(5000), true);
    assert.equal((await connectNbd(served.uri)).size, 8 * MiB);

    served.child.kill('SIGTERM');
    assert.equal(await served.exit, 0, served.output());
    assert.match(served.output(), /dropped a connection: client sent unknown handshake flags 0xff/);
    assert.match(served.output(), /SIGTERM: stopping/);
    assert.match(served.output(), /stopped; image flushed and closed/);
    await assert.rejects(access(socket), 'the socket file is removed');
    const file = await readFile(image);
    assert.deepEqual(new Uint8Array(file.subarray(MiB, MiB + 65536)), data);
  });

  it('serves read-only on a loopback TCP port and stops on SIGINT', async (t) => {
    requireTools('qemu-io');
    const dir = await tempDir(t);
    const image = join(dir, 'disk.raw');
    await writeFile(image, patternBytes(MiB, 32));
    const served = await started(t, [image, '--port', '0', '--read-only', '--format', 'raw']);
    assert.match(served.uri, /^nbd:\/\/127\.0\.0\.1:\d+\/$/);
    assert.match(served.output(), /read-only/);
    const client = await connectNbd(served.uri);
    assert.equal(client.readOnly, true);
    const back = new Uint8Array(4096);
    await client.read(0, back);
    assert.deepEqual(back, patternBytes(MiB, 32).subarray(0, 4096));
    await client.close();
    const write = await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 4k', served.uri]).catch(
      (err: Error) => err.message,
    );
    assert.match(write, /read-only|Operation not permitted|Permission denied/i);

    served.child.kill('SIGINT');
    assert.equal(await served.exit, 0, served.output());
    assert.deepEqual(new Uint8Array(await readFile(image)), patternBytes(MiB, 32));
  });

  it('refuses bad input with a message and a non-zero exit, touching nothing', async (t) => {
    const dir = await tempDir(t);
    const image = join(dir, 'disk.raw');
    await writeFile(image, new Uint8Array(MiB));
    const precious = join(dir, 'precious.txt');
    await writeFile(precious, 'keep me');

    const cases: [string[], RegExp][] = [
      [[image], /exactly one of --socket PATH or --port N/],
      [[image, '--socket', join(dir, 's'), '--port', '1'], /exactly one of/],
      [[image, '--port', 'abc'], /a port is a number/],
      [[image, '--port', '70000'], /a port is a number/],
      [[image, '--port', '0', '--format', 'qcow2'], /Allowed choices are raw, vhdx, vhd/],
      [[join(dir, 'missing.raw'), '--port', '0'], /missing\.raw/],
      [[image, '--socket', precious], /exists and is not a socket/],
    ];
    for (const [args, message] of cases) {
      const { code, output } = await finished(t, args);
      assert.notEqual(code, 0, args.join(' '));
      assert.match(output, message, args.join(' '));
    }
    assert.equal(await readFile(precious, 'utf8'), 'keep me');
  });
});
