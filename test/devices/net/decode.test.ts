import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { decodeNvsp, decodeRndis, NetDecodeError } from '../../../src/devices/net/decode.ts';
import { hvkit } from '../../cli/hvkit.ts';
import { build, concat } from '../../hostile/oracle-builder.ts';
import { buildFrame } from './frame-builder.ts';
import { rndisMessages } from './hostile-inputs.ts';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('hvkit decode nvsp|rndis', () => {
  it("decodes NVSP messages with Linux's field names", () => {
    const init = build('nvsp_message', { hdr: 1 }, new Uint8Array(0));
    new DataView(init.buffer).setUint32(4, 0x60001, true);
    new DataView(init.buffer).setUint32(8, 0x60001, true);
    assert.deepEqual(decodeNvsp(init), {
      msg_type: 'Init',
      msg_type_value: 1,
      struct: 'nvsp_message_init',
      size: 40,
      min_protocol_ver: 0x60001,
      max_protocol_ver: 0x60001,
    });
    const table = new Uint8Array(40 + 64);
    const v = new DataView(table.buffer);
    v.setUint32(0, 134, true);
    v.setUint32(4, 16, true);
    v.setUint32(8, 40, true);
    for (let i = 0; i < 16; i++) v.setUint32(40 + 4 * i, i % 3, true);
    const decoded = decodeNvsp(table) as Record<string, unknown>;
    assert.equal(decoded.struct, 'nvsp_5_send_indirect_table');
    assert.deepEqual(
      decoded.table,
      Array.from({ length: 16 }, (_, i) => i % 3),
    );
    assert.throws(() => decodeNvsp(Uint8Array.of(1, 0, 0)), NetDecodeError);
    assert.throws(() => decodeNvsp(Uint8Array.of(0xff, 0, 0, 0)), /unknown NVSP message type 255/);
  });

  it('decodes an RNDIS data packet with its per-packet info and frame', () => {
    const frame = buildFrame({ protocol: 'tcp', payload: 100, sport: 1234, dport: 80 });
    const csum = build(
      'rndis_per_packet_info',
      { size: 16, type: 0, ppi_offset: 12 },
      Uint8Array.of(5, 0, 0x22, 0),
    );
    const body = build('rndis_packet', {
      data_offset: 36 + 16,
      data_len: frame.length,
      per_pkt_info_offset: 36,
      per_pkt_info_len: 16,
    });
    const head = build('rndis_message', {
      ndis_msg_type: 1,
      msg_len: 8 + 36 + 16 + frame.length,
    }).subarray(0, 8);
    const d = decodeRndis(concat(head, body, csum, frame)) as {
      ndis_msg_type: string;
      data_len: number;
      per_pkt_info: unknown;
      frame: { protocol: string; source_port: number; destination_port: number };
    };
    assert.equal(d.ndis_msg_type, 'Packet');
    assert.equal(d.data_len, frame.length);
    assert.deepEqual(d.per_pkt_info, [
      { size: 16, type: 'TcpIpChecksum', internal: 0, ppi_offset: 12, value: 0x220005 },
    ]);
    assert.equal(d.frame.protocol, 'tcp');
    assert.equal(d.frame.source_port, 1234);
    assert.equal(d.frame.destination_port, 80);
  });

  it('decodes a QUERY with its OID by name, through the CLI', async () => {
    const body = build('rndis_query_request', {
      req_id: 7,
      oid: 0x0101_0101,
      info_buflen: 0,
      info_buf_offset: 20,
    });
    const head = build('rndis_message', { ndis_msg_type: 4, msg_len: 28 }).subarray(0, 8);
    const result = await hvkit(['decode', 'rndis', hex(concat(head, body))]);
    assert.equal(result.code, 0, result.stderr);
    const d = JSON.parse(result.stdout);
    assert.equal(d.struct, 'rndis_query_request');
    assert.equal(d.req_id, 7);
    assert.equal(d.oid_name, 'Ieee8023PermanentAddress');
    const bad = await hvkit(['decode', 'rndis', '0100000040000000']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /msg_len 64 is outside 8\.\.8/);
  });

  it('never fails on hostile bytes except with a decode error', () => {
    fc.assert(
      fc.property(fc.oneof(rndisMessages, fc.uint8Array({ maxLength: 120 })), (bytes) => {
        for (const decode of [decodeNvsp, decodeRndis]) {
          try {
            JSON.stringify(decode(bytes));
          } catch (error) {
            assert.ok(error instanceof NetDecodeError, `${(error as Error).stack}`);
          }
        }
      }),
      { numRuns: 500 },
    );
  });
});
