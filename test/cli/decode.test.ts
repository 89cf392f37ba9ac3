import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { oracleDir } from '../conformance/oracle.ts';
import { hvkit } from './hvkit.ts';

describe('hvkit decode', () => {
  it('decodes a channel message with Linux field names', async () => {
    // OPENCHANNEL_RESULT: relid 7, openid 7, status 0.
    const r = await hvkit(['decode', 'message', '06000000000000000700000007000000 00000000']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), {
      type: 'OpenChannelResult',
      struct: 'vmbus_channel_open_result',
      size: 20,
      header: { msgtype: 6 },
      child_relid: 7,
      openid: 7,
      status: 0,
    });
  });

  it('decodes an offer with canonical GUIDs', async () => {
    const bytes = new Uint8Array(196);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, 1, true);
    // HV_SCSI_GUID wire bytes from the oracle.
    bytes.set(Buffer.from('d96361baa104294db60572e2ffb1dc7f', 'hex'), 8);
    view.setUint32(184, 3, true);
    view.setUint32(192, 0x2003, true);
    const r = await hvkit(['decode', 'message', Buffer.from(bytes).toString('hex')]);
    const out = JSON.parse(r.stdout);
    assert.equal(out.offer.if_type, 'ba6163d9-04a1-4d29-b605-72e2ffb1dc7f');
    assert.equal(out.device_class, 'scsi');
    assert.equal(out.child_relid, 3);
    assert.equal(out.connection_id, 0x2003);
  });

  it('decodes a SynIC message carrying a channel message', async () => {
    const slot = new Uint8Array(256);
    const view = new DataView(slot.buffer);
    view.setUint32(0, 1, true);
    slot[4] = 8;
    view.setUint32(16, 4, true); // ALLOFFERS_DELIVERED
    const r = await hvkit(['decode', 'hv-message', Buffer.from(slot).toString('hex')]);
    const out = JSON.parse(r.stdout);
    assert.equal(out.header.payload_size, 8);
    assert.equal(out.channel_message.type, 'AllOffersDelivered');
  });

  it('decodes ring images from a file, packet by packet', async () => {
    const r = await hvkit(['decode', 'ring', `@${join(oracleDir, 'ring-vectors', 'c_wrap.bin')}`]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.read_index, 11264);
    assert.equal(out.write_index, 296);
    assert.deepEqual(
      out.packets.map((p: { start_offset: number; trans_id: number; type_name: string }) => [
        p.start_offset,
        p.trans_id,
        p.type_name,
      ]),
      [
        [11264, 257, 'DataInband'],
        [11792, 258, 'DataInband'],
        [232, 259, 'Completion'],
      ],
    );
  });

  it('decodes one packet', async () => {
    const r = await hvkit(['decode', 'packet', '0b00020003000000ffffffffffffffff0102030400000000']);
    const out = JSON.parse(r.stdout);
    assert.equal(out.type_name, 'Completion');
    assert.equal(out.trans_id, '0xffffffffffffffff');
    assert.equal(out.data, '0102030400000000');
  });

  it('explains bad input with exit code 2', async () => {
    const short = await hvkit(['decode', 'message', '0e00']);
    assert.equal(short.code, 2);
    assert.match(short.stderr, /needs at least 8 bytes, got 2/);
    const odd = await hvkit(['decode', 'packet', 'abc']);
    assert.equal(odd.code, 2);
    assert.match(odd.stderr, /not hex/);
    const bad = await hvkit(['decode', 'packet', '06000200ff000000']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /not a packet/);
    const missing = await hvkit(['decode', 'ring', '@/nonexistent/file']);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /cannot read \/nonexistent\/file: ENOENT/);
  });
});
