import { type AscPair, ScsiStatus, SenseKey } from '../codes.ts';
import {
  encodeFixedSense,
  type FieldPointer,
  type SenseCondition,
  senseCondition,
} from '../sense.ts';
import type { ScsiResult } from './command.ts';

/** Result constructors shared by the disk and the target. */

export function good(transferred: number): ScsiResult {
  return { status: ScsiStatus.GOOD, transferred };
}

export function checkCondition(condition: SenseCondition): ScsiResult {
  return {
    status: ScsiStatus.CHECK_CONDITION,
    sense: encodeFixedSense(condition),
    transferred: 0,
  };
}

/** ILLEGAL REQUEST with the given ASC/ASCQ, pointing at a CDB byte when given. */
export function illegalRequest(code: AscPair, fieldPointer?: FieldPointer): ScsiResult {
  return checkCondition(
    senseCondition(SenseKey.ILLEGAL_REQUEST, code, fieldPointer ? { fieldPointer } : {}),
  );
}

/** A CDB field pointer (C/D=1). */
export function cdbField(byte: number, bit?: number): FieldPointer {
  return bit === undefined ? { inCdb: true, byte } : { inCdb: true, byte, bit };
}

/** A parameter-list field pointer (C/D=0). */
export function parameterField(byte: number, bit?: number): FieldPointer {
  return bit === undefined ? { inCdb: false, byte } : { inCdb: false, byte, bit };
}
