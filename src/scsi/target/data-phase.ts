import { Asc } from '../codes.ts';
import type { FieldPointer } from '../sense.ts';
import type { ScsiCommand, ScsiResult } from './command.ts';
import { good, illegalRequest } from './result.ts';
import { sgCopyIn, sgGather, sgLength } from './scatter-gather.ts';

/**
 * The data phase rules every command follows.
 *
 * - A command whose CDB asks for no data (length field 0) moves nothing and
 *   accepts any declared direction.
 * - Otherwise the declared direction must be the command's ('in' for
 *   INQUIRY, READ, ...; 'out' for WRITE, UNMAP, ...), or the command ends in
 *   ILLEGAL REQUEST, INVALID FIELD IN CDB (no field pointer: no CDB field is
 *   wrong, the transport's description of the data is).
 * - Data-in commands other than READ return min(allocation length, buffer
 *   length, data length) bytes: a short buffer truncates like a short
 *   allocation length does (SPC-4 4.2.5.6).
 * - Data-out commands need the whole parameter list or data in the buffer:
 *   a buffer shorter than the CDB's length field is ILLEGAL REQUEST, INVALID
 *   FIELD IN CDB pointing at that length field (there is no data to use).
 *   READ needs the whole transfer in the buffer too, for the same reason.
 */

export function directionMismatch(): ScsiResult {
  return illegalRequest(Asc.INVALID_FIELD_IN_CDB);
}

/** Returns parameter data to the initiator with allocation-length truncation. */
export function respondDataIn(cmd: ScsiCommand, data: Uint8Array, allocation: number): ScsiResult {
  if (allocation === 0) return good(0);
  if (cmd.direction !== 'in') return directionMismatch();
  const n = Math.min(allocation, data.length);
  return good(sgCopyIn(cmd.buffers, n === data.length ? data : data.subarray(0, n)));
}

/**
 * Copies a parameter list of `length` bytes out of the initiator's buffer
 * (copy first, then validate), or returns the failure result.
 */
export function takeDataOut(
  cmd: ScsiCommand,
  length: number,
  lengthField?: FieldPointer,
): Uint8Array | ScsiResult {
  if (length === 0) return new Uint8Array(0);
  if (cmd.direction !== 'out') return directionMismatch();
  if (sgLength(cmd.buffers) < length) return illegalRequest(Asc.INVALID_FIELD_IN_CDB, lengthField);
  return sgGather(cmd.buffers, length);
}

/** Checks that a data transfer of `bytes` in `direction` fits the command's buffers. */
export function checkTransfer(
  cmd: ScsiCommand,
  direction: 'in' | 'out',
  bytes: number,
  lengthField: FieldPointer,
): ScsiResult | undefined {
  if (bytes === 0) return undefined;
  if (cmd.direction !== direction) return directionMismatch();
  if (sgLength(cmd.buffers) < bytes) return illegalRequest(Asc.INVALID_FIELD_IN_CDB, lengthField);
  return undefined;
}
