/**
 * What the guest's storvsc makes of a SCSI command that failed: a readable
 * description of the SRB result, and, for the disk's I/O, a DiskIoError.
 * Sense data decides the error code (DATA PROTECT → EROFS, or ENOSPC when it
 * is SPACE ALLOCATION FAILED; LBA OUT OF RANGE → ERANGE, other ILLEGAL
 * REQUEST → EINVAL; the rest, and no sense at all, → EIO), and its
 * INFORMATION field, when the host fills it in, the failing offset.
 */
import { DiskIoError } from '../../../block/block-device.ts';
import { Asc, SenseKey } from '../../../scsi/codes.ts';
import { type ParsedSense, parseSense } from '../../../scsi/initiator/sense-parser.ts';
import type { SrbResult } from './storvsc-channel.ts';

const SENSE_KEY_NAMES: Record<number, string> = {
  0: 'NO SENSE',
  1: 'RECOVERED ERROR',
  2: 'NOT READY',
  3: 'MEDIUM ERROR',
  4: 'HARDWARE ERROR',
  5: 'ILLEGAL REQUEST',
  6: 'UNIT ATTENTION',
  7: 'DATA PROTECT',
  11: 'ABORTED COMMAND',
};

export const hex = (n: number, width = 2): string => `0x${n.toString(16).padStart(width, '0')}`;

/** The result's sense data, when it has some that parses. */
export function senseOf(result: SrbResult): ParsedSense | undefined {
  if (result.sense.length === 0) return undefined;
  const parsed = parseSense(result.sense);
  return parsed.ok ? parsed.value : undefined;
}

/** Describes an SRB result: statuses, and sense key/ASC/ASCQ when there is sense data. */
export function describeResult(result: SrbResult): string {
  const parts = [`SRB status ${hex(result.srbStatus)}`, `SCSI status ${hex(result.scsiStatus)}`];
  const sense = result.sense.length > 0 ? parseSense(result.sense) : undefined;
  if (sense?.ok) {
    const s = sense.value;
    parts.push(
      `sense ${SENSE_KEY_NAMES[s.key] ?? hex(s.key, 1)}, ASC/ASCQ ${hex(s.asc)}/${hex(s.ascq)}`,
    );
  }
  return parts.join(', ');
}

/** A SCSI command that did not succeed. */
export class ScsiCommandError extends Error {
  override readonly name = 'ScsiCommandError';
  constructor(
    readonly what: string,
    readonly result: SrbResult,
  ) {
    super(`${what} failed: ${describeResult(result)}`);
  }
}

/**
 * The DiskIoError for a failed I/O command on `lun`. `offset` is the byte
 * the request started at; sense INFORMATION (an LBA, in `blockSize` blocks)
 * replaces it when it names a byte that exists.
 */
export function diskIoErrorFor(
  what: string,
  lun: number,
  blockSize: number,
  result: SrbResult,
  offset: number,
): DiskIoError {
  const message = `${what} on LUN ${lun} failed: ${describeResult(result)}`;
  const sense = senseOf(result);
  let at = offset;
  if (sense?.information !== undefined) {
    const byte = Number(sense.information) * blockSize;
    if (Number.isSafeInteger(byte) && byte >= 0) at = byte;
  }
  if (!sense) return new DiskIoError('EIO', message, at);
  if (sense.key === SenseKey.DATA_PROTECT) {
    const full =
      sense.asc === Asc.SPACE_ALLOCATION_FAILED_WRITE_PROTECT.asc &&
      sense.ascq === Asc.SPACE_ALLOCATION_FAILED_WRITE_PROTECT.ascq;
    return new DiskIoError(full ? 'ENOSPC' : 'EROFS', message, at);
  }
  if (sense.key === SenseKey.ILLEGAL_REQUEST) {
    const range = sense.asc === Asc.LBA_OUT_OF_RANGE.asc;
    return new DiskIoError(range ? 'ERANGE' : 'EINVAL', message, at);
  }
  return new DiskIoError('EIO', message, at);
}
