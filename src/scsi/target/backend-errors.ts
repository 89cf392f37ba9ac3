import { DiskIoError, ImageFormatError } from '../../block/block-device.ts';
import { Asc, SenseKey } from '../codes.ts';
import { type SenseCondition, senseCondition } from '../sense.ts';

/**
 * How a failure of the block device becomes sense data (SBC-3 4.14 and the
 * ASC table of SPC-4):
 *
 * | backend failure        | sense key       | ASC/ASCQ                                |
 * |------------------------|-----------------|-----------------------------------------|
 * | EIO while reading      | MEDIUM ERROR    | 0x11/0x00 UNRECOVERED READ ERROR        |
 * | EIO while writing      | MEDIUM ERROR    | 0x0C/0x00 WRITE ERROR                   |
 * | ENOSPC                 | DATA PROTECT    | 0x27/0x07 SPACE ALLOCATION FAILED WRITE PROTECT |
 * | EROFS                  | DATA PROTECT    | 0x27/0x00 WRITE PROTECTED               |
 * | ERANGE                 | ILLEGAL REQUEST | 0x21/0x00 LBA OUT OF RANGE              |
 * | ECLOSED                | NOT READY       | 0x04/0x00 NOT READY, CAUSE NOT REPORTABLE |
 * | ImageFormatError       | MEDIUM ERROR    | as EIO, without an LBA                  |
 * | EINVAL, anything else  | HARDWARE ERROR  | 0x44/0x00 INTERNAL TARGET FAILURE       |
 *
 * Medium errors carry the failing LBA (the DiskIoError's byte offset divided
 * by the block size) in the INFORMATION field.
 */
export type BackendOperation = 'read' | 'write';

export function senseForBackendError(
  error: unknown,
  operation: BackendOperation,
  blockSize: number,
): SenseCondition {
  const mediumCode = operation === 'read' ? Asc.UNRECOVERED_READ_ERROR : Asc.WRITE_ERROR;
  if (error instanceof DiskIoError) {
    switch (error.code) {
      case 'EIO': {
        const offset = error.offset;
        const lba =
          offset !== undefined && Number.isSafeInteger(offset) && offset >= 0
            ? Math.floor(offset / blockSize)
            : undefined;
        return senseCondition(
          SenseKey.MEDIUM_ERROR,
          mediumCode,
          lba === undefined ? {} : { information: lba },
        );
      }
      case 'ENOSPC':
        return senseCondition(SenseKey.DATA_PROTECT, Asc.SPACE_ALLOCATION_FAILED_WRITE_PROTECT);
      case 'EROFS':
        return senseCondition(SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED);
      case 'ERANGE':
        return senseCondition(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE);
      case 'ECLOSED':
        return senseCondition(SenseKey.NOT_READY, Asc.NOT_READY_CAUSE_NOT_REPORTABLE);
      default:
        return senseCondition(SenseKey.HARDWARE_ERROR, Asc.INTERNAL_TARGET_FAILURE);
    }
  }
  if (error instanceof ImageFormatError) return senseCondition(SenseKey.MEDIUM_ERROR, mediumCode);
  return senseCondition(SenseKey.HARDWARE_ERROR, Asc.INTERNAL_TARGET_FAILURE);
}
