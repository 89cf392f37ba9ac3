import { be32 } from '../cdb.ts';
import { Asc } from '../codes.ts';
import { reportLunsHeader } from '../protocol.ts';
import type { ScsiCommand, ScsiResult } from './command.ts';
import { respondDataIn } from './data-phase.ts';
import { cdbField, illegalRequest } from './result.ts';

/**
 * REPORT LUNS (SPC-4 6.33) and the single-level LUN encodings of SAM-5 4.7:
 * LUNs 0..255 use peripheral device addressing (00b, bus 0), 256..16383 flat
 * space addressing (01b).
 */

export const MAX_LUN = 0x3fff;

/** The 8-byte LUN structure for a single-level LUN number. */
export function encodeLun(lun: number): Uint8Array {
  const out = new Uint8Array(8);
  if (lun < 256) {
    out[1] = lun;
  } else {
    out[0] = 0x40 | (lun >> 8);
    out[1] = lun & 0xff;
  }
  return out;
}

/** SELECT REPORT values: all LUNs, well-known only (we have none), all again. */
const SELECT_ALL = 0x00;
const SELECT_WELL_KNOWN = 0x01;
const SELECT_ALL_LOGICAL_UNITS = 0x02;
/** SPC-4: the allocation length must be at least 16 bytes. */
const MIN_ALLOCATION = 16;

export function reportLunsData(luns: readonly number[]): Uint8Array {
  const out = new Uint8Array(reportLunsHeader.size + luns.length * 8);
  reportLunsHeader.writeInto(out, 0, { lunListLength: luns.length * 8 });
  luns.forEach((lun, i) => {
    out.set(encodeLun(lun), reportLunsHeader.size + i * 8);
  });
  return out;
}

/** Executes REPORT LUNS for the given inventory. */
export function executeReportLuns(cmd: ScsiCommand, luns: readonly number[]): ScsiResult {
  if (cmd.cdb.length < 12) return illegalRequest(Asc.INVALID_FIELD_IN_CDB);
  // NACA (control byte bit 2) is not supported.
  if ((cmd.cdb[11] ?? 0) & 0x04) return illegalRequest(Asc.INVALID_FIELD_IN_CDB, cdbField(11, 2));
  const select = cmd.cdb[2] ?? 0;
  if (
    select !== SELECT_ALL &&
    select !== SELECT_WELL_KNOWN &&
    select !== SELECT_ALL_LOGICAL_UNITS
  ) {
    return illegalRequest(Asc.INVALID_FIELD_IN_CDB, cdbField(2));
  }
  const allocation = be32(cmd.cdb, 6);
  if (allocation < MIN_ALLOCATION) return illegalRequest(Asc.INVALID_FIELD_IN_CDB, cdbField(6));
  const listed = select === SELECT_WELL_KNOWN ? [] : [...luns].sort((a, b) => a - b);
  return respondDataIn(cmd, reportLunsData(listed), allocation);
}
