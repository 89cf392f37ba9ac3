import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  crc32c,
  crc32cUpdate,
  crc32cWithZeroedField,
} from '../../../src/block/image/vhdx/crc32c.ts';

test('CRC-32C check values (RFC 3720 appendix B.4 and the catalogue check string)', () => {
  assert.equal(crc32c(new TextEncoder().encode('123456789')), 0xe3069283);
  assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa);
  assert.equal(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43);
  const ascending = Uint8Array.from({ length: 32 }, (_, i) => i);
  assert.equal(crc32c(ascending), 0x46dd794e);
  assert.equal(crc32c(new Uint8Array(0)), 0);
});

test('incremental CRC equals one-shot CRC', () => {
  const data = crypto.getRandomValues(new Uint8Array(5000));
  const state = crc32cUpdate(crc32cUpdate(0xffffffff, data.subarray(0, 1234)), data.subarray(1234));
  assert.equal((state ^ 0xffffffff) >>> 0, crc32c(data));
});

test('a checksum field counts as zero without the bytes being changed', () => {
  const data = crypto.getRandomValues(new Uint8Array(4096));
  const copy = data.slice();
  const zeroed = data.slice();
  zeroed.fill(0, 4, 8);
  assert.equal(crc32cWithZeroedField(data, 4), crc32c(zeroed));
  assert.deepEqual(data, copy);
});
