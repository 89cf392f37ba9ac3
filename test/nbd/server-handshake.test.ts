import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { memoryDisk, startServer } from './nbd-fixtures.ts';
import { goData, RawPeer } from './raw-peer.ts';

/**
 * Option haggling driven over a real Unix socket by a raw peer whose bytes
 * are built in the test from proto.md, not by the server's encoders.
 */

const MiB = 1024 * 1024;
const REP_MAGIC = 0x3e889045565a9n;
const ACK = 1;
const REP_SERVER = 2;
const REP_INFO = 3;
const ERR_UNSUP = 0x80000001;
const ERR_INVALID = 0x80000003;
const ERR_UNKNOWN = 0x80000006;
const ERR_TOO_BIG = 0x80000009;

async function twoExports(t: Parameters<typeof startServer>[0]) {
  return startServer(t, {
    exports: [
      { name: 'alpha', device: memoryDisk(4 * MiB), description: 'first disk' },
      { name: 'beta', device: memoryDisk(2 * MiB, { readOnly: true }) },
    ],
  });
}

describe('NBD server handshake', () => {
  it('greets with NBDMAGIC, IHAVEOPT, FIXED_NEWSTYLE and NO_ZEROES', async (t) => {
    const { socket } = await twoExports(t);
    const peer = await RawPeer.connect(socket);
    t.after(() => peer.destroy());
    const g = await peer.greet();
    assert.equal(g.magic, 0x4e42444d41474943n);
    assert.equal(g.opts, 0x49484156454f5054n);
    assert.equal(g.flags, 0x0003);
  });

  it('lists exports with their descriptions, then ACKs', async (t) => {
    const { socket } = await twoExports(t);
    const peer = await RawPeer.connect(socket);
    t.after(() => peer.destroy());
    await peer.greet();
    peer.sendOption(3);
    const names: string[] = [];
    for (;;) {
      const r = await peer.optionReply();
      assert.equal(r.magic, REP_MAGIC);
      assert.equal(r.option, 3);
      if (r.type === ACK) break;
      assert.equal(r.type, REP_SERVER);
      const len = r.data.readUInt32BE(0);
      names.push(`${r.data.subarray(4, 4 + len)}|${r.data.subarray(4 + len)}`);
    }
    assert.deepEqual(names, ['alpha|first disk', 'beta|']);
  });

  it('answers unknown options with ERR_UNSUP and keeps haggling', async (t) => {
    const { socket } = await twoExports(t);
    const peer = await RawPeer.connect(socket);
    t.after(() => peer.destroy());
    await peer.greet();
    for (const option of [0, 4, 5, 9, 10, 11, 12, 0x7fffffff, 0xffffffff]) {
      peer.sendOption(option, Buffer.from('abc'));
      const r = await peer.optionReply();
      assert.equal(r.option, option);
      assert.equal(r.type, ERR_UNSUP, `option ${option}`);
    }
    const info = await peer.go('alpha', true);
    assert.equal(info.size, BigInt(4 * MiB));
  });

  it('rejects malformed option data with ERR_INVALID', async (t) => {
    const { socket } = await twoExports(t);
    const peer = await RawPeer.connect(socket);
    t.after(() => peer.destroy());
    await peer.greet();
    const cases: [number, Buffer][] = [
      [3, Buffer.from([1])], // LIST takes no data
      [8, Buffer.from([1, 2])], // STRUCTURED_REPLY takes no data
      [6, Buffer.from([0, 0, 0])], // INFO shorter than 6 bytes
      [6, Buffer.from([0, 0, 0, 9, 0x61, 0, 0])], // name length past the data
      [7, Buffer.concat([goData('alpha', [0]), Buffer.from([0])])], // trailing byte
      [7, goData('alpha', [0, 3]).subarray(0, 12)], // count says 2 requests, 1 present
      [6, Buffer.from([0, 0, 0, 2, 0xc3, 0x28, 0, 0])], // name is not UTF-8
    ];
    for (const [option, data] of cases) {
      peer.sendOption(option, data);
      const r = await peer.optionReply();
      assert.equal(r.type, ERR_INVALID, `option ${option} data ${data.toString('hex')}`);
      assert.ok(r.data.length > 0, 'error replies carry a message');
    }
  });

  it('answers NBD_OPT_INFO with export size, flags and block sizes; unknown names get ERR_UNKNOWN', async (t) => {
    const { socket } = await twoExports(t);
    const peer = await RawPeer.connect(socket);
    t.after(() => peer.destroy());
    await peer.greet();
    peer.sendOption(6, goData('beta', [0, 1, 3]));
    const infos = new Map<number, Buffer>();
    for (;;) {
      const r = await peer.optionReply();
      if (r.type === ACK) break;
      assert.equal(r.type, REP_INFO);
      infos.set(r.data.readUInt16BE(0), r.data);
    }
    const exportInfo = infos.get(0)!;
    assert.equal(exportInfo.length, 12);
    assert.equal(exportInfo.readBigUInt64BE(2), BigInt(2 * MiB));
    const flags = exportInfo.readUInt16BE(10);
    assert.equal(flags & 0x1, 0x1, 'HAS_FLAGS');
    assert.equal(flags & 0x2, 0x2, 'READ_ONLY');
    assert.equal(flags & 0x20, 0, 'no TRIM on a read-only export');
    assert.equal(infos.get(1)!.subarray(2).toString(), 'beta');
    const bs = infos.get(3)!;
    assert.equal(bs.length, 14);
    assert.deepEqual(
      [bs.readUInt32BE(2), bs.readUInt32BE(6), bs.readUInt32BE(10)],
      [512, 4096, 32 * MiB],
    );

    peer.sendOption(6, goData('gamma', [0]));
    const r = await peer.optionReply();
    assert.equal(r.type, ERR_UNKNOWN);
    assert.match(r.data.toString(), /gamma/);

    // INFO did not end haggling: GO still works, and '' is the default (first) export.
    const go = await peer.go('', false);
    assert.equal(go.size, BigInt(4 * MiB));
    assert.equal(
      go.flags & 0x7f,
      0x6d,
      'HAS_FLAGS, FLUSH, FUA, TRIM, WRITE_ZEROES; not READ_ONLY or ROTATIONAL',
    );
    assert.equal(go.flags & 0x80, 0, 'no DF without structured replies');
    assert.equal(go.flags & 0x100, 0x100, 'CAN_MULTI_CONN');
  });

  it('NBD_OPT_EXPORT_NAME enters transmission with 124 zero bytes unless NO_ZEROES', async (t) => {
    const { socket } = await twoExports(t);
    for (const clientFlags of [1, 3]) {
      const peer = await RawPeer.connect(socket);
      t.after(() => peer.destroy());
      await peer.greet(clientFlags);
      peer.sendOption(1, Buffer.from('alpha'));
      const reply = await peer.read(10 + (clientFlags & 2 ? 0 : 124));
      assert.equal(reply.readBigUInt64BE(0), BigInt(4 * MiB));
      assert.ok(reply.subarray(10).every((b) => b === 0));
      // Transmission works: a 512-byte read gets a simple reply with data.
      peer.sendRequest(0, 7n, 0, 512);
      const r = await peer.simpleReply(512);
      assert.equal(r.magic, 0x67446698);
      assert.equal(r.error, 0);
      assert.equal(r.cookie, 7n);
    }
  });

  it('closes the session for NBD_OPT_EXPORT_NAME of an unknown export', async (t) => {
    const { socket } = await twoExports(t);
    const peer = await RawPeer.connect(socket);
    t.after(() => peer.destroy());
    await peer.greet();
    peer.sendOption(1, Buffer.from('nope'));
    assert.equal(await peer.closedWithin(5000), true);
  });

  it('ACKs NBD_OPT_ABORT and closes', async (t) => {
    const { socket } = await twoExports(t);
    const peer = await RawPeer.connect(socket);
    t.after(() => peer.destroy());
    await peer.greet();
    peer.sendOption(2);
    const r = await peer.optionReply();
    assert.equal(r.type, ACK);
    assert.equal(await peer.closedWithin(5000), true);
  });

  it('drops clients with unknown client flags or a bad option magic', async (t) => {
    const { socket } = await twoExports(t);
    const flags = await RawPeer.connect(socket);
    t.after(() => flags.destroy());
    await flags.greet(0x4);
    assert.equal(await flags.closedWithin(5000), true);

    const magic = await RawPeer.connect(socket);
    t.after(() => magic.destroy());
    await magic.greet();
    magic.write(Buffer.from('IHAVEOPX\0\0\0\x03\0\0\0\0', 'latin1'));
    assert.equal(await magic.closedWithin(5000), true);
  });

  it('skips oversized option data without buffering it and answers ERR_TOO_BIG', async (t) => {
    const { socket } = await twoExports(t);
    const peer = await RawPeer.connect(socket);
    t.after(() => peer.destroy());
    await peer.greet();
    const big = Buffer.alloc(1 * MiB, 0x41);
    peer.sendOption(7, big);
    const r = await peer.optionReply();
    assert.equal(r.type, ERR_TOO_BIG);
    peer.sendOption(0x1234, big);
    assert.equal((await peer.optionReply()).type, ERR_UNSUP);
    const go = await peer.go('beta', true);
    assert.equal(go.size, BigInt(2 * MiB));
    assert.equal(go.flags & 0x80, 0x80, 'DF with structured replies');
  });

  it('accepts options split into single bytes', async (t) => {
    const { socket } = await twoExports(t);
    const peer = await RawPeer.connect(socket);
    t.after(() => peer.destroy());
    await peer.greet();
    const h = Buffer.alloc(16);
    h.write('IHAVEOPT', 0, 'latin1');
    h.writeUInt32BE(3, 8);
    for (const b of h) {
      peer.write(Buffer.from([b]));
      await new Promise((r) => setImmediate(r));
    }
    assert.equal((await peer.optionReply()).type, REP_SERVER);
  });
});
