import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { ImageFormatError } from '../../../src/block/block-device.ts';
import {
  encodeLogEntry,
  findActiveSequence,
  parseLogEntryAt,
  planReplay,
} from '../../../src/block/image/vhdx/log.ts';

const MiB = 1 << 20;
const GUID = '6d2a3b1c-0f4e-4c5a-9b8d-7e6f5a4b3c2d';

function sector(fill: number): Uint8Array {
  return new Uint8Array(4096).fill(fill);
}

function entry(
  sequence: bigint,
  tail: number,
  sectors: { fileOffset: number; data: Uint8Array }[],
) {
  return encodeLogEntry({
    sequenceNumber: sequence,
    logGuid: GUID,
    tail,
    flushedFileOffset: 8 * MiB,
    lastFileOffset: 8 * MiB,
    sectors,
  });
}

test('an encoded entry parses back, data sectors reassembled from descriptor and sector', () => {
  const data = crypto.getRandomValues(new Uint8Array(4096));
  const log = new Uint8Array(MiB);
  log.set(entry(7n, 8192, [{ fileOffset: 3 * MiB, data }]), 8192);
  const parsed = parseLogEntryAt(log, 8192, GUID);
  assert.ok(parsed);
  assert.equal(parsed.sequenceNumber, 7n);
  assert.equal(parsed.length, 8192);
  assert.equal(parsed.writes.length, 1);
  const w = parsed.writes[0]!;
  assert.ok('data' in w);
  assert.equal(w.fileOffset, 3 * MiB);
  assert.deepEqual(w.data, data);
  // Another LogGuid's entries are not this log's.
  assert.equal(parseLogEntryAt(log, 8192, '11111111-2222-4333-8444-555555555555'), null);
});

test('the active sequence ends at the highest sequence number and walks back to its tail', () => {
  const log = new Uint8Array(MiB);
  const a = entry(10n, 0, [{ fileOffset: 3 * MiB, data: sector(1) }]);
  const b = entry(11n, 0, [{ fileOffset: 3 * MiB + 4096, data: sector(2) }]);
  const stale = entry(4n, 65536, [{ fileOffset: 3 * MiB, data: sector(9) }]);
  log.set(a, 0);
  log.set(b, a.length);
  log.set(stale, 65536);
  const active = findActiveSequence(log, GUID);
  assert.deepEqual(
    active.map((e) => e.sequenceNumber),
    [10n, 11n],
  );
});

test('an entry that wraps around the end of the log is read across the wrap', () => {
  const log = new Uint8Array(MiB);
  const e = entry(3n, MiB - 4096, [{ fileOffset: 3 * MiB, data: sector(5) }]);
  log.set(e.subarray(0, 4096), MiB - 4096);
  log.set(e.subarray(4096), 0);
  const active = findActiveSequence(log, GUID);
  assert.equal(active.length, 1);
  assert.equal(active[0]!.position, MiB - 4096);
});

test('replay refuses a log that claims a longer flushed file or writes outside the file', () => {
  const log = new Uint8Array(MiB);
  log.set(entry(1n, 0, [{ fileOffset: 3 * MiB, data: sector(1) }]), 0);
  const active = findActiveSequence(log, GUID);
  assert.throws(
    () => planReplay(active, 4 * MiB, MiB, MiB),
    (e: unknown) => {
      assert.ok(e instanceof ImageFormatError);
      assert.match(
        e.message,
        /flushed file size of 8388608 bytes but the file has 4194304 \(truncated\)/,
      );
      return true;
    },
  );
  const intoLog = new Uint8Array(MiB);
  intoLog.set(entry(1n, 0, [{ fileOffset: MiB, data: sector(1) }]), 0);
  assert.throws(
    () => planReplay(findActiveSequence(intoLog, GUID), 8 * MiB, MiB, MiB),
    /changes the log itself/,
  );
  const plan = planReplay(active, 8 * MiB, MiB, MiB);
  assert.equal(plan.writes.length, 1);
});

test('fast-check: arbitrary and mutated log bytes never throw from the parser', () => {
  const valid = new Uint8Array(64 * 1024);
  valid.set(
    entry(2n, 0, [
      { fileOffset: 3 * MiB, data: sector(1) },
      { fileOffset: 4 * MiB, data: sector(2) },
    ]),
    0,
  );
  fc.assert(
    fc.property(
      fc.array(
        fc.record({
          at: fc.nat({ max: valid.length - 1 }),
          value: fc.integer({ min: 0, max: 255 }),
        }),
        {
          minLength: 1,
          maxLength: 20,
        },
      ),
      (edits) => {
        const log = valid.slice();
        for (const e of edits) log[e.at] = e.value;
        const active = findActiveSequence(log, GUID);
        for (const e of active) assert.ok(e.length % 4096 === 0 && e.length <= log.length);
      },
    ),
    { numRuns: 300 },
  );
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 4096, maxLength: 4096 * 4 }), (bytes) => {
      const log = new Uint8Array(Math.floor(bytes.length / 4096) * 4096);
      log.set(bytes.subarray(0, log.length));
      findActiveSequence(log, GUID);
    }),
    { numRuns: 200 },
  );
});
