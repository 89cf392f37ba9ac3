import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Reach } from '../../hostile/mutate.ts';
import { nvspMessage, rndisMessages, word } from './hostile-inputs.ts';
import { carriesFrames, twoNics } from './hostile-rig.ts';

fc.configureGlobal({ includeErrorInReport: true });

/**
 * A hostile guest: over the primary channel of a NIC that came up properly,
 * arbitrary NVSP messages (every type, any length, boundary values),
 * RNDIS_PKT naming send-buffer sections anywhere with any size over any
 * RNDIS bytes, RNDIS_PKT as page lists inside and outside guest memory,
 * completions the host never asked for, packets of types netvsp does not
 * take. netvsp must never throw (handlerErrors 0), keep the channel open,
 * and the bystander NIC must keep carrying frames both ways.
 */

const action = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('nvsp' as const),
      bytes: nvspMessage,
      completion: fc.boolean(),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('section' as const),
      section: fc.oneof(fc.integer({ min: 0, max: 50 }), word),
      size: fc.oneof(fc.integer({ min: 0, max: 6200 }), word),
      channelType: fc.oneof(fc.constantFrom(0, 1), word),
      content: rndisMessages,
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('good-section' as const),
      section: fc.integer({ min: 0, max: 40 }),
      content: rndisMessages,
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('pages' as const),
      offset: fc.integer({ min: 0, max: 4095 }),
      count: fc.oneof(fc.integer({ min: 0, max: 9000 }), word),
      outside: fc.boolean(),
      content: rndisMessages,
      channelType: fc.constantFrom(0, 1),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('completion' as const),
      transLo: word,
      payload: fc.uint8Array({ minLength: 0, maxLength: 16 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('transfer' as const),
      payload: nvspMessage,
      pageSet: word,
    }),
  },
);

const scratchOf = new WeakMap<object, number>();

describe('netvsp against a hostile guest', () => {
  it('never throws, keeps the channel, and the other NIC keeps working', async () => {
    const reach = new Reach();
    let rig = await twoNics();
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(action, { minLength: 1, maxLength: 20 }), async (actions) => {
          // A guest that revoked its buffers or started over ruined its own NIC: the next
          // run gets a fresh pair, so every run attacks a NIC that works.
          if (
            !rig.target.vsp.sendBuffer ||
            !rig.target.vsp.receiveBuffer ||
            rig.target.nic.state !== 'ready'
          ) {
            await rig.close();
            rig = await twoNics();
          }
          reach.run();
          const { target } = rig;
          const primary = target.nic.primary;
          const sections = target.nic.sections;
          const hostQueue = target.vsp.byIndex[0]?.queue;
          assert.ok(primary && sections && hostQueue);
          const queue = primary.queue;
          // Three pages of guest memory of the test's own, for page-list sends.
          let scratchPfn = scratchOf.get(rig);
          if (scratchPfn === undefined) {
            scratchPfn = rig.bus.allocator.allocate(3);
            scratchOf.set(rig, scratchPfn);
          }
          const scratch = rig.bus.guestPartition.memory.bytes(scratchPfn * 4096, 3 * 4096);
          const before = { ...target.vsp.counters };
          const refusedBefore = target.vsp.channelCounters()[0]?.refused ?? 0;
          const rndisPkt = (channelType: number, section: number, size: number): Uint8Array => {
            const nvsp = new Uint8Array(40);
            const v = new DataView(nvsp.buffer);
            v.setUint32(0, 107, true);
            v.setUint32(4, channelType >>> 0, true);
            v.setUint32(8, section >>> 0, true);
            v.setUint32(12, size >>> 0, true);
            return nvsp;
          };
          for (const a of actions) {
            if (a.kind === 'nvsp') {
              queue.sendInband(a.bytes, 0x7000, 0, a.completion);
            } else if (a.kind === 'section' || a.kind === 'good-section') {
              const at = (a.section >>> 0) % sections.count;
              const view = sections.view(at);
              view.fill(0);
              view.set(a.content.subarray(0, view.length));
              const nvsp =
                a.kind === 'good-section'
                  ? rndisPkt(0, at, Math.min(a.content.length, view.length))
                  : rndisPkt(a.channelType, a.section, a.size);
              queue.sendInband(nvsp, 0x7001, 0, true);
            } else if (a.kind === 'pages') {
              scratch.set(a.content.subarray(0, scratch.length - a.offset), a.offset);
              const count = Math.max(1, (a.count >>> 0) % 70_000);
              const pages = Math.ceil((a.offset + count) / 4096);
              const base = a.outside ? 0x7fff_0000 : scratchPfn;
              const pfns = Array.from({ length: Math.min(pages, 20) }, (_, i) => base + (i % 3));
              const byteCount = Math.min(count, pfns.length * 4096 - a.offset);
              const range = { byteOffset: a.offset, byteCount, pfns };
              queue.sendGpaDirect(
                [range],
                rndisPkt(a.channelType, 0xffff_ffff, 0),
                0x7002,
                0,
                true,
              );
            } else if (a.kind === 'completion') {
              queue.sendCompletion(a.transLo >>> 0, 0, a.payload);
            } else {
              const ranges = [{ byteCount: 10, byteOffset: 0 }];
              queue.sendTransferPages(a.pageSet >>> 0, ranges, a.payload, 0x7003, 0, true);
            }
          }
          await new Promise((r) => setTimeout(r, 2));
          await new Promise((r) => setImmediate(r));
          assert.equal(hostQueue.stats.handlerErrors, 0, 'netvsp never threw');
          assert.equal(hostQueue.state, 'open', 'the channel stays open');
          const c = target.vsp.counters;
          if (c.txFrames > before.txFrames) reach.hit('frame to the backend');
          if (c.badRndis > before.badRndis) reach.hit('RNDIS refused');
          if ((target.vsp.channelCounters()[0]?.refused ?? 0) > refusedBefore)
            reach.hit('RNDIS_PKT refused');
          const buffer = target.vsp.receiveBuffer;
          if (buffer) assert.ok(buffer.inUse <= buffer.count);
          await carriesFrames(rig.bystander, 'the bystander NIC');
        }),
        { numRuns: 120 },
      );
      reach.assertAtLeast('frame to the backend', 0.15);
      reach.assertAtLeast('RNDIS refused', 0.3);
      reach.assertAtLeast('RNDIS_PKT refused', 0.3);
    } finally {
      await rig.close();
    }
  });
});
