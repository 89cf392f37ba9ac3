import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { CoalescedFrame } from '../../../src/devices/net/guest/coalesced-frame.ts';

const SUB = 1;
const FIRST = 2;
const LAST = 4;

describe('a coalesced (RSC) frame in the guest', () => {
  it('joins first, middle and last fragments, and keeps the first one checksum info', () => {
    const c = new CoalescedFrame();
    assert.equal(c.add(SUB | FIRST, Uint8Array.of(1, 2), 0x28), 'more');
    assert.equal(c.add(SUB, Uint8Array.of(3), 0), 'more');
    assert.equal(c.add(SUB | LAST, Uint8Array.of(4, 5), 0), 'done');
    assert.equal(c.checksum, 0x28);
    assert.deepEqual([...c.take()], [1, 2, 3, 4, 5]);
    assert.equal(c.completed, 1);
  });

  it('drops a fragment without a first, and an unfinished frame when a whole one or a new first comes', () => {
    const c = new CoalescedFrame();
    assert.equal(c.add(SUB, Uint8Array.of(9), 0), 'dropped');
    assert.equal(c.add(SUB | LAST, Uint8Array.of(9), 0), 'dropped');
    c.add(SUB | FIRST, Uint8Array.of(1), 0);
    assert.equal(c.add(0, Uint8Array.of(7), 0), 'not-a-fragment');
    assert.equal(
      c.add(SUB | LAST, Uint8Array.of(2), 0),
      'dropped',
      'the open frame went with the whole one',
    );
    c.add(SUB | FIRST, Uint8Array.of(1), 0);
    c.add(SUB | FIRST, Uint8Array.of(6), 0);
    assert.equal(c.add(SUB | LAST, Uint8Array.of(8), 0), 'done');
    assert.deepEqual([...c.take()], [6, 8]);
    assert.equal(c.dropped, 5);
  });

  it('never grows past 64 KiB, whatever the host sends', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            flags: fc.integer({ min: 0, max: 7 }),
            length: fc.integer({ min: 0, max: 9000 }),
          }),
          {
            maxLength: 60,
          },
        ),
        (pieces) => {
          const c = new CoalescedFrame();
          for (const p of pieces) {
            if (c.add(p.flags, new Uint8Array(p.length), 0) === 'done') {
              assert.ok(c.take().length <= 65_535 + 18);
            }
          }
        },
      ),
    );
  });
});
