import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  array,
  bits,
  bytes,
  defineStruct,
  flex,
  guid,
  guidToBytes,
  parseHex,
  readGuid,
  reserved,
  struct,
  toJson,
  u8,
  u16,
  u16be,
  u32,
  u32be,
  u64,
  union,
  WireError,
} from '../../src/wire/index.ts';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

describe('wire structs', () => {
  const sample = defineStruct('test_sample', {
    a: u8,
    pad: reserved(1),
    b: u16,
    c: u32,
    d: u64,
    e: u32be,
    f: u16be,
    g: bytes(3),
    h: array(u16, 2),
  });

  it('computes sizes and offsets from the declaration order', () => {
    assert.equal(sample.size, 1 + 1 + 2 + 4 + 8 + 4 + 2 + 3 + 4);
    assert.equal(sample.offsetOf('b'), 2);
    assert.equal(sample.offsetOf('d'), 8);
    assert.equal(sample.offsetOf('h'), 25);
    assert.deepEqual(
      sample.layout.map((f) => [f.name, f.offset, f.size]),
      [
        ['a', 0, 1],
        ['pad', 1, 1],
        ['b', 2, 2],
        ['c', 4, 4],
        ['d', 8, 8],
        ['e', 16, 4],
        ['f', 20, 2],
        ['g', 22, 3],
        ['h', 25, 4],
      ],
    );
  });

  it('encodes with explicit byte order and zeroed reserved bytes, and decodes back', () => {
    const value = {
      a: 0x11,
      b: 0x2233,
      c: 0x44556677,
      d: 0x8899aabbccddeeffn,
      e: 0x01020304,
      f: 0x0506,
      g: new Uint8Array([7, 8]),
      h: [0x090a, 0x0b0c],
    };
    const out = sample.write(value);
    // Expected bytes written out by hand.
    assert.equal(
      hex(out),
      '11' +
        '00' +
        '3322' +
        '77665544' +
        'ffeeddccbbaa9988' +
        '01020304' +
        '0506' +
        '070800' +
        '0a090c0b',
    );
    const back = sample.read(out);
    assert.deepEqual(back, { ...value, g: new Uint8Array([7, 8, 0]) });
  });

  it('refuses short buffers with the struct name and the numbers', () => {
    assert.throws(
      () => sample.read(new Uint8Array(10)),
      /test_sample: need 29 bytes at offset 0, have 10/,
    );
    const r = sample.tryRead(new Uint8Array(40), 20);
    assert.equal(r.ok, false);
    assert.throws(() => sample.writeInto(new Uint8Array(28), 0, {} as never), WireError);
  });

  it('refuses values that do not fit their field', () => {
    const s = struct({ x: u8 });
    assert.throws(() => s.write({ x: 256 }), /u8: 256 does not fit/);
    assert.throws(() => s.write({ x: -1 }), WireError);
    assert.throws(() => s.write({} as never), /missing field x/);
  });

  it('flattens anonymous unions and bitfields as C does', () => {
    const s = defineStruct('test_flat', {
      head: u32,
      $u: union({ whole: u64, $parts: struct({ lo: u32, hi: u32 }) }),
      flags: bits(1, { one: 1, three: 3, rest: 4 }),
      $more: bits(2, { m: 9, rsvd: 7 }),
      tail: flex(8),
    });
    assert.equal(s.size, 4 + 8 + 1 + 2);
    const names = s.layout.map((f) => f.name);
    assert.deepEqual(names, [
      'head',
      'whole',
      'lo',
      'hi',
      'flags',
      'flags.one',
      'flags.three',
      'flags.rest',
      'm',
      'rsvd',
      'tail',
    ]);
    const three = s.layout.find((f) => f.name === 'flags.three')!;
    assert.equal(three.offset, 12);
    assert.equal(three.bitOffset, 12 * 8 + 1);
    assert.equal(three.bitWidth, 3);
    const m = s.layout.find((f) => f.name === 'm')!;
    assert.equal(m.bitOffset, 13 * 8);
    const tail = s.layout.find((f) => f.name === 'tail')!;
    assert.deepEqual([tail.offset, tail.size, tail.flexible, tail.elemSize], [15, 0, true, 8]);

    const bytesOut = s.write({
      head: 1,
      lo: 2,
      hi: 3,
      flags: { one: 1, three: 5, rest: 0xa },
      m: 0x1ff,
    });
    assert.equal(hex(bytesOut), '01000000' + '02000000' + '03000000' + 'ab' + 'ff01');
    const back = s.read(bytesOut);
    assert.equal(back.whole, 0x0000000300000002n);
    assert.deepEqual(back.flags, { one: 1, three: 5, rest: 10 });
    assert.equal(back.m, 0x1ff);
    assert.equal(back.rsvd, 0);
    assert.throws(
      () => s.write({ head: 1, lo: 0, hi: 0, flags: { three: 8 } }),
      /three=8 does not fit in 3 bits/,
    );
  });

  it('gives in-place accessors for nested scalar fields', () => {
    const inner = struct({ x: u16, y: u32 });
    const s = struct({ a: u8, b: u8, inner, big: u64 });
    const buf = new Uint8Array(s.size);
    const dv = new DataView(buf.buffer);
    const y = s.uint('inner.y');
    assert.equal(y.offset, 4);
    y.set(dv, 0, 0xdeadbeef);
    assert.equal(s.read(buf).inner.y, 0xdeadbeef);
    s.bigint('big').set(dv, 0, 5n);
    assert.equal(s.bigint('big').get(dv, 0), 5n);
    assert.throws(() => s.uint('big'), /not a uint field/);
    assert.throws(() => s.uint('nope'), WireError);
  });

  it('refuses to declare the same struct name twice', () => {
    assert.throws(() => defineStruct('test_sample', { a: u8 }), /declared twice/);
  });

  it('zero-fills union bytes not covered by the provided member', () => {
    const s = struct({ u: union({ big: bytes(8), small: u16 }) });
    const buf = new Uint8Array(8).fill(0xff);
    s.writeInto(buf, 0, { u: { small: 0x0102 } });
    assert.equal(hex(buf), '0201000000000000');
  });
});

describe('GUIDs', () => {
  it('use the mixed-endian Windows layout (HV_NIC_GUID from the oracle)', () => {
    const nic = 'f8615163-df3e-46c5-913f-f2d2f965ed0e';
    assert.equal(hex(guidToBytes(nic)), '635161f83edfc546913ff2d2f965ed0e');
    assert.equal(readGuid(guidToBytes(nic), 0), nic);
    const s = struct({ id: guid });
    assert.equal(s.read(parseHex('635161f83edfc546913ff2d2f965ed0e')).id, nic);
    assert.throws(() => guidToBytes('not-a-guid'), /not a GUID/);
  });
});

describe('JSON conversion', () => {
  it('keeps exact 64-bit values as numbers and writes larger ones as hex', () => {
    assert.deepEqual(
      toJson({ a: 5n, b: 0xffffffffffffffffn, c: new Uint8Array([1, 2]), d: [1n] }),
      {
        a: 5,
        b: '0xffffffffffffffff',
        c: '0102',
        d: [1],
      },
    );
  });
  it('parses hex with separators and refuses odd digits', () => {
    assert.deepEqual([...parseHex('0x01 02:03')], [1, 2, 3]);
    assert.throws(() => parseHex('123'), /not hex/);
    assert.throws(() => parseHex('zz'), /not hex/);
  });
});
