import { ScsiOp } from './codes.ts';

/**
 * In-place CDB field readers (SPC-4 4.2). CDBs are big-endian. The target
 * only calls these after checking the CDB is at least as long as its
 * opcode's group requires, so every index read is inside the CDB.
 */

/**
 * The CDB length implied by the opcode's group code (bits 7..5): group 0 is
 * 6 bytes, 1 and 2 are 10, 4 is 16, 5 is 12; group 3 (variable length and
 * reserved) and 6, 7 (vendor specific) are not supported (undefined).
 */
export function cdbLengthForOpcode(opcode: number): number | undefined {
  switch (opcode >> 5) {
    case 0:
      return 6;
    case 1:
    case 2:
      return 10;
    case 4:
      return 16;
    case 5:
      return 12;
    default:
      return undefined;
  }
}

export function be16(b: Uint8Array, at: number): number {
  return ((b[at] ?? 0) << 8) | (b[at + 1] ?? 0);
}

export function be24(b: Uint8Array, at: number): number {
  return ((b[at] ?? 0) << 16) | ((b[at + 1] ?? 0) << 8) | (b[at + 2] ?? 0);
}

export function be32(b: Uint8Array, at: number): number {
  return (((b[at] ?? 0) << 24) >>> 0) + be24(b, at + 1);
}

/**
 * A 64-bit big-endian field as a number. Values past 2^53 lose precision but
 * stay at least 2^53, which is larger than any capacity, so range checks on
 * the result remain correct.
 */
export function be64(b: Uint8Array, at: number): number {
  return be32(b, at) * 0x1_0000_0000 + be32(b, at + 4);
}

export function putBe16(b: Uint8Array, at: number, v: number): void {
  b[at] = (v >>> 8) & 0xff;
  b[at + 1] = v & 0xff;
}

export function putBe32(b: Uint8Array, at: number, v: number): void {
  b[at] = (v >>> 24) & 0xff;
  b[at + 1] = (v >>> 16) & 0xff;
  b[at + 2] = (v >>> 8) & 0xff;
  b[at + 3] = v & 0xff;
}

/** Writes a non-negative safe integer as 64-bit big-endian. */
export function putBe64(b: Uint8Array, at: number, v: number): void {
  putBe32(b, at, Math.floor(v / 0x1_0000_0000));
  putBe32(b, at + 4, v >>> 0);
}

/**
 * The LBA/length fields of a block command, with where they sit in the CDB
 * (for sense-key-specific field pointers).
 */
export interface BlockFields {
  readonly lba: number;
  readonly blocks: number;
  readonly lbaAt: number;
  readonly lengthAt: number;
}

/**
 * Decodes the LBA and length of the block commands by CDB size (SBC-3 5.x):
 * 6-byte READ/WRITE (21-bit LBA, length 0 = 256 blocks), 10-byte (32-bit
 * LBA at 2, 16-bit length at 7), 12-byte (32-bit LBA at 2, 32-bit length at
 * 6) and 16-byte (64-bit LBA at 2, 32-bit length at 10).
 */
export function blockFields(cdb: Uint8Array): BlockFields {
  const op = cdb[0] ?? 0;
  switch (cdbLengthForOpcode(op)) {
    case 6: {
      const n = cdb[4] ?? 0;
      return { lba: be24(cdb, 1) & 0x1fffff, blocks: n === 0 ? 256 : n, lbaAt: 1, lengthAt: 4 };
    }
    case 10:
      return { lba: be32(cdb, 2), blocks: be16(cdb, 7), lbaAt: 2, lengthAt: 7 };
    case 12:
      return { lba: be32(cdb, 2), blocks: be32(cdb, 6), lbaAt: 2, lengthAt: 6 };
    default:
      return { lba: be64(cdb, 2), blocks: be32(cdb, 10), lbaAt: 2, lengthAt: 10 };
  }
}

export function isReadOp(op: number): boolean {
  return (
    op === ScsiOp.READ_6 || op === ScsiOp.READ_10 || op === ScsiOp.READ_12 || op === ScsiOp.READ_16
  );
}

export function isWriteOp(op: number): boolean {
  return (
    op === ScsiOp.WRITE_6 ||
    op === ScsiOp.WRITE_10 ||
    op === ScsiOp.WRITE_12 ||
    op === ScsiOp.WRITE_16
  );
}
