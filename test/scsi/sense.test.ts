import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { parseSense } from '../../src/scsi/initiator/sense-parser.ts';
import {
  encodeDescriptorSense,
  encodeFieldPointer,
  encodeFixedSense,
} from '../../src/scsi/sense.ts';
import { hex } from './scsi-harness.ts';

/** Target-side sense encoding (SPC-4 4.5): hand-written vectors, then a round trip. */

describe('sense data encoding', () => {
  it('fixed format, MEDIUM ERROR with a 32-bit LBA: VALID set', () => {
    assert.equal(
      hex(encodeFixedSense({ key: 3, asc: 0x11, ascq: 0, information: 0x01020304 })),
      'f00003010203040a000000001100000000 00'.replace(/\s/g, ''),
    );
  });

  it('fixed format with an LBA past 32 bits: VALID clear, INFORMATION zero', () => {
    assert.equal(
      hex(encodeFixedSense({ key: 3, asc: 0x11, ascq: 0, information: 2 ** 32 })),
      '700003000000000a000000001100000000 00'.replace(/\s/g, ''),
    );
  });

  it('fixed format, ILLEGAL REQUEST with a bit field pointer', () => {
    assert.equal(
      hex(
        encodeFixedSense({
          key: 5,
          asc: 0x24,
          ascq: 0,
          fieldPointer: { inCdb: true, byte: 1, bit: 4 },
        }),
      ),
      '700005000000000a0000000024000 0cc0001'.replace(/\s/g, ''),
    );
  });

  it('descriptor format with information and sense-key-specific descriptors', () => {
    assert.equal(
      hex(
        encodeDescriptorSense({
          key: 3,
          asc: 0x11,
          ascq: 0,
          information: 2 ** 40 + 5,
          fieldPointer: { inCdb: false, byte: 0x1234 },
        }),
      ),
      (
        '72 03 11 00 00 00 00 14' +
        '00 0a 80 00 0000010000000005' +
        '02 06 00 00 80 12 34 00'
      ).replace(/\s/g, ''),
    );
    assert.equal(hex(encodeDescriptorSense({ key: 0, asc: 0, ascq: 0 })), '7200000000000000');
  });

  it('field pointer bytes', () => {
    assert.equal(hex(encodeFieldPointer({ inCdb: false, byte: 300 })), '80012c');
    assert.equal(hex(encodeFieldPointer({ inCdb: true, byte: 9, bit: 7 })), 'cf0009');
  });

  it('every encoded condition parses back to itself, in both formats', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 15 }),
        fc.integer({ min: 0, max: 255 }),
        fc.integer({ min: 0, max: 255 }),
        fc.option(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER })),
        fc.option(
          fc.record({
            inCdb: fc.boolean(),
            byte: fc.integer({ min: 0, max: 0xffff }),
            bit: fc.option(fc.integer({ min: 0, max: 7 }), { nil: undefined }),
          }),
        ),
        (key, asc, ascq, information, pointer) => {
          const fieldPointer =
            pointer === null
              ? undefined
              : pointer.bit === undefined
                ? { inCdb: pointer.inCdb, byte: pointer.byte }
                : { inCdb: pointer.inCdb, byte: pointer.byte, bit: pointer.bit };
          const c = {
            key,
            asc,
            ascq,
            ...(information === null ? {} : { information }),
            ...(fieldPointer ? { fieldPointer } : {}),
          };
          for (const bytes of [encodeFixedSense(c), encodeDescriptorSense(c)]) {
            const p = parseSense(bytes);
            assert.ok(p.ok);
            assert.deepEqual(
              [p.value.key, p.value.asc, p.value.ascq, p.value.truncated],
              [key, asc, ascq, false],
            );
            const fixed = p.value.format === 'fixed';
            const expectInfo = information !== null && (!fixed || information <= 0xffffffff);
            assert.equal(p.value.information, expectInfo ? BigInt(information ?? 0) : undefined);
            assert.deepEqual(p.value.fieldPointer, key === 5 ? fieldPointer : undefined);
          }
        },
      ),
      { numRuns: 1000 },
    );
  });
});
