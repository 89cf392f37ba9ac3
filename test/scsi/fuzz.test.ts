import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { cdbLengthForOpcode } from '../../src/scsi/cdb.ts';
import { ScsiOp } from '../../src/scsi/codes.ts';
import * as cdb from '../../src/scsi/initiator/cdb-builders.ts';
import * as parse from '../../src/scsi/initiator/response-parsers.ts';
import { parseSense } from '../../src/scsi/initiator/sense-parser.ts';
import type { DataDirection, ScsiResult } from '../../src/scsi/target/command.ts';
import { ScsiDisk } from '../../src/scsi/target/disk.ts';
import { ScsiTarget } from '../../src/scsi/target/target.ts';
import { guardedViews, RecordingDisk } from './scsi-harness.ts';

/**
 * Property tests: the target survives arbitrary commands (any CDB bytes,
 * directions, scatter/gather shapes, transfer lengths), and every initiator
 * parser survives arbitrary bytes and reads nothing outside them.
 */

const BS = 512;
const OPCODES = Object.values(ScsiOp) as number[];
const DATA_OPS = [
  ScsiOp.READ_6,
  ScsiOp.READ_10,
  ScsiOp.READ_12,
  ScsiOp.READ_16,
  ScsiOp.WRITE_6,
  ScsiOp.WRITE_10,
  ScsiOp.WRITE_12,
  ScsiOp.WRITE_16,
  ScsiOp.VERIFY_10,
  ScsiOp.VERIFY_16,
  ScsiOp.WRITE_SAME_10,
  ScsiOp.WRITE_SAME_16,
  ScsiOp.SYNCHRONIZE_CACHE_10,
  ScsiOp.SYNCHRONIZE_CACHE_16,
  ScsiOp.UNMAP,
  ScsiOp.MODE_SELECT_6,
  ScsiOp.MODE_SELECT_10,
];

function newTarget(): { target: ScsiTarget; backends: RecordingDisk[] } {
  const rw = new RecordingDisk(128 * BS);
  const ro = new RecordingDisk(64 * BS, { readOnly: true });
  const huge = new RecordingDisk(64 * BS);
  huge.sizeOverride = 2 ** 41; // capacity past 32 bits, backed by 64 KiB: reads past it fail in the backend
  const target = new ScsiTarget();
  target.attach(0, new ScsiDisk(rw, { maxTransferBytes: 16 * BS }));
  target.attach(1, new ScsiDisk(ro));
  target.attach(3, new ScsiDisk(huge));
  return { target, backends: [rw, ro, huge] };
}

/** CDB bytes of the opcode's group length with plausible (small) LBA and length fields. */
function plausibleCdb(
  op: number,
  lba: number,
  blocks: number,
  flags: number,
  noise: Uint8Array,
): Uint8Array {
  const length = cdbLengthForOpcode(op) ?? 16;
  const out = new Uint8Array(length);
  out.set(noise.subarray(0, length));
  out[0] = op;
  out[1] = flags;
  const view = new DataView(out.buffer);
  if (length === 6) {
    out[2] = lba & 0xff;
    out[3] = 0;
    out[4] = blocks & 0xff;
  } else if (length === 10) {
    view.setUint32(2, lba);
    view.setUint16(7, blocks & 0xffff);
  } else if (length === 12) {
    view.setUint32(2, lba);
    view.setUint32(6, blocks >>> 0);
  } else {
    view.setBigUint64(2, BigInt(lba));
    view.setUint32(10, blocks >>> 0);
  }
  out[length - 1] = (out[length - 1] ?? 0) & ~0x04;
  return out;
}

const cdbArb = fc.oneof(
  fc.uint8Array({ minLength: 0, maxLength: 32 }),
  fc
    .tuple(fc.constantFrom(...OPCODES), fc.uint8Array({ maxLength: 31 }))
    .map(([op, rest]) => Uint8Array.of(op, ...rest)),
);

const randomCommandArb = fc.record({
  lun: fc.constantFrom(0, 0, 1, 2, 3),
  cdb: cdbArb,
  direction: fc.constantFrom<DataDirection>('none', 'in', 'out'),
  sizes: fc.array(fc.oneof(fc.integer({ min: 0, max: 16 }), fc.integer({ min: 0, max: 5000 })), {
    maxLength: 4,
  }),
  fill: fc.uint8Array({ minLength: 0, maxLength: 64 }),
});

const DIRECTION: Record<number, DataDirection> = {
  [ScsiOp.READ_6]: 'in',
  [ScsiOp.READ_10]: 'in',
  [ScsiOp.READ_12]: 'in',
  [ScsiOp.READ_16]: 'in',
  [ScsiOp.VERIFY_10]: 'out',
  [ScsiOp.VERIFY_16]: 'out',
  [ScsiOp.SYNCHRONIZE_CACHE_10]: 'none',
  [ScsiOp.SYNCHRONIZE_CACHE_16]: 'none',
};

/**
 * Commands that mostly pass validation, so the data paths run: LBA and length
 * near the disk, the direction the opcode needs, a buffer about the size of
 * the transfer split into pieces, usually sane flags.
 */
const plausibleCommandArb = fc
  .record({
    lun: fc.constantFrom(0, 0, 0, 1, 3),
    op: fc.constantFrom(...DATA_OPS),
    lba: fc.oneof(
      { weight: 6, arbitrary: fc.integer({ min: 0, max: 112 }) },
      { weight: 1, arbitrary: fc.integer({ min: 113, max: 140 }) },
      { weight: 1, arbitrary: fc.constant(2 ** 32 - 1) },
    ),
    blocks: fc.oneof(
      { weight: 6, arbitrary: fc.integer({ min: 0, max: 16 }) },
      { weight: 1, arbitrary: fc.constantFrom(17, 0xffff, 0xffffffff) },
    ),
    flags: fc.oneof(
      { weight: 4, arbitrary: fc.constantFrom(0, 0x08, 0x02) },
      { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }) },
    ),
    noise: fc.uint8Array({ minLength: 16, maxLength: 16 }),
    rightDirection: fc.boolean(),
    otherDirection: fc.constantFrom<DataDirection>('none', 'in', 'out'),
    delta: fc.constantFrom(0, 0, 0, 0, 0, -1, 7, -512),
    cuts: fc.array(fc.integer({ min: 0, max: 1 << 13 }), { maxLength: 3 }),
    fill: fc.uint8Array({ minLength: 1, maxLength: 64 }),
  })
  .map((p) => {
    const direction = p.rightDirection ? (DIRECTION[p.op] ?? 'out') : p.otherDirection;
    const total = Math.max(0, Math.min(p.blocks, 64) * BS + p.delta);
    const sizes: number[] = [];
    let left = total;
    for (const c of p.cuts) {
      const n = Math.min(c, left);
      sizes.push(n);
      left -= n;
    }
    sizes.push(left);
    return {
      lun: p.lun,
      cdb: plausibleCdb(p.op, p.lba, p.blocks, p.flags, p.noise),
      direction,
      sizes,
      fill: p.fill,
    };
  });

const commandArb = fc.oneof(randomCommandArb, plausibleCommandArb);

interface Command {
  lun: number;
  cdb: Uint8Array;
  direction: DataDirection;
  sizes: number[];
  fill: Uint8Array;
}

function withTimeout<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not complete (hang)`)), 20_000);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function checkResult(result: ScsiResult, bufferBytes: number, label: string): void {
  assert.ok(result.status === 0 || result.status === 2, `${label}: status ${result.status}`);
  assert.ok(Number.isSafeInteger(result.transferred) && result.transferred >= 0, label);
  assert.ok(
    result.transferred <= bufferBytes,
    `${label}: transferred ${result.transferred} > ${bufferBytes}`,
  );
  if (result.status === 2) {
    const sense = result.sense;
    assert.ok(sense instanceof Uint8Array && sense.length === 18, label);
    assert.equal((sense[0] ?? 0) & 0x7f, 0x70, label);
    assert.equal(sense[7], 10, label);
    assert.equal(result.transferred, 0, label);
    const parsed = parseSense(sense);
    assert.ok(parsed.ok, label);
    // No HARDWARE ERROR (an internal failure would mean a bug: the memory
    // backends never fail on their own) and no MEDIUM ERROR (no faults injected).
    assert.ok(
      [2, 5, 6, 7, 0x0e].includes(parsed.value.key),
      `${label}: sense key ${parsed.value.key} ASC 0x${parsed.value.asc.toString(16)}`,
    );
  } else {
    assert.equal(result.sense, undefined, label);
  }
}

async function runCommand(target: ScsiTarget, c: Command): Promise<void> {
  const { views, guardsIntact } = guardedViews(c.sizes);
  let k = 0;
  for (const v of views) {
    for (let i = 0; i < v.length; i++)
      v[i] = c.fill.length ? (c.fill[k++ % c.fill.length] ?? 0) : 0;
  }
  const label = `LUN ${c.lun} CDB ${Buffer.from(c.cdb).toString('hex')} ${c.direction} [${c.sizes.join(',')}]`;
  const result = await withTimeout(
    target.execute(c.lun, { cdb: c.cdb, direction: c.direction, buffers: views }),
    label,
  );
  assert.ok(guardsIntact(), `${label}: wrote outside the buffers`);
  checkResult(
    result,
    c.sizes.reduce((a, b) => a + b, 0),
    label,
  );
}

describe('target under arbitrary commands', () => {
  it('never throws, never hangs, returns a valid status, stays inside the buffers', async () => {
    const { target, backends } = newTarget();
    await fc.assert(
      fc.asyncProperty(commandArb, async (c) => runCommand(target, c)),
      { numRuns: 3000 },
    );
    // nothing ever asked the read-only disk to change
    const changes = ['write', 'writev', 'discard', 'writeZeroes'];
    assert.ok(backends[1]?.calls.every((call) => !changes.includes(call.op)));
    assert.ok(backends[1]?.data.every((b) => b === 0));
  });

  it('the same holds for batches of concurrent commands', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(commandArb, { minLength: 1, maxLength: 12 }), async (batch) => {
        const { target } = newTarget();
        await Promise.all(batch.map((c) => runCommand(target, c)));
      }),
      { numRuns: 200 },
    );
  });

  it('a hostile parameter list never escapes UNMAP or MODE SELECT validation', async () => {
    const { target, backends } = newTarget();
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(ScsiOp.UNMAP, ScsiOp.MODE_SELECT_6, ScsiOp.MODE_SELECT_10),
        fc.uint8Array({ minLength: 0, maxLength: 300 }),
        fc.integer({ min: 0, max: 320 }),
        async (op, list, declared) => {
          const bytes = new Uint8Array(10);
          bytes[0] = op;
          if (op === ScsiOp.MODE_SELECT_6) bytes[4] = declared & 0xff;
          else new DataView(bytes.buffer).setUint16(7, declared);
          const c: Command = {
            lun: 0,
            cdb: op === ScsiOp.MODE_SELECT_6 ? bytes.subarray(0, 6) : bytes,
            direction: 'out',
            sizes: [list.length],
            fill: list,
          };
          await runCommand(target, c);
        },
      ),
      { numRuns: 1500 },
    );
    assert.ok(
      backends[0]?.calls.every(
        (call) => call.op !== 'discard' || (call.offset ?? 0) + (call.length ?? 0) <= 128 * BS,
      ),
    );
  });
});

describe('initiator parsers under arbitrary bytes', () => {
  const parsers: Array<[string, (b: Uint8Array) => { ok: boolean; error?: string }]> = [
    ['sense', parseSense],
    ['standard INQUIRY', parse.parseStandardInquiry],
    ['VPD 0x00', parse.parseSupportedVpdPages],
    ['VPD 0x80', parse.parseUnitSerialNumber],
    ['VPD 0x83', parse.parseDeviceIdentification],
    ['VPD 0xB0', parse.parseBlockLimits],
    ['VPD 0xB1', parse.parseBlockDeviceCharacteristics],
    ['VPD 0xB2', parse.parseLogicalBlockProvisioning],
    ['READ CAPACITY(10)', parse.parseReadCapacity10],
    ['READ CAPACITY(16)', parse.parseReadCapacity16],
    ['REPORT LUNS', parse.parseReportLuns],
    ['MODE SENSE(6)', (b) => parse.parseModeSense(b, false)],
    ['MODE SENSE(10)', (b) => parse.parseModeSense(b, true)],
  ];

  /** Bytes biased towards the structure each parser expects: first bytes often plausible. */
  const bytesArb = fc.oneof(
    fc.uint8Array({ maxLength: 400 }),
    fc
      .tuple(
        fc.constantFrom(0x70, 0x71, 0x72, 0x73, 0x00, 0x7f),
        fc.constantFrom(0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2, 0x05),
        fc.uint8Array({ maxLength: 300 }),
      )
      .map(([a, b, rest]) => Uint8Array.of(a, b, ...rest)),
  );

  for (const [name, parser] of parsers) {
    it(`${name}: never throws, and reads nothing outside its input`, () => {
      fc.assert(
        fc.property(
          bytesArb,
          fc.uint8Array({ minLength: 8, maxLength: 8 }),
          (bytes, neighbours) => {
            const alone = parser(bytes.slice());
            assert.equal(typeof alone.ok, 'boolean');
            if (!alone.ok) assert.ok(typeof alone.error === 'string' && alone.error.length > 0);
            // the same bytes as a view inside a larger buffer with arbitrary neighbours
            const backing = new Uint8Array(bytes.length + 16);
            backing.set(neighbours, 0);
            backing.set(neighbours, bytes.length + 8);
            backing.set(bytes, 8);
            const embedded = parser(backing.subarray(8, 8 + bytes.length));
            assert.deepEqual(embedded, alone);
          },
        ),
        { numRuns: 2000 },
      );
    });
  }

  it('any allocation length: a VPD page parses exactly when it arrived whole', async () => {
    const { target } = newTarget();
    const pages: Array<[number, (b: Uint8Array) => { ok: boolean }]> = [
      [0x00, parse.parseSupportedVpdPages],
      [0x80, parse.parseUnitSerialNumber],
      [0x83, parse.parseDeviceIdentification],
      [0xb0, parse.parseBlockLimits],
      [0xb1, parse.parseBlockDeviceCharacteristics],
      [0xb2, parse.parseLogicalBlockProvisioning],
    ];
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...pages),
        fc.integer({ min: 0, max: 300 }),
        async ([page, parser], allocation) => {
          const buffer = new Uint8Array(300);
          const r = await target.execute(0, {
            cdb: cdb.inquiry({ page, allocation }),
            direction: 'in',
            buffers: [buffer],
          });
          assert.equal(r.status, 0);
          const data = buffer.subarray(0, r.transferred);
          const whole = parse.vpdPageSize(data);
          assert.equal(parser(data).ok, whole !== undefined && data.length >= whole);
        },
      ),
      { numRuns: 500 },
    );
  });
});
