import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { MemoryDisk } from '../../../src/block/memory-disk.ts';
import { StorvspDevice } from '../../../src/devices/storvsc/host/storvsp.ts';
import { NtStatus, SrbStatus, VstorOperation } from '../../../src/devices/storvsc/protocol.ts';
import { PacketType } from '../../../src/vmbus/ring-protocol.ts';
import { applyMutation, fieldsOf, mutation, Reach } from '../../hostile/mutate.ts';
import { build, sizeOf } from '../../hostile/oracle-builder.ts';
import { type EndpointPair, endpointPair, fakeDeviceBus, guestMemory } from './wire.ts';

fc.configureGlobal({ includeErrorInReport: true });

/**
 * A hostile guest: arbitrary VSTOR packets — every packet type, any flags,
 * random and plausible request blocks, CDBs, page lists (also past the end
 * of guest memory) — sent to storvsp, with or without a handshake first.
 * The host must not throw, must keep the channel open, must answer every
 * packet that asks for an answer exactly once (no hang), and must keep
 * serving the other disk correctly afterwards.
 */

const MEMORY = 4 * 1024 * 1024;
const PAGES = MEMORY / 4096;

const ops = fc.oneof(
  fc.constantFrom(
    VstorOperation.ExecuteSrb,
    VstorOperation.ExecuteSrb,
    VstorOperation.BeginInitialization,
    VstorOperation.QueryProtocolVersion,
    VstorOperation.QueryProperties,
    VstorOperation.EndInitialization,
    VstorOperation.CreateSubChannels,
    VstorOperation.ResetBus,
    VstorOperation.CompleteIo,
    VstorOperation.FchbaData,
    VstorOperation.EnumerateBus,
  ),
  fc.integer({ min: 0, max: 0xffff_ffff }),
);

const cdbs = fc.oneof(
  fc.uint8Array({ minLength: 0, maxLength: 20 }),
  fc
    .record({
      op: fc.constantFrom(
        0x00,
        0x03,
        0x12,
        0x1a,
        0x25,
        0x28,
        0x2a,
        0x35,
        0x41,
        0x42,
        0x88,
        0x8a,
        0x93,
        0x9e,
        0xa0,
      ),
      rest: fc.uint8Array({ minLength: 15, maxLength: 15 }),
      lba: fc.integer({ min: 0, max: 5000 }),
      blocks: fc.integer({ min: 0, max: 300 }),
    })
    .map(({ op, rest, lba, blocks }) => {
      const cdb = Uint8Array.of(op, ...rest);
      if (op === 0x88 || op === 0x8a) {
        const v = new DataView(cdb.buffer);
        v.setBigUint64(2, BigInt(lba));
        v.setUint32(10, blocks);
        cdb[1] = 0;
        cdb[15] = 0;
      }
      return cdb;
    }),
);

const payloads = fc.oneof(
  fc.uint8Array({ minLength: 0, maxLength: 80 }),
  fc
    .record({
      op: ops,
      flags: fc.integer({ min: 0, max: 0xffff_ffff }),
      srbLength: fc.integer({ min: 0, max: 0xffff }),
      lun: fc.oneof(fc.constantFrom(0, 1), fc.integer({ min: 0, max: 255 })),
      path: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 255 })),
      cdb: cdbs,
      senseRoom: fc.integer({ min: 0, max: 255 }),
      dataIn: fc.oneof(fc.constantFrom(0, 1, 2), fc.integer({ min: 0, max: 255 })),
      length: fc.oneof(
        fc.constantFrom(0, 512, 4096, 65536),
        fc.integer({ min: 0, max: 0xffff_ffff }),
      ),
      srbFlags: fc.integer({ min: 0, max: 0xffff_ffff }),
      version: fc.oneof(
        fc.constantFrom(0x602, 0x600, 0x501, 0x402),
        fc.integer({ min: 0, max: 0xffff }),
      ),
      size: fc.constantFrom(64, 48, 12, 20, 36, 40),
    })
    .map((r) => {
      const p = new Uint8Array(r.size);
      const v = new DataView(p.buffer);
      const put = (at: number, f: () => void): void => {
        if (at < p.length) f();
      };
      put(3, () => v.setUint32(0, r.op, true));
      put(7, () => v.setUint32(4, r.flags, true));
      if (r.op === VstorOperation.QueryProtocolVersion)
        put(13, () => v.setUint16(12, r.version, true));
      else if (r.op === VstorOperation.CreateSubChannels)
        put(13, () => v.setUint16(12, r.version & 3, true));
      else {
        put(13, () => v.setUint16(12, r.srbLength, true));
        put(17, () => v.setUint8(17, r.path));
        put(19, () => v.setUint8(19, r.lun));
        put(20, () => v.setUint8(20, r.cdb.length));
        put(21, () => v.setUint8(21, r.senseRoom));
        put(22, () => v.setUint8(22, r.dataIn));
        put(27, () => v.setUint32(24, r.length, true));
        for (let i = 0; i < Math.min(16, r.cdb.length) && 28 + i < p.length; i++)
          p[28 + i] = r.cdb[i]!;
        put(55, () => v.setUint32(52, r.srbFlags, true));
      }
      return p;
    }),
);

/**
 * A well-formed READ(16)/WRITE(16) request block for LUN 0 or 1, inside the
 * disk, built from the oracle's vstor_packet / vmscsi_request layouts.
 */
const srbFields = [...fieldsOf('vstor_packet'), ...fieldsOf('vmscsi_request', 12)];

const wellFormedSrb = fc
  .record({
    write: fc.boolean(),
    lun: fc.constantFrom(0, 1),
    lba: fc.integer({ min: 0, max: 2040 }),
    blocks: fc.integer({ min: 1, max: 8 }),
    base: fc.integer({ min: 1, max: PAGES - 8 }),
    m: mutation(1),
  })
  .map(({ write, lun, lba, blocks, base, m }) => {
    const length = blocks * 512;
    const cdb = new Uint8Array(16);
    cdb[0] = write ? 0x8a : 0x88;
    new DataView(cdb.buffer).setBigUint64(2, BigInt(lba));
    new DataView(cdb.buffer).setUint32(10, blocks);
    const srb = build('vmscsi_request', {
      length: sizeOf('vmscsi_request'),
      lun,
      cdb_length: 16,
      sense_info_length: 20,
      data_in: write ? 0 : 1,
      data_transfer_length: length,
      cdb,
    });
    // Half of them intact; the others with one field at a boundary or off by one, cut or grown.
    const payload = applyMutation(
      build('vstor_packet', { operation: 3, flags: 1, vm_srb: srb }),
      m,
      srbFields,
    );
    return {
      type: PacketType.DataUsingGpaDirect,
      completion: true,
      payload,
      ranges: [{ byteOffset: 0, byteCount: length, base }],
      wellFormed: true,
    };
  });

/** A request block with exactly one of the faults storvsp must refuse (INVALID_REQUEST). */
const faultySrb = fc
  .record({
    fault: fc.constantFrom('cdb-length', 'data-in', 'too-long', 'short-list', 'no-list'),
    value: fc.integer({ min: 17, max: 255 }),
  })
  .map(({ fault, value }) => {
    const cdb = new Uint8Array(16);
    cdb[0] = 0x88;
    new DataView(cdb.buffer).setUint32(10, 8);
    const length = fault === 'too-long' ? 2 * 1024 * 1024 : 4096;
    const srb = build('vmscsi_request', {
      length: sizeOf('vmscsi_request'),
      lun: 0,
      cdb_length: fault === 'cdb-length' ? (value % 2 ? 0 : value) : 16,
      sense_info_length: 20,
      data_in: fault === 'data-in' ? 3 + (value % 250) : 1,
      data_transfer_length: length,
      cdb,
    });
    return {
      type: fault === 'no-list' ? PacketType.DataInband : PacketType.DataUsingGpaDirect,
      completion: true,
      payload: build('vstor_packet', { operation: 3, flags: 1, vm_srb: srb }),
      ranges: [{ byteOffset: 0, byteCount: fault === 'short-list' ? 512 : 4096, base: 20 }],
      wellFormed: false,
    };
  });

const ranges = fc.array(
  fc.record({
    byteOffset: fc.integer({ min: 0, max: 4095 }),
    byteCount: fc.integer({ min: 1, max: 70_000 }),
    base: fc.oneof(fc.integer({ min: 0, max: PAGES - 20 }), fc.integer({ min: 0, max: 2 ** 40 })),
  }),
  { minLength: 1, maxLength: 3 },
);

const packets = fc.array(
  fc.oneof(
    {
      weight: 3,
      arbitrary: fc.record({
        type: fc.constantFrom(
          PacketType.DataInband,
          PacketType.DataInband,
          PacketType.DataUsingGpaDirect,
          PacketType.DataUsingGpaDirect,
          PacketType.Completion,
          PacketType.DataUsingTransferPages,
        ),
        completion: fc.oneof(fc.constant(true), fc.boolean()),
        payload: payloads,
        ranges,
        wellFormed: fc.constant(false),
      }),
    },
    { weight: 2, arbitrary: wellFormedSrb },
    { weight: 1, arbitrary: faultySrb },
  ),
  { minLength: 1, maxLength: 40 },
);

async function until(condition: () => boolean, ms: number): Promise<boolean> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > ms) return false;
    await new Promise((r) => setTimeout(r, 1));
  }
  return true;
}

/** Sends a well-formed handshake on a fresh primary channel; resolves when it ended. */
async function handshake(pair: EndpointPair, vsp: StorvspDevice): Promise<void> {
  const ops = [
    VstorOperation.BeginInitialization,
    VstorOperation.QueryProtocolVersion,
    VstorOperation.QueryProperties,
    VstorOperation.EndInitialization,
  ];
  for (const [i, op] of ops.entries()) {
    const p = new Uint8Array(64);
    const v = new DataView(p.buffer);
    v.setUint32(0, op, true);
    v.setUint32(4, 1, true);
    if (op === VstorOperation.QueryProtocolVersion) v.setUint16(12, 0x602, true);
    assert.equal(pair.guest.sendInband(p, 0x7000_0000 + i, 0, true), 'ok');
  }
  assert.ok(await until(() => vsp.phase === 'ready', 2000), `handshake ended (${vsp.phase})`);
}

describe('storvsp against a hostile guest', () => {
  it('answers every request exactly once, never throws, and keeps serving the other disk', async (t) => {
    const reach = new Reach();
    const shakes = fc.oneof(
      { weight: 4, arbitrary: fc.constant(true) },
      { weight: 1, arbitrary: fc.constant(false) },
    );
    await fc.assert(
      fc.asyncProperty(packets, shakes, async (list, shakeFirst) => {
        reach.run();
        const mem = guestMemory(MEMORY);
        // Every page carries its own pattern: only pages a request named may change.
        const pattern = (pfn: number, i: number): number => (pfn * 31 + i) & 0xff;
        for (let pfn = 0; pfn < PAGES; pfn++) {
          const page = mem.memory.bytes(pfn * 4096, 4096);
          for (let i = 0; i < 4096; i += 512) page[i] = pattern(pfn, i);
        }
        const addressed = new Set<number>();
        const vsp = new StorvspDevice({ maxSubchannels: 1 });
        vsp.attach(fakeDeviceBus(mem.memory));
        const other = new MemoryDisk(1024 * 1024);
        vsp.attachDisk(0, new MemoryDisk(1024 * 1024), 'memory');
        vsp.attachDisk(1, other, 'memory');
        const pair = endpointPair(64 * 1024);
        vsp.open(pair.hostQueue, {
          relid: 1,
          subchannelIndex: 0,
          targetVp: 0,
          userData: new Uint8Array(120),
        });
        const answered = new Map<number, number>();
        pair.guest.onPacket = (p) => {
          answered.set(p.transLo, (answered.get(p.transLo) ?? 0) + 1);
          return true;
        };
        if (shakeFirst) await handshake(pair, vsp);
        const owed = new Set<number>();
        for (const [i, packet] of list.entries()) {
          const id = i + 1;
          const payload = packet.payload;
          let result: string;
          switch (packet.type) {
            case PacketType.DataInband:
              result = pair.guest.sendInband(payload, id, 0, packet.completion);
              break;
            case PacketType.DataUsingGpaDirect: {
              const list = packet.ranges.map((r) => ({
                byteOffset: r.byteOffset,
                byteCount: r.byteCount,
                pfns: Array.from(
                  { length: Math.ceil((r.byteOffset + r.byteCount) / 4096) },
                  (_, k) => r.base + k,
                ),
              }));
              for (const r of list) for (const pfn of r.pfns) addressed.add(pfn);
              result = pair.guest.sendGpaDirect(list, payload, id, 0, packet.completion);
              break;
            }
            case PacketType.Completion:
              result = pair.guest.sendCompletion(id, 0, payload);
              break;
            default:
              result = pair.guest.sendTransferPages(
                0,
                [{ byteCount: 8, byteOffset: 0 }],
                payload,
                id,
                0,
                packet.completion,
              );
          }
          const asks =
            (packet.type === PacketType.DataInband ||
              packet.type === PacketType.DataUsingGpaDirect) &&
            packet.completion &&
            ((payload.length + 7) & ~7) >= 12;
          if (result === 'ok' && asks) owed.add(id);
          // Let the host run now and then, so answers interleave with requests.
          if (i % 8 === 7) await new Promise((r) => setTimeout(r, 0));
        }
        const done = await until(() => [...owed].every((id) => answered.has(id)), 3000);
        assert.ok(done, `unanswered: ${[...owed].filter((id) => !answered.has(id)).join(', ')}`);
        for (const [id, count] of answered) {
          if (id >= 0x7000_0000) continue;
          assert.ok(owed.has(id), `packet ${id} was answered but asked for nothing`);
          assert.equal(count, 1, `packet ${id} answered ${count} times`);
        }
        assert.equal(pair.host.state, 'open');
        assert.equal(pair.hostQueue.stats.handlerErrors, 0, 'storvsp never threw');
        // No byte outside the pages the requests named was touched.
        for (let pfn = 0; pfn < PAGES; pfn++) {
          if (addressed.has(pfn)) continue;
          const page = mem.memory.bytes(pfn * 4096, 4096);
          for (let i = 0; i < 4096; i += 512) {
            if (page[i] !== pattern(pfn, i)) assert.fail(`page ${pfn} changed at ${i}`);
          }
        }
        const run = vsp.totals();
        if (run.reads + run.writes > 0) reach.hit('srb-executed');
        if (run.rejected > 0) reach.hit('srb-refused');
        if (run.badPackets > 0) reach.hit('packet-dropped');
        // The other disk still works: a fresh channel, a clean handshake, a write and a read.
        vsp.close(pair.hostQueue);
        const fresh = endpointPair(64 * 1024);
        vsp.open(fresh.hostQueue, {
          relid: 1,
          subchannelIndex: 0,
          targetVp: 0,
          userData: new Uint8Array(120),
        });
        const replies: { id: number; payload: Uint8Array }[] = [];
        fresh.guest.onPacket = (p) => {
          replies.push({ id: p.transLo, payload: p.payload().slice() });
          return true;
        };
        await handshake(fresh, vsp);
        const pfn = 100;
        mem.memory.bytes(pfn * 4096, 4096).fill(0x3c);
        const srb = (op: number, dataIn: number): Uint8Array => {
          const p = new Uint8Array(64);
          const v = new DataView(p.buffer);
          v.setUint32(0, VstorOperation.ExecuteSrb, true);
          v.setUint32(4, 1, true);
          v.setUint16(12, 52, true);
          v.setUint8(19, 1);
          v.setUint8(20, 16);
          v.setUint8(21, 20);
          v.setUint8(22, dataIn);
          v.setUint32(24, 4096, true);
          p[28] = op;
          v.setUint32(28 + 10, 8);
          return p;
        };
        const page = [{ byteOffset: 0, byteCount: 4096, pfns: [pfn] }];
        assert.equal(fresh.guest.sendGpaDirect(page, srb(0x8a, 0), 1, 0, true), 'ok');
        assert.ok(await until(() => replies.some((r) => r.id === 1), 2000), 'write answered');
        assert.ok(
          other.data.subarray(0, 4096).every((b) => b === 0x3c),
          'the write reached LUN 1',
        );
        mem.memory.bytes(pfn * 4096, 4096).fill(0);
        assert.equal(fresh.guest.sendGpaDirect(page, srb(0x88, 1), 2, 0, true), 'ok');
        assert.ok(await until(() => replies.some((r) => r.id === 2), 2000), 'read answered');
        for (const r of replies.filter((x) => x.id <= 2)) {
          assert.equal(new DataView(r.payload.buffer).getUint32(8, true), NtStatus.Success);
          assert.equal(r.payload[14], SrbStatus.Success);
        }
        assert.ok(
          mem.memory.bytes(pfn * 4096, 4096).every((b) => b === 0x3c),
          'the read came back',
        );
        const totals = vsp.totals();
        assert.equal(totals.inFlight, 0);
        assert.equal(fresh.hostQueue.stats.handlerErrors, 0);
      }),
      { numRuns: 120 },
    );
    t.diagnostic(`reach: ${reach.describe()}`);
    reach.assertAtLeast('srb-executed', 0.4);
    reach.assertAtLeast('srb-refused', 0.3);
    reach.assertAtLeast('packet-dropped', 0.3);
  });

  it('refuses page lists outside guest memory and data without a page list', async () => {
    const mem = guestMemory(MEMORY);
    const vsp = new StorvspDevice();
    vsp.attach(fakeDeviceBus(mem.memory));
    vsp.attachDisk(0, new MemoryDisk(1024 * 1024), 'memory');
    const pair = endpointPair(64 * 1024);
    vsp.open(pair.hostQueue, {
      relid: 1,
      subchannelIndex: 0,
      targetVp: 0,
      userData: new Uint8Array(120),
    });
    const replies = new Map<number, Uint8Array>();
    pair.guest.onPacket = (p) => {
      replies.set(p.transLo, p.payload().slice());
      return true;
    };
    await handshake(pair, vsp);
    const read = new Uint8Array(64);
    const v = new DataView(read.buffer);
    v.setUint32(0, VstorOperation.ExecuteSrb, true);
    v.setUint8(20, 16);
    v.setUint8(22, 1);
    v.setUint32(24, 8192, true);
    read[28] = 0x88;
    v.setUint32(38, 16);
    // Past the end of memory; shorter than data_transfer_length; no page list at all.
    pair.guest.sendGpaDirect(
      [{ byteOffset: 0, byteCount: 8192, pfns: [PAGES - 1, PAGES] }],
      read,
      1,
      0,
      true,
    );
    pair.guest.sendGpaDirect([{ byteOffset: 0, byteCount: 4096, pfns: [10] }], read, 2, 0, true);
    pair.guest.sendInband(read, 3, 0, true);
    assert.ok(await until(() => [1, 2, 3].every((id) => replies.has(id)), 2000), 'three answers');
    for (const id of [1, 2, 3]) {
      const r = replies.get(id)!;
      assert.equal(r[14], SrbStatus.InvalidRequest, `request ${id}`);
      assert.equal(new DataView(r.buffer).getUint32(8, true), NtStatus.InvalidParameter);
      assert.equal(new DataView(r.buffer).getUint32(24, true), 0, 'no bytes moved');
    }
    assert.equal(vsp.totals().rejected, 3);
    // With autosense disabled, a failure carries no sense bytes.
    const noSense = new Uint8Array(64);
    noSense.set(read);
    new DataView(noSense.buffer).setUint32(24, 4096, true);
    new DataView(noSense.buffer).setUint32(38, 16);
    new DataView(noSense.buffer).setBigUint64(30, 10_000n);
    noSense[21] = 20;
    new DataView(noSense.buffer).setUint32(52, 0x20, true);
    pair.guest.sendGpaDirect([{ byteOffset: 0, byteCount: 4096, pfns: [10] }], noSense, 4, 0, true);
    assert.ok(await until(() => replies.has(4), 2000), 'an answer');
    assert.equal(replies.get(4)![14], SrbStatus.Error, 'ERROR without AUTOSENSE_VALID');
    assert.equal(replies.get(4)![15], 0x02);
    assert.equal(replies.get(4)![21], 0, 'no sense bytes');
  });
});
