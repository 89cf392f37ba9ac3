import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { MemoryDisk } from '../../src/block/memory-disk.ts';
import { NbdServerConnection, type ServerTransport } from '../../src/nbd/server/connection.ts';
import { NbdServer } from '../../src/nbd/server/server.ts';
import { goData } from './raw-peer.ts';

/**
 * Property tests of the server's input side: a connection fed arbitrary
 * bytes (in the handshake or in transmission) never throws and never hangs,
 * and well-framed requests with arbitrary fields are each answered exactly
 * once without the connection being dropped.
 */

class MemoryTransport implements ServerTransport {
  readonly out: Uint8Array[] = [];
  ended = false;
  destroyed = false;
  writableLength = 0;
  write(bytes: Uint8Array): void {
    this.out.push(bytes);
  }
  end(): void {
    this.ended = true;
  }
  destroy(): void {
    this.destroyed = true;
  }
  pause(): void {}
  resume(): void {}
  get output(): Buffer {
    return Buffer.concat(this.out);
  }
}

const disk = new MemoryDisk(1024 * 1024);
const table = new NbdServer({
  exports: [
    { name: 'rw', device: disk, maxBlockSize: 65536 },
    { name: 'ro', device: disk, readOnly: true },
  ],
});

function option(code: number, data: Uint8Array = new Uint8Array(0)): Buffer {
  const h = Buffer.alloc(16);
  h.write('IHAVEOPT', 0, 'latin1');
  h.writeUInt32BE(code, 8);
  h.writeUInt32BE(data.length, 12);
  return Buffer.concat([h, data]);
}

/** Client flags, STRUCTURED_REPLY, GO: the bytes that reach transmission. */
function handshake(exportName: string): Buffer {
  return Buffer.concat([
    Buffer.from([0, 0, 0, 3]),
    option(8),
    option(7, goData(exportName, [0, 3])),
  ]);
}

function request(
  type: number,
  flags: number,
  cookie: bigint,
  offset: bigint,
  length: number,
): Buffer {
  const h = Buffer.alloc(28);
  h.writeUInt32BE(0x25609513, 0);
  h.writeUInt16BE(flags, 4);
  h.writeUInt16BE(type, 6);
  h.writeBigUInt64BE(cookie, 8);
  h.writeBigUInt64BE(offset, 16);
  h.writeUInt32BE(length, 24);
  return h;
}

/** Splits the server's structured-reply output into chunks; fails on any malformed frame. */
function parseChunks(bytes: Buffer): { cookie: bigint; flags: number; type: number }[] {
  const chunks = [];
  let at = 0;
  while (at < bytes.length) {
    assert.ok(bytes.length - at >= 20, 'truncated chunk header');
    assert.equal(bytes.readUInt32BE(at), 0x668e33ef, 'chunk magic');
    const length = bytes.readUInt32BE(at + 16);
    chunks.push({
      flags: bytes.readUInt16BE(at + 4),
      type: bytes.readUInt16BE(at + 6),
      cookie: bytes.readBigUInt64BE(at + 8),
    });
    at += 20 + length;
    assert.ok(at <= bytes.length, 'chunk payload runs past the output');
  }
  return chunks;
}

async function settle(conn: NbdServerConnection): Promise<void> {
  // Every request runs on an in-memory disk: idle() must resolve promptly.
  await Promise.race([
    conn.idle(),
    new Promise((_, reject) =>
      setTimeout(() => reject(new Error('connection did not settle')), 2000),
    ),
  ]);
}

describe('NBD server input properties', () => {
  it('never throws or hangs on arbitrary bytes during the handshake', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 10 }),
        fc.boolean(),
        async (pieces, validPrefix) => {
          const transport = new MemoryTransport();
          const conn = new NbdServerConnection(transport, table);
          conn.start();
          if (validPrefix) conn.receive(Buffer.concat([Buffer.from([0, 0, 0, 1]), option(3)]));
          for (const p of pieces) conn.receive(p);
          await settle(conn);
          const out = transport.output;
          assert.equal(out.readBigUInt64BE(0), 0x4e42444d41474943n);
        },
      ),
      { numRuns: 1500 },
    );
  });

  it('never throws or hangs on arbitrary bytes during transmission; every reply is well framed', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('rw', 'ro'),
        fc.array(fc.uint8Array({ maxLength: 80 }), { maxLength: 10 }),
        async (name, pieces) => {
          const transport = new MemoryTransport();
          const conn = new NbdServerConnection(transport, table);
          conn.start();
          conn.receive(handshake(name));
          assert.equal(conn.inTransmission, true);
          const before = transport.output.length;
          for (const p of pieces) conn.receive(p);
          await settle(conn);
          parseChunks(transport.output.subarray(before));
        },
      ),
      { numRuns: 1500 },
    );
  });

  it('answers every well-framed request exactly once, whatever its fields, without disconnecting', async () => {
    const req = fc.record({
      type: fc.oneof(fc.constantFrom(0, 1, 3, 4, 5, 6, 7), fc.integer({ min: 8, max: 0xffff })),
      flags: fc.oneof(fc.constantFrom(0, 1, 2, 4, 5), fc.integer({ min: 0, max: 0xffff })),
      offset: fc.oneof(
        fc.integer({ min: 0, max: 2048 }).map((n) => BigInt(n * 512)),
        fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
      ),
      length: fc.oneof(
        fc.integer({ min: 0, max: 256 }).map((n) => n * 512),
        fc.integer({ min: 0, max: 70_000 }),
      ),
    });
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('rw', 'ro'),
        fc.array(req, { maxLength: 20 }),
        fc.integer({ min: 1, max: 300 }),
        async (name, requests, split) => {
          const transport = new MemoryTransport();
          const conn = new NbdServerConnection(transport, table);
          conn.start();
          conn.receive(handshake(name));
          const before = transport.output.length;
          const stream = Buffer.concat(
            requests.map((r, i) => {
              const header = request(r.type, r.flags, BigInt(i + 1), r.offset, r.length);
              // A WRITE is always followed by its payload, valid or not.
              return r.type === 1 ? Buffer.concat([header, Buffer.alloc(r.length, 0x42)]) : header;
            }),
          );
          for (let at = 0; at < stream.length; at += split) {
            conn.receive(stream.subarray(at, at + split));
          }
          await settle(conn);
          assert.equal(conn.isClosed, false, `closed: ${conn.reason}`);
          const done = parseChunks(transport.output.subarray(before)).filter((c) => c.flags & 1);
          const cookies = done.map((c) => Number(c.cookie)).sort((a, b) => a - b);
          assert.deepEqual(
            cookies,
            requests.map((_, i) => i + 1),
          );
        },
      ),
      { numRuns: 300 },
    );
  });
});
