import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Reach } from '../../hostile/mutate.ts';
import { nvspMessage, rndisMessages, word } from './hostile-inputs.ts';
import { carriesFrames, twoNics } from './hostile-rig.ts';

fc.configureGlobal({ includeErrorInReport: true });

/**
 * A hostile host: over the primary channel of a NIC that came up properly,
 * transfer-page packets naming the wrong pageset, ranges outside the receive
 * buffer or its sections, too many ranges, any NVSP payload; RNDIS messages
 * of every kind written into the receive buffer (data packets with bad
 * per-packet info, control answers to nothing, indications with buffers
 * anywhere); NVSP messages of every type (send tables of any count and
 * offset); completions for nothing; packet types netvsc does not take.
 * netvsc must never throw, keep its channel and its NIC up, and the NIC
 * under attack must still carry frames both ways afterwards.
 */

const RECEIVE_BUFFER_ID = 0xcafe;

const action = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('good-transfer' as const),
      section: fc.integer({ min: 0, max: 60 }),
      content: rndisMessages,
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('transfer' as const),
      pageSet: fc.oneof(fc.constant(RECEIVE_BUFFER_ID), word),
      ranges: fc.array(
        fc.record({
          offset: fc.oneof(fc.integer({ min: 0, max: 1 << 20 }), word),
          count: fc.oneof(fc.integer({ min: 0, max: 2000 }), word),
        }),
        { minLength: 0, maxLength: 40 },
      ),
      nvsp: fc.oneof(fc.constant(undefined), nvspMessage),
      content: rndisMessages,
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('nvsp' as const), bytes: nvspMessage }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('table' as const),
      count: fc.oneof(fc.constant(16), word),
      offset: fc.oneof(fc.constantFrom(12, 40, 104), word),
      entries: fc.array(word, { minLength: 16, maxLength: 16 }),
      length: fc.constantFrom(40, 64, 76, 104, 120),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('completion' as const),
      transLo: word,
      payload: fc.uint8Array({ maxLength: 40 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('gpa' as const), payload: nvspMessage }) },
);

function rndisPkt(channelType: number): Uint8Array {
  const nvsp = new Uint8Array(40);
  const v = new DataView(nvsp.buffer);
  v.setUint32(0, 107, true);
  v.setUint32(4, channelType, true);
  v.setUint32(8, 0xffff_ffff, true);
  return nvsp;
}

describe('netvsc against a hostile host', () => {
  it('never throws, keeps its NIC up, and a bad packet costs only that packet', async () => {
    const reach = new Reach();
    const rig = await twoNics();
    try {
      const { target } = rig;
      const host = target.vsp.byIndex[0]?.queue;
      const primary = target.nic.primary;
      const buffer = target.nic.receiveBuffer;
      assert.ok(host && primary && buffer);
      const sectionSize = target.nic.receiveSectionSize;
      const bytes = buffer.bytes;
      await fc.assert(
        fc.asyncProperty(fc.array(action, { minLength: 1, maxLength: 20 }), async (actions) => {
          reach.run();
          const before = { ...target.nic.counters };
          const refusedBefore = primary.counters.refused;
          for (const a of actions) {
            if (a.kind === 'good-transfer') {
              // The sections from the top of the buffer down: the real host fills from the bottom.
              const section = target.nic.receiveSectionCount - 1 - a.section;
              const at = section * sectionSize;
              const length = Math.min(a.content.length, sectionSize);
              bytes.set(a.content.subarray(0, length), at);
              host.sendTransferPages(
                RECEIVE_BUFFER_ID,
                [{ byteOffset: at, byteCount: length }],
                rndisPkt(0),
                0x9000,
                0,
                true,
              );
            } else if (a.kind === 'transfer') {
              for (const r of a.ranges) {
                const at = r.offset >>> 0;
                if (at < bytes.length) bytes.set(a.content.subarray(0, bytes.length - at), at);
              }
              const ranges = a.ranges.map((r) => ({
                byteOffset: r.offset >>> 0,
                byteCount: r.count >>> 0,
              }));
              host.sendTransferPages(
                a.pageSet >>> 0,
                ranges,
                a.nvsp ?? rndisPkt(0),
                0x9001,
                0,
                true,
              );
            } else if (a.kind === 'nvsp') {
              host.sendInband(a.bytes, 0x9002, 0, false);
            } else if (a.kind === 'table') {
              const msg = new Uint8Array(a.length);
              const v = new DataView(msg.buffer);
              v.setUint32(0, 134, true);
              v.setUint32(4, a.count >>> 0, true);
              v.setUint32(8, a.offset >>> 0, true);
              a.entries.forEach((e, i) => {
                if (40 + 4 * i + 4 <= msg.length) v.setUint32(40 + 4 * i, e >>> 0, true);
              });
              host.sendInband(msg, 0, 0, false);
            } else if (a.kind === 'completion') {
              host.sendCompletion(a.transLo >>> 0, 0, a.payload);
            } else {
              host.sendGpaDirect(
                [{ byteOffset: 0, byteCount: 100, pfns: [1] }],
                a.payload,
                0x9003,
                0,
                true,
              );
            }
          }
          await new Promise((r) => setTimeout(r, 2));
          await new Promise((r) => setImmediate(r));
          assert.equal(primary.queue.stats.handlerErrors, 0, 'netvsc never threw');
          assert.equal(primary.queue.state, 'open', 'the channel stays open');
          assert.equal(target.nic.state, 'ready', 'the NIC stays up');
          const c = target.nic.counters;
          if (c.rxFrames > before.rxFrames) reach.hit('frame to the port');
          if (c.badRndis > before.badRndis) reach.hit('RNDIS refused');
          if (primary.counters.refused > refusedBefore) reach.hit('transfer pages refused');
        }),
        { numRuns: 120 },
      );
      // The NIC under attack still carries frames, and so does the other one.
      await carriesFrames(target, 'the attacked NIC');
      await carriesFrames(rig.bystander, 'the bystander NIC');
      reach.assertAtLeast('frame to the port', 0.15);
      reach.assertAtLeast('RNDIS refused', 0.3);
      reach.assertAtLeast('transfer pages refused', 0.3);
    } finally {
      await rig.close();
    }
  });
});
