import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  type ReplyError,
  ReplyParser,
  type ReplyTarget,
} from '../../src/nbd/client/reply-parser.ts';

/**
 * The client's reply parser against hand-built vectors (encoded here from
 * proto.md) and against hostile byte streams: it must never throw, never
 * write outside the request's buffer, complete each request at most once,
 * and reject what is inconsistent.
 */

const READ = 0;
const WRITE = 1;
const FLUSH = 3;

function simple(cookie: bigint, error: number, data?: Uint8Array): Buffer {
  const h = Buffer.alloc(16);
  h.writeUInt32BE(0x67446698, 0);
  h.writeUInt32BE(error, 4);
  h.writeBigUInt64BE(cookie, 8);
  return data ? Buffer.concat([h, data]) : h;
}

function chunk(
  cookie: bigint,
  flags: number,
  type: number,
  payload: Uint8Array = Buffer.alloc(0),
): Buffer {
  const h = Buffer.alloc(20);
  h.writeUInt32BE(0x668e33ef, 0);
  h.writeUInt16BE(flags, 4);
  h.writeUInt16BE(type, 6);
  h.writeBigUInt64BE(cookie, 8);
  h.writeUInt32BE(payload.length, 16);
  return Buffer.concat([h, payload]);
}

function offsetData(offset: number, data: Uint8Array): Buffer {
  const p = Buffer.alloc(8);
  p.writeBigUInt64BE(BigInt(offset));
  return Buffer.concat([p, data]);
}

function hole(offset: number, length: number): Buffer {
  const p = Buffer.alloc(12);
  p.writeBigUInt64BE(BigInt(offset));
  p.writeUInt32BE(length, 8);
  return p;
}

function errorPayload(error: number, message: string, offset?: number): Buffer {
  const m = Buffer.from(message);
  const p = Buffer.alloc(6 + m.length + (offset === undefined ? 0 : 8));
  p.writeUInt32BE(error, 0);
  p.writeUInt16BE(m.length, 4);
  m.copy(p, 6);
  if (offset !== undefined) p.writeBigUInt64BE(BigInt(offset), 6 + m.length);
  return p;
}

interface Harness {
  parser: ReplyParser;
  completions: Map<number, ReplyError | undefined>;
  duplicates: number;
  targets: Map<number, ReplyTarget>;
  guard: Uint8Array;
}

/** Pending requests: cookie 1 READ 4096@8192, 2 WRITE, 3 FLUSH, 4 READ 1024@0. */
function harness(structured: boolean): Harness {
  // Read buffers live inside a guard buffer so stray writes are visible.
  const guard = new Uint8Array(8192 + 64).fill(0xee);
  const targets = new Map<number, ReplyTarget>([
    [1, { command: READ, offset: 8192, length: 4096, buffer: guard.subarray(16, 16 + 4096) }],
    [2, { command: WRITE, offset: 0, length: 512, buffer: undefined }],
    [3, { command: FLUSH, offset: 0, length: 0, buffer: undefined }],
    [4, { command: READ, offset: 0, length: 1024, buffer: guard.subarray(4200, 4200 + 1024) }],
  ]);
  const h: Harness = {
    parser: undefined as unknown as ReplyParser,
    completions: new Map(),
    duplicates: 0,
    targets,
    guard,
  };
  h.parser = new ReplyParser(
    {
      find: (cookie) => (h.completions.has(cookie) ? undefined : targets.get(cookie)),
      complete: (cookie, error) => {
        if (h.completions.has(cookie)) h.duplicates++;
        h.completions.set(cookie, error);
      },
    },
    structured,
  );
  return h;
}

function guardIntact(h: Harness): boolean {
  const g = h.guard;
  const outside = [
    [0, 16],
    [16 + 4096, 4200],
    [4200 + 1024, g.length],
  ];
  return outside.every(([a, b]) => g.subarray(a, b).every((x) => x === 0xee));
}

describe('NBD reply parser', () => {
  it('parses simple replies, with read data, split at every byte', () => {
    const data = Buffer.alloc(4096, 0x5a);
    const stream = Buffer.concat([simple(2n, 0), simple(1n, 0, data), simple(3n, 28)]);
    for (let cut = 0; cut <= stream.length; cut += 7) {
      const h = harness(false);
      assert.equal(h.parser.push(stream.subarray(0, cut)), true);
      assert.equal(h.parser.push(stream.subarray(cut)), true);
      assert.equal(h.completions.size, 3);
      assert.equal(h.completions.get(1), undefined);
      assert.equal(h.completions.get(3)?.error, 28);
      assert.deepEqual(Buffer.from(h.targets.get(1)!.buffer!), data);
      assert.ok(guardIntact(h));
    }
  });

  it('reassembles data and hole chunks in any order', () => {
    const h = harness(true);
    const a = Buffer.alloc(1024, 1);
    const c = Buffer.alloc(1024, 3);
    h.targets.get(1)!.buffer!.fill(9);
    const ok = h.parser.push(
      Buffer.concat([
        chunk(1n, 0, 1, offsetData(8192 + 3072, c)),
        chunk(2n, 1, 0),
        chunk(1n, 0, 2, hole(8192 + 1024, 2048)),
        chunk(1n, 1, 1, offsetData(8192, a)),
      ]),
    );
    assert.equal(ok, true);
    assert.equal(h.completions.get(2), undefined);
    assert.equal(h.completions.has(1), true);
    assert.equal(h.completions.get(1), undefined);
    const buf = Buffer.from(h.targets.get(1)!.buffer!);
    assert.deepEqual(buf.subarray(0, 1024), a);
    assert.ok(buf.subarray(1024, 3072).every((x) => x === 0));
    assert.deepEqual(buf.subarray(3072), c);
  });

  it('turns error chunks into errors (with offset), not data', () => {
    const h = harness(true);
    assert.equal(
      h.parser.push(
        Buffer.concat([
          chunk(1n, 1, 0x8002, errorPayload(5, 'bad sector', 8192 + 512)),
          chunk(2n, 1, 0x8001, errorPayload(28, 'disk full')),
          chunk(3n, 0, 0x8123, errorPayload(22, 'odd error type')),
          chunk(3n, 1, 0),
        ]),
      ),
      true,
    );
    assert.deepEqual(h.completions.get(1), { error: 5, message: 'bad sector', offset: 8192 + 512 });
    assert.deepEqual(h.completions.get(2), { error: 28, message: 'disk full' });
    assert.equal(h.completions.get(3)?.error, 22, 'unknown error types still fail the request');
    assert.ok(
      h.targets.get(1)!.buffer!.every((x) => x === 0xee),
      'no data delivered',
    );
  });

  const invalid: [string, boolean, Buffer, RegExp][] = [
    ['unknown cookie (simple)', false, simple(77n, 0), /unknown cookie 0x4d/],
    ['unknown cookie (chunk)', true, chunk(1n << 60n, 1, 0), /unknown cookie/],
    ['bad magic', true, Buffer.from('12345678901234567890'), /bad reply magic/],
    ['chunk without negotiation', false, chunk(2n, 1, 0), /without negotiation/],
    ['simple reply to READ under structured', true, simple(1n, 0), /simple reply to a READ/],
    ['NONE with payload', true, chunk(2n, 1, 0, Buffer.alloc(4)), /NONE chunk with 4/],
    ['NONE without DONE', true, chunk(2n, 0, 0), /without the DONE flag/],
    [
      'data for a WRITE',
      true,
      chunk(2n, 1, 1, offsetData(0, Buffer.alloc(8))),
      /data chunk in reply to Write/,
    ],
    ['data chunk too short', true, chunk(1n, 1, 1, Buffer.alloc(8)), /need at least 9/],
    [
      'data larger than the read',
      true,
      chunk(4n, 1, 1, offsetData(0, Buffer.alloc(1025))),
      /1025 bytes for a 1024-byte read/,
    ],
    [
      'data before the request',
      true,
      chunk(1n, 1, 1, offsetData(8191, Buffer.alloc(16))),
      /outside the request/,
    ],
    [
      'data past the request',
      true,
      chunk(1n, 1, 1, offsetData(8192 + 4090, Buffer.alloc(16))),
      /outside the request/,
    ],
    [
      'data at 2^63',
      true,
      chunk(1n, 1, 1, offsetData(0, Buffer.alloc(1))).fill(0x80, 20, 21),
      /outside the request/,
    ],
    [
      'overlapping data',
      true,
      Buffer.concat([
        chunk(4n, 0, 1, offsetData(0, Buffer.alloc(512))),
        chunk(4n, 1, 1, offsetData(256, Buffer.alloc(512))),
      ]),
      /overlaps/,
    ],
    ['hole of wrong size', true, chunk(1n, 1, 2, Buffer.alloc(8)), /must be 12/],
    ['empty hole', true, chunk(1n, 1, 2, hole(8192, 0)), /size 0/],
    ['hole past the request', true, chunk(4n, 1, 2, hole(512, 1024)), /outside the request/],
    [
      'success without all data',
      true,
      chunk(4n, 1, 1, offsetData(0, Buffer.alloc(512))),
      /only 512 bytes/,
    ],
    ['block status chunk', true, chunk(1n, 1, 5, Buffer.alloc(12)), /unexpected reply chunk type/],
    ['unknown non-error type', true, chunk(2n, 1, 77), /unexpected reply chunk type/],
    ['error chunk too short', true, chunk(2n, 1, 0x8001, Buffer.alloc(5)), /need at least 6/],
    ['error value 0', true, chunk(2n, 1, 0x8001, errorPayload(0, 'x')), /error value 0/],
    [
      'message longer than the chunk',
      true,
      chunk(2n, 1, 0x8001, Buffer.from([0, 0, 0, 5, 0, 9, 65])),
      /9 bytes in a 7-byte chunk/,
    ],
    [
      'error offset outside the request',
      true,
      chunk(1n, 1, 0x8002, errorPayload(5, '', 0)),
      /outside the request/,
    ],
    [
      'error-offset of wrong length',
      true,
      chunk(1n, 1, 0x8002, Buffer.concat([errorPayload(5, 'a', 8192), Buffer.alloc(1)])),
      /error-offset chunk of 16 bytes/,
    ],
    ['huge error chunk', true, chunk(2n, 1, 0x8001, Buffer.alloc(70000)), /exceeds/],
  ];
  for (const [name, structured, bytes, message] of invalid) {
    it(`rejects ${name}`, () => {
      const h = harness(structured);
      assert.equal(h.parser.push(bytes), false);
      assert.match(h.parser.failure ?? '', message);
      assert.equal(h.parser.push(simple(2n, 0)), false, 'stays failed');
      assert.ok(guardIntact(h));
    });
  }

  it('survives arbitrary bytes: no throw, no stray writes, at most one completion per request', () => {
    fc.assert(
      fc.property(
        fc.boolean(),
        fc.array(fc.uint8Array({ maxLength: 96 }), { maxLength: 12 }),
        (structured, pieces) => {
          const h = harness(structured);
          for (const p of pieces) h.parser.push(p);
          assert.equal(h.duplicates, 0);
          assert.ok(guardIntact(h));
          assert.ok(h.parser.failure !== undefined || h.parser.buffered < 4096 + 100);
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('survives plausible but corrupted reply streams', () => {
    const cookie = fc.constantFrom(1n, 2n, 3n, 4n, 5n);
    const piece = fc.oneof(
      fc.record({
        kind: fc.constant('simple' as const),
        cookie,
        error: fc.constantFrom(0, 5, 22, 108),
      }),
      fc.record({
        kind: fc.constant('chunk' as const),
        cookie,
        flags: fc.constantFrom(0, 1, 3),
        type: fc.constantFrom(0, 1, 2, 5, 0x8001, 0x8002, 0x8fff),
        offset: fc.oneof(fc.integer({ min: 0, max: 13000 }), fc.constant(8192)),
        length: fc.integer({ min: 0, max: 5000 }),
        message: fc.string({ maxLength: 20 }),
      }),
    );
    fc.assert(
      fc.property(
        fc.boolean(),
        fc.array(piece, { maxLength: 8 }),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
        fc.integer({ min: 1, max: 64 }),
        (structured, pieces, flips, split) => {
          const parts = pieces.map((p) => {
            if (p.kind === 'simple') {
              const dataLength = p.cookie === 1n ? 4096 : p.cookie === 4n ? 1024 : 0;
              return simple(
                p.cookie,
                p.error,
                p.error === 0 ? Buffer.alloc(dataLength, 7) : undefined,
              );
            }
            switch (p.type) {
              case 1:
                return chunk(p.cookie, p.flags, 1, offsetData(p.offset, Buffer.alloc(p.length, 3)));
              case 2:
                return chunk(p.cookie, p.flags, 2, hole(p.offset, p.length));
              case 0:
                return chunk(p.cookie, p.flags, 0);
              default:
                return chunk(p.cookie, p.flags, p.type, errorPayload(5, p.message, p.offset));
            }
          });
          const stream = Buffer.concat(parts);
          for (const [at, value] of flips)
            if (stream.length > 0) stream[at % stream.length] = value;
          const h = harness(structured);
          for (let i = 0; i < stream.length; i += split)
            h.parser.push(stream.subarray(i, i + split));
          assert.equal(h.duplicates, 0);
          assert.ok(guardIntact(h));
        },
      ),
      { numRuns: 2000 },
    );
  });
});
