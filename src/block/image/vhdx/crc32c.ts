/**
 * CRC-32C (Castagnoli), the checksum of VHDX headers, region tables and log
 * entries ([MS-VHDX] 2.2.2, 2.2.3, 2.3.1): reflected polynomial 0x82F63B78,
 * initial value and final xor 0xFFFFFFFF. Table driven, one byte per step.
 */
const TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** Folds bytes into a running (pre-inverted) CRC state. */
export function crc32cUpdate(state: number, bytes: Uint8Array): number {
  let c = state;
  for (let i = 0; i < bytes.length; i++) c = TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return c >>> 0;
}

export function crc32c(bytes: Uint8Array): number {
  return (crc32cUpdate(0xffffffff, bytes) ^ 0xffffffff) >>> 0;
}

const FOUR_ZEROS = new Uint8Array(4);

/**
 * The checksum of a structure whose own 4-byte checksum field (at
 * fieldOffset) counts as zero, as VHDX computes it; the bytes are not changed.
 */
export function crc32cWithZeroedField(bytes: Uint8Array, fieldOffset: number): number {
  let c = crc32cUpdate(0xffffffff, bytes.subarray(0, fieldOffset));
  c = crc32cUpdate(c, FOUR_ZEROS);
  c = crc32cUpdate(c, bytes.subarray(fieldOffset + 4));
  return (c ^ 0xffffffff) >>> 0;
}

export function hex32(value: number): string {
  return `0x${value.toString(16).padStart(8, '0')}`;
}
