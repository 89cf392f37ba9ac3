import assert from 'node:assert/strict';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { before, describe, it, type TestContext } from 'node:test';
import { DiskIoError } from '../../src/block/block-device.ts';
import { connectNbd, type NbdClient } from '../../src/nbd/client/client.ts';
import { openDisk } from '../../src/nbd/open-disk.ts';
import { requireTools, spawnTool, tempDir, waitForSocket } from '../real-tools.ts';
import { memoryDisk, patternBytes, startServer } from './nbd-fixtures.ts';

/**
 * hvkit's NBD client against qemu-nbd and nbdkit (memory plugin; error,
 * blocksize-policy and nozero filters; --no-sr), and against a hostile
 * server written in the test.
 */

const MiB = 1024 * 1024;

async function client(t: TestContext, uri: string, options = {}): Promise<NbdClient> {
  const c = await connectNbd(uri, options);
  t.after(() => c.close());
  return c;
}

async function nbdkit(t: TestContext, args: string[]): Promise<string> {
  const dir = await tempDir(t);
  const socket = join(dir, 'kit.sock');
  spawnTool(t, 'nbdkit', ['-f', '-U', socket, ...args]);
  await waitForSocket(socket);
  return socket;
}

/** Writes, reads back, zeroes, discards, flushes; many requests in flight. */
async function exercise(c: NbdClient): Promise<void> {
  const data = patternBytes(3 * MiB, 11);
  await c.write(MiB, data);
  const back = new Uint8Array(3 * MiB);
  await c.read(MiB, back);
  assert.deepEqual(back, data);

  await c.write(0, patternBytes(4096, 12), { fua: true });
  await c.writeZeroes(MiB, 8192);
  await c.discard(MiB + 8192, 8192);
  const z = new Uint8Array(16384).fill(0xff);
  await c.read(MiB, z);
  assert.ok(z.every((b) => b === 0));
  await c.flush();

  const ops: Promise<void>[] = [];
  const blocks = new Map<number, Uint8Array>();
  for (let i = 0; i < 128; i++) {
    const block = patternBytes(4096, 100 + i);
    blocks.set(i, block);
    ops.push(c.write(8 * MiB + i * 8192, block));
  }
  await Promise.all(ops);
  const reads = [...blocks.keys()].map(async (i) => {
    const got = new Uint8Array(4096);
    await c.read(8 * MiB + i * 8192, got);
    assert.deepEqual(got, blocks.get(i));
  });
  await Promise.all(reads);
  assert.equal(c.requestsInFlight, 0);
}

describe('NBD client against real servers', () => {
  before(() => {
    requireTools('qemu-nbd', 'nbdkit');
  });

  it('reads and writes a raw image served by qemu-nbd on a Unix socket', async (t) => {
    const dir = await tempDir(t);
    const image = join(dir, 'disk.raw');
    await writeFile(image, new Uint8Array(16 * MiB));
    const socket = join(dir, 'qemu.sock');
    spawnTool(t, 'qemu-nbd', ['-k', socket, '-f', 'raw', '--persistent', '--shared=4', image]);
    await waitForSocket(socket);
    const c = await client(t, `nbd+unix:///?socket=${socket}`);
    assert.equal(c.size, 16 * MiB);
    assert.equal(c.structuredReplies, true);
    assert.equal(c.canFlush, true);
    await exercise(c);
    await c.close();
    const file = await readFile(image);
    assert.deepEqual(new Uint8Array(file.subarray(0, 4096)), patternBytes(4096, 12));
    assert.deepEqual(
      new Uint8Array(file.subarray(MiB + 16384, 4 * MiB)),
      patternBytes(3 * MiB, 11).subarray(16384),
    );
  });

  it('reads and writes qemu-nbd over loopback TCP, opened through openDisk', async (t) => {
    const dir = await tempDir(t);
    const image = join(dir, 'disk.raw');
    await writeFile(image, new Uint8Array(12 * MiB));
    const port = await freePort();
    spawnTool(t, 'qemu-nbd', [
      '-b',
      '127.0.0.1',
      '-p',
      String(port),
      '-f',
      'raw',
      '-x',
      'exp',
      '--persistent',
      '--shared=4',
      image,
    ]);
    let device: Awaited<ReturnType<typeof openDisk>> | undefined;
    for (let i = 0; i < 100 && !device; i++) {
      device = await openDisk(`nbd://127.0.0.1:${port}/exp`).catch(async () => {
        await new Promise((r) => setTimeout(r, 100));
        return undefined;
      });
    }
    assert.ok(device, 'qemu-nbd did not come up');
    t.after(() => device.close());
    assert.equal(device.format, 'nbd');
    await exercise(device as NbdClient);
  });

  it('reads and writes nbdkit memory, splitting requests above its maximum block size', async (t) => {
    const socket = await nbdkit(t, [
      '--filter=blocksize-policy',
      'memory',
      '64M',
      'blocksize-maximum=65536',
      'blocksize-error-policy=error',
    ]);
    const c = await client(t, `nbd+unix:///?socket=${socket}`);
    assert.equal(c.maxRequest, 65536);
    await exercise(c);
  });

  it('turns nbdkit error-filter failures into DiskIoError, never into data', async (t) => {
    const dir = await tempDir(t);
    const injectRead = join(dir, 'inject-read');
    const injectWrite = join(dir, 'inject-write');
    for (const noSr of [false, true]) {
      const socket = await nbdkit(t, [
        ...(noSr ? ['--no-sr'] : []),
        '--filter=error',
        'memory',
        '8M',
        'error-pread=EIO',
        'error-pread-rate=100%',
        `error-pread-file=${injectRead}`,
        'error-pwrite=ENOSPC',
        'error-pwrite-rate=100%',
        `error-pwrite-file=${injectWrite}`,
      ]);
      const c = await client(t, `nbd+unix:///?socket=${socket}`);
      assert.equal(c.structuredReplies, !noSr);
      const data = patternBytes(65536, 21);
      await c.write(65536, data);

      await writeFile(injectRead, '');
      const target = new Uint8Array(65536).fill(0x77);
      await assert.rejects(c.read(65536, target), (err: unknown) => {
        assert.ok(err instanceof DiskIoError);
        assert.equal(err.code, 'EIO');
        assert.equal(err.offset, 65536);
        return true;
      });
      // Structured or simple, a failed read delivers no data (proto.md: a simple
      // error reply carries no payload; a structured one an error chunk).
      assert.ok(
        target.every((b) => b === 0x77),
        `no data delivered for a failed read (${noSr ? 'simple' : 'structured'} replies)`,
      );
      // Writes still work while reads fail, and the connection survives the errors.
      await c.write(0, patternBytes(4096, 22));
      await rm(injectRead);
      await c.read(65536, target);
      assert.deepEqual(target, data);

      await writeFile(injectWrite, '');
      await assert.rejects(c.write(0, new Uint8Array(4096)), (err: unknown) => {
        assert.ok(err instanceof DiskIoError);
        assert.equal(err.code, 'ENOSPC');
        return true;
      });
      await rm(injectWrite);
      const first = new Uint8Array(4096);
      await c.read(0, first);
      assert.deepEqual(first, patternBytes(4096, 22));
    }
  });

  it('works with nbdkit --no-sr (simple replies only) and without WRITE_ZEROES', async (t) => {
    const socket = await nbdkit(t, ['--no-sr', '--filter=nozero', 'memory', '32M']);
    const c = await client(t, `nbd+unix:///?socket=${socket}`);
    assert.equal(c.structuredReplies, false);
    assert.equal(c.canWriteZeroes, false);
    await exercise(c);
  });

  it('refuses writes locally on a read-only connection', async (t) => {
    const { uri } = await startServer(t, { exports: [{ name: '', device: memoryDisk(MiB) }] });
    const c = await client(t, uri, { readOnly: true });
    await assert.rejects(c.write(0, new Uint8Array(512)), { name: 'DiskIoError', code: 'EROFS' });
    await assert.rejects(c.read(0, new Uint8Array(100)), { code: 'EINVAL' });
    await assert.rejects(c.read(MiB, new Uint8Array(512)), { code: 'ERANGE' });
  });

  it('fails cleanly when a server answers an unknown cookie: every pending request rejects', async (t) => {
    const hostile = await hostileServer(t);
    const c = await client(t, `nbd+unix:///?socket=${hostile.socket}`);
    const pending = [0, 1, 2].map((i) => c.read(i * 512, new Uint8Array(512)));
    const results = await Promise.allSettled(pending);
    for (const r of results) {
      assert.equal(r.status, 'rejected');
      assert.ok(r.reason instanceof DiskIoError);
      assert.match(r.reason.message, /unknown cookie 0x3e7/);
    }
    await assert.rejects(c.read(0, new Uint8Array(512)), /unknown cookie/);
  });

  it('reports a refused export with the server’s message', async (t) => {
    const { uri } = await startServer(t, { exports: [{ name: 'a', device: memoryDisk(MiB) }] });
    await assert.rejects(
      connectNbd(uri.replace(':///?', ':///b?')),
      /refused export "b": ErrUnknown: no export named "b"/,
    );
  });
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const address = s.address();
      s.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject()));
    });
  });
}

/**
 * A server that negotiates correctly (bytes written here from proto.md) and
 * then answers the first request with cookie 999, which was never sent.
 */
async function hostileServer(t: TestContext): Promise<{ socket: string }> {
  const dir = await tempDir(t);
  const socket = join(dir, 'hostile.sock');
  const server: Server = createServer((conn) => {
    let input = Buffer.alloc(0);
    let phase: 'flags' | 'options' | 'transmission' = 'flags';
    const reply = (option: number, type: number, data = Buffer.alloc(0)): Buffer => {
      const h = Buffer.alloc(20);
      h.writeBigUInt64BE(0x3e889045565a9n, 0);
      h.writeUInt32BE(option, 8);
      h.writeUInt32BE(type, 12);
      h.writeUInt32BE(data.length, 16);
      return Buffer.concat([h, data]);
    };
    const greeting = Buffer.alloc(18);
    greeting.write('NBDMAGICIHAVEOPT', 0, 'latin1');
    greeting.writeUInt16BE(3, 16);
    conn.write(greeting);
    conn.on('error', () => {});
    conn.on('data', (d: Buffer) => {
      input = Buffer.concat([input, d]);
      for (;;) {
        if (phase === 'flags') {
          if (input.length < 4) return;
          input = input.subarray(4);
          phase = 'options';
        } else if (phase === 'options') {
          if (input.length < 16) return;
          const option = input.readUInt32BE(8);
          const length = input.readUInt32BE(12);
          if (input.length < 16 + length) return;
          input = input.subarray(16 + length);
          if (option === 7) {
            const info = Buffer.alloc(12);
            info.writeBigUInt64BE(BigInt(MiB), 2);
            info.writeUInt16BE(1, 10);
            conn.write(Buffer.concat([reply(7, 3, info), reply(7, 1)]));
            phase = 'transmission';
          } else {
            conn.write(reply(option, 1));
          }
        } else {
          if (input.length < 28) return;
          input = input.subarray(28);
          const bogus = Buffer.alloc(20);
          bogus.writeUInt32BE(0x668e33ef, 0);
          bogus.writeUInt16BE(1, 4);
          bogus.writeBigUInt64BE(999n, 8);
          conn.write(bogus);
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { socket };
}
