/**
 * Generators of hostile NIC input, built from the oracle's layouts (never
 * with the encoders under test): NVSP messages of every type with boundary
 * values, RNDIS data packets with per-packet info (zero-size entries, offsets
 * past the end, lengths off by one), RNDIS control messages with information
 * buffers anywhere, and Ethernet frames that may or may not parse.
 */
import fc from 'fast-check';
import { applyMutation, fieldsOf, mutation } from '../../hostile/mutate.ts';
import { build, concat } from '../../hostile/oracle-builder.ts';
import { buildFrame } from './frame-builder.ts';

const boundary = fc.constantFrom(
  0,
  1,
  2,
  3,
  8,
  12,
  16,
  36,
  40,
  0x7f,
  0xff,
  0xffff,
  0x7fff_ffff,
  0xffff_fffe,
  0xffff_ffff,
);
export const word = fc.oneof(
  boundary,
  fc.integer({ min: 0, max: 0xffff_ffff }),
  fc.integer({ min: 0, max: 5000 }),
);

const NVSP_TYPES = [
  1, 2, 100, 101, 102, 103, 104, 105, 106, 107, 108, 120, 121, 122, 125, 128, 129, 131, 133, 134,
  135, 136,
];

/** An NVSP message: a type (known or not), words, and a length that may be short or long. */
export const nvspMessage = fc
  .record({
    type: fc.oneof(fc.constantFrom(...NVSP_TYPES), word),
    words: fc.array(word, { minLength: 0, maxLength: 16 }),
    length: fc.oneof(fc.constantFrom(4, 8, 12, 16, 28, 40, 104), fc.integer({ min: 0, max: 120 })),
  })
  .map(({ type, words, length }) => {
    const bytes = new Uint8Array(length);
    const v = new DataView(bytes.buffer);
    if (length >= 4) v.setUint32(0, type >>> 0, true);
    words.forEach((w, i) => {
      if (4 + 4 * i + 4 <= length) v.setUint32(4 + 4 * i, w >>> 0, true);
    });
    return bytes;
  });

function u32(value: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, value >>> 0, true);
  return b;
}

/** One per-packet-info entry: its header from the oracle, then a value. */
function ppi(type: number, value: number, internal = 0): Uint8Array {
  return build('rndis_per_packet_info', { size: 16, type, internal, ppi_offset: 12 }, u32(value));
}

const ppiFields = fieldsOf('rndis_per_packet_info');
const packetFields = [
  ...fieldsOf('rndis_message').filter((f) => f.offset < 8),
  ...fieldsOf('rndis_packet', 8),
];

/** An Ethernet frame: TCP/UDP over IPv4/IPv6, or bytes that are no frame. */
export const frame = fc.oneof(
  fc
    .record({
      protocol: fc.constantFrom('tcp' as const, 'udp' as const),
      ipv6: fc.boolean(),
      payload: fc.integer({ min: 0, max: 1400 }),
      unfilled: fc.boolean(),
    })
    .map((spec) => buildFrame(spec)),
  fc.uint8Array({ minLength: 0, maxLength: 200 }),
);

/**
 * An RNDIS_MSG_PACKET: header, rndis_packet, per-packet info (checksum,
 * LSO, VLAN, hash, the internal RSC id, entries with zero size or bad
 * offsets), the frame; then maybe one field off or the message cut.
 */
export const rndisPacket = fc
  .record({
    frame,
    ppis: fc.array(
      fc.oneof(
        fc
          .record({ type: fc.constantFrom(0, 2, 6, 8, 9), value: word })
          .map(({ type, value }) => ppi(type, value)),
        fc.constant(ppi(1, 0x0600, 1)),
        fc
          .record({ at: fc.nat(), v: word })
          .map(({ at, v }) =>
            applyMutation(ppi(0, 0x1c), { kind: 'boundary', field: at, value: v }, ppiFields),
          ),
        fc.constant(new Uint8Array(12)),
      ),
      { maxLength: 5 },
    ),
    m: mutation(3),
  })
  .map(({ frame: f, ppis, m }) => {
    const info = concat(...ppis);
    const headerLength = 8 + 36;
    const total = headerLength + info.length + f.length;
    const head = build('rndis_message', { ndis_msg_type: 1, msg_len: total }).subarray(0, 8);
    const body = build('rndis_packet', {
      data_offset: 36 + info.length,
      data_len: f.length,
      per_pkt_info_offset: info.length > 0 ? 36 : 0,
      per_pkt_info_len: info.length,
    });
    return applyMutation(concat(head, body, info, f), m, packetFields);
  });

const CONTROL_TYPES = [
  2, 3, 4, 5, 6, 7, 8, 0x8000_0002, 0x8000_0004, 0x8000_0005, 0x8000_0006, 0x8000_0008, 0x8000_0007,
];
const OIDS = [
  0x0001_0106, 0x0101_0101, 0x0002_0216, 0xfc01_020d, 0xfc01_020c, 0x0001_0114, 0x0001_0107,
  0x0001_0203, 0x0001_0204, 0x0001_010e, 0x0001_021b,
];

/** A control message (request, completion or indication) with its information buffer anywhere. */
export const rndisControl = fc
  .record({
    type: fc.oneof(fc.constantFrom(...CONTROL_TYPES), word),
    reqId: fc.oneof(fc.integer({ min: 0, max: 40 }), word),
    oid: fc.oneof(fc.constantFrom(...OIDS), word),
    status: fc.oneof(fc.constantFrom(0, 0x4001_000b, 0x4001_000c, 0x4001_0013), word),
    infoLength: fc.oneof(fc.integer({ min: 0, max: 700 }), word),
    infoOffset: fc.oneof(fc.constantFrom(16, 20, 24, 28), word),
    info: fc.uint8Array({ minLength: 0, maxLength: 700 }),
    extra: fc.integer({ min: 0, max: 6 }),
  })
  .map((c) => {
    const body = new Uint8Array(24 + 4 * c.extra);
    const v = new DataView(body.buffer);
    v.setUint32(0, c.reqId >>> 0, true);
    // Where each message type keeps its fields differs; these spread values over all of them.
    v.setUint32(4, (c.type & 0x8000_0000 ? c.status : c.oid) >>> 0, true);
    v.setUint32(8, c.infoLength >>> 0, true);
    v.setUint32(12, c.infoOffset >>> 0, true);
    v.setUint32(16, c.status >>> 0, true);
    const total = 8 + body.length + c.info.length;
    const head = build('rndis_message', { ndis_msg_type: c.type >>> 0, msg_len: total }).subarray(
      0,
      8,
    );
    return concat(head, body, c.info);
  });

/** Any RNDIS message, or several back to back (a batched section), or plain bytes. */
export const rndisMessages = fc.oneof(
  { weight: 3, arbitrary: rndisPacket },
  { weight: 2, arbitrary: rndisControl },
  {
    weight: 1,
    arbitrary: fc.array(rndisPacket, { minLength: 2, maxLength: 4 }).map((list) => concat(...list)),
  },
  { weight: 1, arbitrary: fc.uint8Array({ minLength: 0, maxLength: 300 }) },
);
