import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { GpaRangeList, PacketView, writeGpaDirect, writeInband } from '../../src/vmbus/packet.ts';
import { Ring, RingReader, RingWriter } from '../../src/vmbus/ring.ts';
import { oracleDir } from '../conformance/oracle.ts';

interface VectorWrite {
  op: 'vmbus_sendpacket' | 'vmbus_sendpacket_mpb_desc';
  type: number;
  flags: number;
  trans_id_hex: string;
  payload_hex: string;
  gpa_ranges?: { byte_count: number; byte_offset: number; pfns: number[] }[];
  expected_result: string;
  write_index_after?: number;
}
interface VectorPacket {
  start_offset: number;
  type: number;
  offset8: number;
  len8: number;
  flags: number;
  trans_id_hex: string;
  data_hex: string;
  gpa_ranges?: { byte_count: number; byte_offset: number; pfns: number[] }[];
}
interface Vector {
  name: string;
  ring_size: number;
  data_size: number;
  initial_file: string;
  initial_sha256: string;
  setup?: { writes: VectorWrite[]; reader_consumed_to: number };
  writes: VectorWrite[];
  file: string;
  sha256: string;
  write_index: number;
  read_index: number;
  interrupt_mask: number;
  pending_send_sz: number;
  feature_bits: number;
  bytes_avail_to_write: number;
  bytes_avail_to_read: number;
  packets: VectorPacket[];
}

const dir = join(oracleDir, 'ring-vectors');
const index = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as { vectors: Vector[] };

function loadImage(file: string): Uint8Array {
  const bytes = readFileSync(join(dir, file));
  // Copy into a fresh (aligned) buffer the ring can take Int32 views of.
  const out = new Uint8Array(bytes.length);
  out.set(bytes);
  return out;
}

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

function transHalves(text: string): [number, number] {
  const v = BigInt(text);
  return [Number(v & 0xffffffffn), Number(v >> 32n)];
}

function replay(ring: Ring, writes: readonly VectorWrite[]): string[] {
  const writer = new RingWriter(ring);
  const results: string[] = [];
  for (const w of writes) {
    const payload = Buffer.from(w.payload_hex, 'hex');
    const [lo, hi] = transHalves(w.trans_id_hex);
    const result =
      w.op === 'vmbus_sendpacket_mpb_desc'
        ? writeGpaDirect(
            writer,
            w.flags,
            lo,
            hi,
            (w.gpa_ranges ?? []).map((r) => ({
              byteCount: r.byte_count,
              byteOffset: r.byte_offset,
              pfns: r.pfns,
            })),
            payload,
          )
        : writeInband(writer, w.type, w.flags, lo, hi, payload);
    writer.publish();
    results.push(result);
    if (w.write_index_after !== undefined && result === 'ok') {
      assert.equal(
        ring.writeIndex,
        w.write_index_after,
        `write index after trans ${w.trans_id_hex}`,
      );
    }
  }
  return results;
}

describe("ring buffer against the vectors written by Linux's algorithm", () => {
  assert.ok(index.vectors.length >= 4);
  for (const vector of index.vectors) {
    describe(vector.name, () => {
      it('reads every packet of the final image', () => {
        const image = loadImage(vector.file);
        assert.equal(sha256(image), vector.sha256);
        const ring = Ring.fromBytes(image);
        assert.equal(ring.dataSize, vector.data_size);
        assert.equal(ring.writeIndex, vector.write_index);
        assert.equal(ring.readIndex, vector.read_index);
        assert.equal(ring.interruptMask, vector.interrupt_mask);
        assert.equal(ring.pendingSendSize, vector.pending_send_sz);
        assert.equal(ring.featureBits, vector.feature_bits);
        assert.equal(
          ring.availableToWrite(ring.writeIndex, ring.readIndex),
          vector.bytes_avail_to_write,
        );
        assert.equal(
          ring.availableToRead(ring.writeIndex, ring.readIndex),
          vector.bytes_avail_to_read,
        );

        const reader = new RingReader(ring);
        const buffer = new Uint8Array(ring.dataSize);
        const packet = new PacketView(buffer);
        const ranges = new GpaRangeList();
        const seen: VectorPacket[] = [];
        for (;;) {
          const status = reader.next(buffer);
          if (status === 'empty') break;
          assert.equal(status, 'packet', reader.error);
          assert.equal(packet.load(reader.length), undefined);
          const expected = vector.packets[seen.length]!;
          assert.ok(expected, 'more packets than the vector lists');
          assert.equal(packet.type, expected.type);
          assert.equal(packet.flags, expected.flags);
          assert.equal(packet.offset8, expected.offset8);
          assert.equal(packet.len8, expected.len8);
          assert.equal(packet.transId, BigInt(expected.trans_id_hex));
          assert.equal(hex(packet.payload()), expected.data_hex);
          if (expected.gpa_ranges) {
            assert.equal(ranges.parse(packet), undefined);
            assert.equal(ranges.count, expected.gpa_ranges.length);
            expected.gpa_ranges.forEach((r, i) => {
              assert.equal(ranges.byteCount[i], r.byte_count);
              assert.equal(ranges.byteOffset[i], r.byte_offset);
              const pfns = Array.from(
                ranges.pfns.subarray(
                  ranges.pfnStart[i]!,
                  ranges.pfnStart[i]! + ranges.pfnCount[i]!,
                ),
              );
              assert.deepEqual(pfns, r.pfns);
            });
          }
          seen.push(expected);
        }
        assert.equal(seen.length, vector.packets.length);
        reader.publish();
        assert.equal(ring.readIndex, ring.writeIndex, 'reader consumed everything');
      });

      it('replays the writes on the initial image to a byte-identical image', () => {
        const image = loadImage(vector.initial_file);
        assert.equal(sha256(image), vector.initial_sha256);
        const results = replay(Ring.fromBytes(image), vector.writes);
        assert.deepEqual(
          results,
          vector.writes.map((w) => w.expected_result),
        );
        assert.equal(sha256(image), vector.sha256);
        assert.deepEqual(image, loadImage(vector.file));
      });

      if (vector.setup) {
        it('builds the initial image from a fresh ring by the setup writes', () => {
          const image = new Uint8Array(vector.ring_size);
          const ring = Ring.fromBytes(image);
          ring.initialize();
          replay(ring, vector.setup!.writes);
          ring.readIndex = vector.setup!.reader_consumed_to;
          assert.equal(sha256(image), vector.initial_sha256);
        });
      }
    });
  }
});

describe('ring writer limits', () => {
  it('refuses a write unless strictly more bytes are free than it needs, changing nothing', () => {
    const image = new Uint8Array(4096 + 4096);
    const ring = Ring.fromBytes(image);
    ring.initialize();
    const writer = new RingWriter(ring);
    // 4096-byte data area; a packet of 4080 bytes + 8 trailer = 4088 < 4096: fits.
    assert.equal(writer.maxPacketLength(), 4080);
    const big = new Uint8Array(4080 - 16);
    const before = image.slice();
    // 4088 bytes of packet + 8 trailer = 4096 = all free bytes: refused.
    assert.equal(writeInband(writer, 6, 0, 1, 0, new Uint8Array(4088 - 16)), 'full');
    assert.deepEqual(image, before);
    assert.equal(writeInband(writer, 6, 0, 1, 0, big), 'ok');
    writer.publish();
    assert.equal(ring.writeIndex, 4088);
    // 8 bytes free now: even the smallest packet (16 + 8) is refused.
    assert.equal(writeInband(writer, 6, 0, 2, 0, new Uint8Array(0)), 'full');
    assert.equal(ring.writeIndex, 4088);
  });

  it('publishes once per batch and signals only when the ring was empty and unmasked', () => {
    const image = new Uint8Array(4096 * 3);
    const ring = Ring.fromBytes(image);
    ring.initialize();
    const writer = new RingWriter(ring);
    const reader = new RingReader(ring);
    const buf = new Uint8Array(8192);
    writeInband(writer, 6, 0, 1, 0, new Uint8Array(10));
    writeInband(writer, 6, 0, 2, 0, new Uint8Array(10));
    assert.equal(ring.writeIndex, 0, 'nothing published before publish()');
    assert.equal(writer.publish(), true, 'empty -> non-empty signals');
    writeInband(writer, 6, 0, 3, 0, new Uint8Array(10));
    assert.equal(writer.publish(), false, 'ring was not empty');
    while (reader.next(buf) === 'packet') {}
    reader.publish();
    reader.mask();
    writeInband(writer, 6, 0, 4, 0, new Uint8Array(10));
    assert.equal(writer.publish(), false, 'reader masked');
    assert.equal(reader.unmask(), true, 'unmask reports data that arrived while masked');
  });

  it('reports a corrupt ring for hostile indices and lengths', () => {
    const image = new Uint8Array(4096 * 2);
    const ring = Ring.fromBytes(image);
    ring.initialize();
    const reader = new RingReader(ring);
    const buf = new Uint8Array(4096);
    ring.writeIndex = 13;
    assert.equal(reader.next(buf), 'corrupt');
    ring.writeIndex = 4096;
    assert.equal(reader.next(buf), 'corrupt');
    ring.writeIndex = 64;
    new DataView(image.buffer).setUint16(4096 + 4, 100, true); // len8 = 100: 800 bytes > 64 available
    assert.equal(reader.next(buf), 'corrupt');
    assert.match(reader.error, /claims 800 bytes, 64 available/);
    const writer = new RingWriter(ring);
    ring.readIndex = 7;
    assert.equal(writer.reserve(16), 'corrupt');
  });
});
