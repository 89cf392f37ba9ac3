/**
 * The host's RNDIS device per message and per OID, against the oracle: the
 * requests are built from the oracle's layouts (not our builders), and each
 * answer is checked field by field at the oracle's offsets and sizes.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RndisDevice } from '../../../src/devices/net/host/rndis-device.ts';
import { NvspVersion } from '../../../src/devices/net/protocol.ts';
import { readControl } from '../../../src/devices/net/rndis-control.ts';
import { oracleSection } from '../../conformance/oracle.ts';
import { build, concat, offsetOf, sizeOf } from '../../hostile/oracle-builder.ts';

const C = oracleSection('rndis').constants as Record<string, number>;
const MAC = Uint8Array.of(0, 0x15, 0x5d, 1, 2, 3);

function device(version: number, channels = 4) {
  const d = new RndisDevice(
    {
      mac: MAC,
      mtu: 1500,
      linkSpeed: 10_000_000_000,
      friendlyName: 'Test NIC',
      maxChannels: channels,
    },
    () => version,
  );
  return d;
}

function message(type: number, body: Uint8Array): Uint8Array {
  return concat(
    build('rndis_message', { ndis_msg_type: type, msg_len: 8 + body.length }).subarray(0, 8),
    body,
  );
}

/** Sends a message to the device and returns the answer's bytes (body after the 8-byte header). */
function ask(
  d: RndisDevice,
  bytes: Uint8Array,
): { type: number; body: Uint8Array; view: DataView } {
  const m = readControl(bytes);
  assert.equal(typeof m, 'object', String(m));
  const answer = d.handle(m as Exclude<typeof m, string>);
  assert.ok(answer, 'the device answered');
  const v = new DataView(answer.buffer, answer.byteOffset, answer.byteLength);
  assert.equal(v.getUint32(4, true), answer.length, 'msg_len is the whole message');
  return {
    type: v.getUint32(0, true),
    body: answer.subarray(8),
    view: new DataView(answer.buffer, answer.byteOffset + 8),
  };
}

function query(d: RndisDevice, oid: number, input: Uint8Array = new Uint8Array(0)) {
  const req = build(
    'rndis_query_request',
    {
      req_id: 77,
      oid,
      info_buflen: input.length,
      info_buf_offset: sizeOf('rndis_query_request'),
    },
    input,
  );
  const a = ask(d, message(4, req));
  assert.equal(a.type, 0x8000_0004, 'RNDIS_MSG_QUERY_C');
  const at = (f: string) => offsetOf('rndis_query_complete', f);
  assert.equal(a.view.getUint32(at('req_id'), true), 77);
  const status = a.view.getUint32(at('status'), true);
  const length = a.view.getUint32(at('info_buflen'), true);
  const offset = a.view.getUint32(at('info_buf_offset'), true);
  if (length > 0)
    assert.equal(offset, sizeOf('rndis_query_complete'), 'the answer follows the header');
  assert.ok(offset + length <= a.body.length);
  return { status, info: a.body.subarray(offset, offset + length) };
}

function set(d: RndisDevice, oid: number, value: Uint8Array): number {
  const req = build('rndis_set_request', {
    req_id: 5,
    oid,
    info_buflen: value.length,
    info_buf_offset: offsetOf('rndis_set_request', 'info_buf'),
  }).subarray(0, offsetOf('rndis_set_request', 'info_buf'));
  const a = ask(d, message(5, concat(req, value)));
  assert.equal(a.type, 0x8000_0005, 'RNDIS_MSG_SET_C');
  assert.equal(a.view.getUint32(offsetOf('rndis_set_complete', 'req_id'), true), 5);
  return a.view.getUint32(offsetOf('rndis_set_complete', 'status'), true);
}

/** The nested structs the oracle lists as one field each. */
const NESTED: Record<string, string> = {
  header: 'ndis_object_header',
  hdr: 'ndis_obj_header',
  csum: 'ndis_csum_offload',
  lsov2: 'ndis_lsov2_offload',
};

/** The offset of a dotted path ("lsov2.ip4_maxsz") in an oracle struct. */
function at(struct: string, path: string): number {
  const [outer, inner] = path.split('.') as [string, string | undefined];
  const base = offsetOf(struct, outer);
  return inner === undefined ? base : base + offsetOf(NESTED[outer]!, inner);
}

/** An oracle struct with values at dotted paths (nested headers included). */
function buildNested(
  struct: string,
  values: Record<string, number>,
  tail?: Uint8Array,
): Uint8Array {
  const flat: Record<string, number> = {};
  const nested = new Map<string, Record<string, number>>();
  for (const [path, value] of Object.entries(values)) {
    const [outer, inner] = path.split('.') as [string, string | undefined];
    if (inner === undefined) flat[outer] = value;
    else nested.set(outer, { ...nested.get(outer), [inner]: value });
  }
  const out = build(struct, flat, tail);
  for (const [outer, fields] of nested)
    out.set(build(NESTED[outer]!, fields), offsetOf(struct, outer));
  return out;
}

const u32 = (b: Uint8Array) =>
  new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(0, true);

describe('the host RNDIS device, per message and OID', () => {
  it('INITIALIZE: RNDIS 1.0, connectionless 802.3, packets per message and alignment', () => {
    const d = device(NvspVersion.V61);
    const req = build('rndis_initialize_request', {
      req_id: 1,
      major_ver: 1,
      minor_ver: 0,
      max_xfer_size: 0x4000,
    });
    const a = ask(d, message(2, req));
    assert.equal(a.type, 0x8000_0002);
    const at = (f: string) => offsetOf('rndis_initialize_complete', f);
    assert.equal(a.body.length, sizeOf('rndis_initialize_complete'));
    assert.equal(a.view.getUint32(at('req_id'), true), 1);
    assert.equal(a.view.getUint32(at('status'), true), 0);
    assert.equal(a.view.getUint32(at('major_ver'), true), 1);
    assert.equal(a.view.getUint32(at('medium'), true), 0, 'RNDIS_MEDIUM_802_3');
    assert.ok(a.view.getUint32(at('max_pkt_per_msg'), true) >= 1);
    assert.equal(d.state, 'initialized');
  });

  it("answers each of Linux's QUERY OIDs with the size and value it expects", () => {
    const d = device(NvspVersion.V61);
    const frame = query(d, C.RNDIS_OID_GEN_MAXIMUM_FRAME_SIZE!);
    assert.deepEqual([frame.status, frame.info.length, u32(frame.info)], [0, 4, 1500]);
    const mac = query(d, C.RNDIS_OID_802_3_PERMANENT_ADDRESS!);
    assert.deepEqual([...mac.info], [...MAC]);
    const name = query(d, C.RNDIS_OID_GEN_FRIENDLY_NAME!);
    assert.equal(Buffer.from(name.info).toString('utf16le').replace(/\0+$/, ''), 'Test NIC');
    const media = query(d, C.RNDIS_OID_GEN_MEDIA_CONNECT_STATUS!);
    assert.deepEqual([media.info.length, u32(media.info)], [4, 0], 'connected');
    const speed = query(d, C.RNDIS_OID_GEN_LINK_SPEED!);
    assert.equal(u32(speed.info), 100_000_000, 'in units of 100 bit/s');
    const rss = query(d, C.OID_GEN_RECEIVE_SCALE_CAPABILITIES!);
    assert.ok(rss.info.length >= sizeOf('ndis_recv_scale_cap'));
    const r = new DataView(rss.info.buffer, rss.info.byteOffset);
    assert.equal(
      rss.info[at('ndis_recv_scale_cap', 'hdr.type')],
      C.NDIS_OBJECT_TYPE_RSS_CAPABILITIES,
    );
    assert.equal(r.getUint32(at('ndis_recv_scale_cap', 'num_recv_que'), true), 4);
    const unknown = query(d, C.RNDIS_OID_GEN_VENDOR_ID!);
    assert.notEqual(unknown.status, 0, 'an OID it does not have is refused');
  });

  for (const [version, size, revision] of [
    [NvspVersion.V2, C.NDIS_OFFLOAD_SIZE_6_0!, 1],
    [NvspVersion.V4, C.NDIS_OFFLOAD_SIZE_6_1!, 2],
    [NvspVersion.V5, C.NDIS_OFFLOAD_SIZE!, C.NDIS_OFFLOAD_PARAMETERS_REVISION_3!],
    [NvspVersion.V61, C.NDIS_OFFLOAD_SIZE!, C.NDIS_OFFLOAD_PARAMETERS_REVISION_3!],
  ] as const) {
    it(`answers TCP_OFFLOAD_HARDWARE_CAPABILITIES in the ${size}-byte object NVSP 0x${version.toString(16)} expects`, () => {
      const d = device(version);
      const header = build('ndis_object_header', {
        type: C.NDIS_OBJECT_TYPE_OFFLOAD!,
        revision,
        size,
      });
      const caps = query(
        d,
        C.OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES!,
        concat(header, new Uint8Array(size - 4)),
      );
      assert.equal(caps.status, 0);
      assert.equal(caps.info.length, size);
      assert.equal(caps.info[at('ndis_offload', 'header.type')], C.NDIS_OBJECT_TYPE_OFFLOAD);
      assert.equal(caps.info[at('ndis_offload', 'header.revision')], revision);
      const v = new DataView(caps.info.buffer, caps.info.byteOffset, caps.info.byteLength);
      assert.equal(v.getUint16(at('ndis_offload', 'header.size'), true), size);
      assert.equal(
        v.getUint32(at('ndis_offload', 'csum.ip4_txenc'), true),
        C.NDIS_OFFLOAD_ENCAP_8023,
      );
      assert.ok(v.getUint32(at('ndis_offload', 'lsov2.ip4_maxsz'), true) > 60_000);
    });
  }

  it('takes the offload parameters at 22 bytes (NVSP 4) and whole, and refuses them shorter', () => {
    const d = device(NvspVersion.V61);
    const full = sizeOf('ndis_offload_params');
    const params = (length: number) =>
      buildNested('ndis_offload_params', {
        'header.type': C.NDIS_OBJECT_TYPE_DEFAULT!,
        'header.revision': C.NDIS_OFFLOAD_PARAMETERS_REVISION_3!,
        'header.size': length,
        tcp_ip_v4_csum: C.NDIS_OFFLOAD_PARAMETERS_TX_RX_ENABLED!,
        lso_v2_ipv4: C.NDIS_OFFLOAD_PARAMETERS_LSOV2_ENABLED!,
        rsc_ip_v4: C.NDIS_OFFLOAD_PARAMETERS_RSC_ENABLED!,
        rsc_ip_v6: C.NDIS_OFFLOAD_PARAMETERS_RSC_ENABLED!,
      }).subarray(0, length);
    assert.equal(set(d, C.OID_TCP_OFFLOAD_PARAMETERS!, params(C.VERSION_4_OFFLOAD_SIZE!)), 0);
    assert.deepEqual(
      [d.offloads.tcp4Checksum, d.offloads.lso4, d.offloads.rsc4],
      [true, true, false],
    );
    assert.equal(set(d, C.OID_TCP_OFFLOAD_PARAMETERS!, params(full)), 0);
    assert.deepEqual([d.offloads.rsc4, d.offloads.rsc6], [true, true]);
    assert.notEqual(set(d, C.OID_TCP_OFFLOAD_PARAMETERS!, params(8)), 0);
  });

  it('takes RSS parameters with a table and 40-byte key where they say, and refuses bad ones unchanged', () => {
    const d = device(NvspVersion.V61, 4);
    const rss = (entries: number[], keySize = 40, flag = 0) => {
      const tableAt = sizeOf('ndis_recv_scale_param');
      const table = new Uint8Array(4 * entries.length);
      const tv = new DataView(table.buffer);
      for (const [i, e] of entries.entries()) tv.setUint32(4 * i, e, true);
      return buildNested(
        'ndis_recv_scale_param',
        {
          'hdr.type': C.NDIS_OBJECT_TYPE_RSS_PARAMETERS!,
          'hdr.rev': C.NDIS_RECEIVE_SCALE_PARAMETERS_REVISION_2!,
          'hdr.size': tableAt,
          flag,
          indirect_tabsize: table.length,
          indirect_taboffset: tableAt,
          hashkey_size: keySize,
          hashkey_offset: tableAt + table.length,
        },
        concat(table, new Uint8Array(keySize).fill(7)),
      );
    };
    const good = Array.from({ length: 128 }, (_, i) => i % 4);
    assert.equal(set(d, C.OID_GEN_RECEIVE_SCALE_PARAMETERS!, rss(good)), 0);
    assert.equal(d.rssTable.length, 128);
    assert.equal(d.rssKey.length, 40);
    assert.notEqual(
      set(d, C.OID_GEN_RECEIVE_SCALE_PARAMETERS!, rss([0, 1, 9, 2])),
      0,
      'a channel that does not exist',
    );
    assert.notEqual(set(d, C.OID_GEN_RECEIVE_SCALE_PARAMETERS!, rss(good, 16)), 0, 'a short key');
    assert.equal(d.rssTable.length, 128, 'a refused SET changed nothing');
    assert.equal(
      set(
        d,
        C.OID_GEN_RECEIVE_SCALE_PARAMETERS!,
        rss(good, 40, C.NDIS_RSS_PARAM_FLAG_DISABLE_RSS!),
      ),
      0,
    );
    assert.equal(d.rssTable.length, 0, 'disabled');
  });

  it('sets the packet filter; KEEPALIVE, RESET and HALT answer as RNDIS says', () => {
    const d = device(NvspVersion.V61);
    assert.equal(set(d, C.RNDIS_OID_GEN_CURRENT_PACKET_FILTER!, Uint8Array.of(0x0d, 0, 0, 0)), 0);
    assert.equal(d.packetFilter, 0x0d);
    const keep = ask(d, message(8, build('rndis_keepalive_request', { req_id: 9 })));
    assert.equal(keep.type, 0x8000_0008);
    assert.equal(keep.view.getUint32(offsetOf('rndis_keepalive_complete', 'req_id'), true), 9);
    const reset = ask(d, message(6, build('rndis_reset_request', {})));
    assert.equal(reset.type, 0x8000_0006);
    assert.equal(reset.body.length, sizeOf('rndis_reset_complete'));
    assert.equal(d.packetFilter, 0, 'a reset closes the filter');
    const halt = readControl(message(3, build('rndis_halt_request', { req_id: 3 })));
    assert.equal(d.handle(halt as Exclude<typeof halt, string>), undefined, 'HALT has no answer');
    assert.equal(d.state, 'halted');
  });
});
