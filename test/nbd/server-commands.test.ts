import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import type { NbdExportOptions } from '../../src/nbd/server/export.ts';
import { memoryDisk, patternBytes, ScriptedDisk, startServer } from './nbd-fixtures.ts';
import { RawPeer } from './raw-peer.ts';

/**
 * Transmission on the server, driven by a raw peer over a Unix socket: the
 * replies to good and malformed requests, concurrency, and what survives
 * disconnects and shutdown.
 */

const MiB = 1024 * 1024;
const READ = 0;
const WRITE = 1;
const DISC = 2;
const FLUSH = 3;
const TRIM = 4;
const CACHE = 5;
const WRITE_ZEROES = 6;
const BLOCK_STATUS = 7;
const FUA = 1;
const NO_HOLE = 2;
const DF = 4;
const FAST_ZERO = 0x10;
const EPERM = 1;
const EIO = 5;
const EINVAL = 22;
const ENOSPC = 28;
const ENOTSUP = 95;
const SIMPLE = 0x67446698;
const STRUCTURED = 0x668e33ef;
const DONE = 1;
const TYPE_NONE = 0;
const TYPE_OFFSET_DATA = 1;
const TYPE_ERROR = 0x8001;
const TYPE_ERROR_OFFSET = 0x8002;

async function connectTo(
  t: TestContext,
  exports: NbdExportOptions[],
  structured: boolean,
  name = '',
): Promise<RawPeer> {
  const { socket } = await startServer(t, { exports });
  const peer = await RawPeer.connect(socket);
  t.after(() => peer.destroy());
  await peer.greet();
  await peer.go(name, structured);
  return peer;
}

/** Reads one complete structured reply; returns its chunks. */
async function structuredReply(peer: RawPeer) {
  const chunks = [];
  for (;;) {
    const c = await peer.chunk();
    assert.equal(c.magic, STRUCTURED);
    chunks.push(c);
    if (c.flags & DONE) return chunks;
  }
}

/** The error value of a one-chunk structured reply (0 for NONE). */
async function structuredError(peer: RawPeer, cookie: bigint): Promise<number> {
  const [c, ...rest] = await structuredReply(peer);
  assert.equal(rest.length, 0);
  assert.equal(c!.cookie, cookie);
  if (c!.type === TYPE_NONE) return 0;
  assert.ok(c!.type === TYPE_ERROR || c!.type === TYPE_ERROR_OFFSET, `type ${c!.type}`);
  const msgLen = c!.payload.readUInt16BE(4);
  assert.equal(c!.payload.length, 6 + msgLen + (c!.type === TYPE_ERROR_OFFSET ? 8 : 0));
  return c!.payload.readUInt32BE(0);
}

describe('NBD server transmission', () => {
  it('reads, writes, flushes, zeroes and trims with structured replies', async (t) => {
    const disk = new ScriptedDisk(4 * MiB);
    disk.data.set(patternBytes(4 * MiB, 1));
    const peer = await connectTo(t, [{ name: 'd', device: disk }], true);

    peer.sendRequest(READ, 1n, 8192, 4096);
    const [data] = await structuredReply(peer);
    assert.equal(data!.type, TYPE_OFFSET_DATA);
    assert.equal(data!.flags, DONE);
    assert.equal(data!.cookie, 1n);
    assert.equal(data!.payload.readBigUInt64BE(0), 8192n);
    assert.deepEqual(data!.payload.subarray(8), Buffer.from(disk.data.subarray(8192, 12288)));

    const payload = patternBytes(65536, 2);
    peer.sendRequest(WRITE, 2n, MiB, 65536, FUA, payload);
    assert.equal(await structuredError(peer, 2n), 0);
    assert.deepEqual(disk.data.subarray(MiB, MiB + 65536), payload);

    peer.sendRequest(FLUSH, 3n, 0, 0);
    assert.equal(await structuredError(peer, 3n), 0);
    assert.equal(disk.flushes, 1);

    peer.sendRequest(WRITE_ZEROES, 4n, MiB, 4096, NO_HOLE);
    assert.equal(await structuredError(peer, 4n), 0);
    peer.sendRequest(TRIM, 5n, MiB + 4096, 4096, FUA);
    assert.equal(await structuredError(peer, 5n), 0);
    assert.ok(disk.data.subarray(MiB, MiB + 8192).every((b) => b === 0));
    assert.deepEqual(disk.data.subarray(MiB + 8192, MiB + 65536), payload.subarray(8192));

    // A zero-length read is answered without data and without disconnecting.
    peer.sendRequest(READ, 6n, 0, 0, DF);
    assert.equal(await structuredError(peer, 6n), 0);
  });

  it('answers malformed requests with the right error and keeps the connection', async (t) => {
    const disk = memoryDisk(4 * MiB);
    for (const structured of [true, false]) {
      const peer = await connectTo(
        t,
        [
          { name: 'rw', device: disk, maxBlockSize: 65536 },
          { name: 'ro', device: disk, readOnly: true },
        ],
        structured,
      );
      const cases: [string, number, bigint | number, number, number, number, Uint8Array?][] = [
        ['read past the end', READ, 4 * MiB, 512, 0, EINVAL],
        ['read straddling the end', READ, 4 * MiB - 512, 1024, 0, EINVAL],
        ['read at 2^63', READ, 1n << 63n, 512, 0, EINVAL],
        ['misaligned read offset', READ, 100, 512, 0, EINVAL],
        ['misaligned read length', READ, 0, 100, 0, EINVAL],
        ['read above the maximum block', READ, 0, 131072, 0, EINVAL],
        ['write past the end', WRITE, 4 * MiB, 512, 0, ENOSPC, new Uint8Array(512)],
        ['misaligned write', WRITE, 10, 512, 0, EINVAL, new Uint8Array(512)],
        ['oversized write', WRITE, 0, 131072, 0, EINVAL, new Uint8Array(131072)],
        ['unknown command', 99, 0, 512, 0, EINVAL],
        ['CACHE (not advertised)', CACHE, 0, 512, 0, EINVAL],
        ['BLOCK_STATUS without contexts', BLOCK_STATUS, 0, 512, 0, EINVAL],
        ['unknown flag', READ, 0, 512, 0x8000, EINVAL],
        ['NO_HOLE on a write', WRITE, 0, 512, NO_HOLE, EINVAL, new Uint8Array(512)],
        ['FLUSH with a length', FLUSH, 0, 512, 0, EINVAL],
        ['zeroes past the end', WRITE_ZEROES, 4 * MiB, 4096, 0, ENOSPC],
        ['trim past the end', TRIM, 4 * MiB, 4096, 0, EINVAL],
      ];
      if (!structured) cases.push(['DF without structured replies', READ, 0, 512, DF, EINVAL]);
      let cookie = 100n;
      for (const [what, type, offset, length, flags, expected, payload] of cases) {
        cookie++;
        peer.sendRequest(type, cookie, offset, length, flags, payload);
        if (structured) {
          assert.equal(await structuredError(peer, cookie), expected, what);
        } else {
          const r = await peer.simpleReply();
          assert.equal(r.magic, SIMPLE);
          assert.equal(r.cookie, cookie, what);
          assert.equal(r.error, expected, what);
        }
      }
      // Still in step after all that (the refused payloads were skipped).
      peer.sendRequest(READ, 1n, 0, 512);
      if (structured) assert.equal((await structuredReply(peer))[0]!.type, TYPE_OFFSET_DATA);
      else assert.equal((await peer.simpleReply(512)).error, 0);
    }
  });

  it('honours FAST_ZERO: done when the device zeroes natively, ENOTSUP (and untouched) when not', async (t) => {
    const native = new ScriptedDisk(MiB);
    native.data.fill(0x33);
    const slow = new ScriptedDisk(MiB);
    slow.data.fill(0x44);
    Object.defineProperty(slow, 'canWriteZeroes', { value: false });
    const { socket } = await startServer(t, {
      exports: [
        { name: 'native', device: native },
        { name: 'slow', device: slow },
      ],
    });
    for (const [name, disk, expected] of [
      ['native', native, 0],
      ['slow', slow, ENOTSUP],
    ] as const) {
      const peer = await RawPeer.connect(socket);
      t.after(() => peer.destroy());
      await peer.greet();
      const { flags } = await peer.go(name, true);
      assert.equal(flags & 0x840, 0x840, 'WRITE_ZEROES and FAST_ZERO advertised');
      peer.sendRequest(WRITE_ZEROES, 1n, 0, 8192, FAST_ZERO);
      assert.equal(await structuredError(peer, 1n), expected, name);
      const zeroed = disk.data.subarray(0, 8192).every((b) => b === 0);
      assert.equal(zeroed, expected === 0, name);
      // Without FAST_ZERO the slow device still zeroes (by writing zeros).
      peer.sendRequest(WRITE_ZEROES, 2n, 0, 8192, NO_HOLE);
      assert.equal(await structuredError(peer, 2n), 0);
      assert.ok(disk.data.subarray(0, 8192).every((b) => b === 0));
    }
  });

  it('refuses writes, trims and zeroes on a read-only export with EPERM', async (t) => {
    const disk = memoryDisk(MiB);
    const peer = await connectTo(t, [{ name: 'ro', device: disk, readOnly: true }], true);
    peer.sendRequest(WRITE, 1n, 0, 512, 0, new Uint8Array(512).fill(9));
    assert.equal(await structuredError(peer, 1n), EPERM);
    peer.sendRequest(TRIM, 2n, 0, 512);
    assert.equal(await structuredError(peer, 2n), EPERM);
    peer.sendRequest(WRITE_ZEROES, 3n, 0, 512);
    assert.equal(await structuredError(peer, 3n), EPERM);
    peer.sendRequest(READ, 4n, 0, 512);
    const [c] = await structuredReply(peer);
    assert.ok(
      c!.payload.subarray(8).every((b) => b === 0),
      'the refused write changed nothing',
    );
  });

  it('reports backend failures as EIO, with the failing offset when structured', async (t) => {
    const disk = new ScriptedDisk(MiB);
    disk.badRanges.push([65536 + 1024, 65536 + 1536]);
    const structuredPeer = await connectTo(t, [{ name: 'd', device: disk }], true);
    structuredPeer.sendRequest(READ, 9n, 65536, 4096);
    const [c, ...rest] = await structuredReply(structuredPeer);
    assert.equal(rest.length, 0);
    assert.equal(c!.type, TYPE_ERROR_OFFSET);
    assert.equal(c!.payload.readUInt32BE(0), EIO);
    const msgLen = c!.payload.readUInt16BE(4);
    assert.match(c!.payload.subarray(6, 6 + msgLen).toString(), /unreadable/);
    assert.equal(c!.payload.readBigUInt64BE(6 + msgLen), BigInt(65536 + 1024));

    const simplePeer = await connectTo(t, [{ name: 'd', device: disk }], false);
    simplePeer.sendRequest(READ, 10n, 65536, 4096);
    const r = await simplePeer.simpleReply(4096);
    assert.equal(r.error, EIO);
    assert.equal(r.data.length, 0, 'no data follows a failed simple read');
    simplePeer.sendRequest(READ, 11n, 0, 512);
    assert.equal((await simplePeer.simpleReply(512)).cookie, 11n);
  });

  it('closes the connection on a bad request magic', async (t) => {
    const peer = await connectTo(t, [{ name: 'd', device: memoryDisk(MiB) }], true);
    peer.sendRequest(READ, 1n, 0, 512, 0, undefined, 0x25609514);
    assert.equal(await peer.closedWithin(5000), true);
  });

  it('runs many requests at once and replies as each completes, never interleaving', async (t) => {
    const disk = new ScriptedDisk(4 * MiB);
    disk.data.set(patternBytes(4 * MiB, 3));
    // Later offsets finish sooner, so completion order differs from request order.
    disk.delay = (offset) => 40 - Math.floor(offset / 65536) * 0.5;
    const peer = await connectTo(t, [{ name: 'd', device: disk }], true);
    const count = 60;
    const writes = new Map<bigint, Uint8Array>();
    for (let i = 0; i < count; i++) {
      const cookie = BigInt(i + 1);
      if (i % 2 === 0) {
        peer.sendRequest(READ, cookie, i * 65536, 8192);
      } else {
        const data = patternBytes(4096, 1000 + i);
        writes.set(cookie, data);
        peer.sendRequest(WRITE, cookie, i * 65536 + 16384, 4096, 0, data);
      }
    }
    const order: bigint[] = [];
    for (let i = 0; i < count; i++) {
      const [c, ...rest] = await structuredReply(peer);
      assert.equal(rest.length, 0);
      order.push(c!.cookie);
      const index = Number(c!.cookie) - 1;
      if (index % 2 === 0) {
        assert.equal(c!.type, TYPE_OFFSET_DATA);
        const at = index * 65536;
        assert.equal(c!.payload.readBigUInt64BE(0), BigInt(at));
        assert.deepEqual(c!.payload.subarray(8), Buffer.from(disk.data.subarray(at, at + 8192)));
      } else {
        assert.equal(c!.type, TYPE_NONE);
      }
    }
    assert.deepEqual(
      [...order].sort((a, b) => Number(a - b)),
      Array.from({ length: count }, (_, i) => BigInt(i + 1)),
      'every cookie answered exactly once',
    );
    assert.notDeepEqual(
      order,
      [...order].sort((a, b) => Number(a - b)),
      'replies out of order',
    );
    for (const [cookie, data] of writes) {
      const at = (Number(cookie) - 1) * 65536 + 16384;
      assert.deepEqual(disk.data.subarray(at, at + 4096), data);
    }
  });

  it('answers requests in flight before closing on NBD_CMD_DISC', async (t) => {
    const disk = new ScriptedDisk(MiB);
    disk.delay = () => 100;
    const peer = await connectTo(t, [{ name: 'd', device: disk }], true);
    const data = patternBytes(4096, 5);
    peer.sendRequest(WRITE, 1n, 0, 4096, 0, data);
    peer.sendRequest(DISC, 2n, 0, 0);
    assert.equal(await structuredError(peer, 1n), 0);
    assert.equal(await peer.closedWithin(5000), true);
    assert.deepEqual(disk.data.subarray(0, 4096), data);
  });

  it('keeps acknowledged writes when the client vanishes mid-request, and applies no partial write', async (t) => {
    const disk = new ScriptedDisk(MiB);
    const { socket } = await startServer(t, { exports: [{ name: 'd', device: disk }] });
    const peer = await RawPeer.connect(socket);
    await peer.greet();
    await peer.go('d', true);
    const acked = patternBytes(4096, 6);
    peer.sendRequest(WRITE, 1n, 0, 4096, FUA, acked);
    assert.equal(await structuredError(peer, 1n), 0);
    // A write whose payload is cut off, and a slow one already running.
    disk.delay = () => 100;
    peer.sendRequest(WRITE, 2n, 8192, 4096, 0, patternBytes(4096, 7));
    peer.sendRequest(WRITE, 3n, 65536, 4096, 0, patternBytes(2048, 8));
    await new Promise((r) => setTimeout(r, 20));
    peer.destroy();
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(disk.data.subarray(0, 4096), acked);
    assert.deepEqual(
      disk.data.subarray(8192, 12288),
      patternBytes(4096, 7),
      'the running write finished',
    );
    assert.ok(
      disk.data.subarray(65536, 65536 + 4096).every((b) => b === 0),
      'no partial write',
    );
    // The server still serves others.
    disk.delay = () => 0;
    const again = await RawPeer.connect(socket);
    t.after(() => again.destroy());
    await again.greet();
    assert.equal((await again.go('d', false)).size, BigInt(MiB));
  });

  it('stops gracefully: running requests are answered, the device is flushed, then the connection closes', async (t) => {
    const disk = new ScriptedDisk(MiB);
    const { server, socket } = await startServer(t, { exports: [{ name: 'd', device: disk }] });
    const peer = await RawPeer.connect(socket);
    t.after(() => peer.destroy());
    await peer.greet();
    await peer.go('d', true);
    disk.delay = () => 150;
    const data = patternBytes(8192, 9);
    peer.sendRequest(WRITE, 1n, 4096, 8192, 0, data);
    await new Promise((r) => setTimeout(r, 30));
    const closing = server.close();
    assert.equal(await structuredError(peer, 1n), 0);
    await closing;
    assert.equal(await peer.closedWithin(5000), true);
    assert.ok(disk.flushes >= 1, 'flushed on shutdown');
    assert.deepEqual(disk.data.subarray(4096, 12288), data);
    assert.equal(server.connectionCount, 0);
  });
});
