import type { AscPair } from './codes.ts';
import {
  descriptorSenseHeader,
  fixedSense,
  informationDescriptor,
  senseKeySpecificDescriptor,
} from './protocol.ts';

/**
 * Sense data the target reports (SPC-4 4.5). A condition is built once and
 * encoded in the format the initiator asked for: fixed format (response code
 * 0x70) for autosense and REQUEST SENSE with DESC=0, descriptor format (0x72)
 * for REQUEST SENSE with DESC=1.
 */

/** Which CDB or parameter-list byte (and bit) was wrong (SPC-4 4.5.2.4.2). */
export interface FieldPointer {
  /** true: the error is in the CDB (C/D=1); false: in the parameter list. */
  readonly inCdb: boolean;
  readonly byte: number;
  /** The most significant bit of the wrong field, when it is not the whole byte. */
  readonly bit?: number;
}

export interface SenseCondition {
  readonly key: number;
  readonly asc: number;
  readonly ascq: number;
  /**
   * The INFORMATION field: the failing LBA for medium errors, the byte offset
   * of the first difference for MISCOMPARE. Fixed format has 32 bits for it;
   * a larger value leaves VALID clear there (SPC-4 4.5.3) and is reported
   * only in descriptor format.
   */
  readonly information?: number;
  readonly fieldPointer?: FieldPointer;
}

export const FIXED_SENSE_LENGTH = 18;
const FIXED_RESPONSE_CURRENT = 0x70;
const DESCRIPTOR_RESPONSE_CURRENT = 0x72;
const DESCRIPTOR_INFORMATION = 0x00;
const DESCRIPTOR_SENSE_KEY_SPECIFIC = 0x02;

export function senseCondition(
  key: number,
  code: AscPair,
  extra: { information?: number; fieldPointer?: FieldPointer } = {},
): SenseCondition {
  return { key, asc: code.asc, ascq: code.ascq, ...extra };
}

/** The 3 sense-key-specific bytes of a field pointer (SKSV set). */
export function encodeFieldPointer(pointer: FieldPointer): Uint8Array {
  let first = 0x80;
  if (pointer.inCdb) first |= 0x40;
  if (pointer.bit !== undefined) first |= 0x08 | (pointer.bit & 0x07);
  return Uint8Array.of(first, (pointer.byte >>> 8) & 0xff, pointer.byte & 0xff);
}

function hasInformation(c: SenseCondition): c is SenseCondition & { information: number } {
  return c.information !== undefined && Number.isSafeInteger(c.information) && c.information >= 0;
}

export function encodeFixedSense(c: SenseCondition): Uint8Array {
  const fits = hasInformation(c) && c.information <= 0xffffffff;
  return fixedSense.write({
    responseCode: FIXED_RESPONSE_CURRENT,
    valid: fits ? 1 : 0,
    senseKey: c.key & 0x0f,
    ili: 0,
    eom: 0,
    filemark: 0,
    information: fits ? c.information : 0,
    additionalLength: FIXED_SENSE_LENGTH - 8,
    commandSpecific: 0,
    asc: c.asc,
    ascq: c.ascq,
    fru: 0,
    senseKeySpecific: c.fieldPointer ? encodeFieldPointer(c.fieldPointer) : new Uint8Array(3),
  });
}

export function encodeDescriptorSense(c: SenseCondition): Uint8Array {
  const withInfo = hasInformation(c);
  const total =
    descriptorSenseHeader.size +
    (withInfo ? informationDescriptor.size : 0) +
    (c.fieldPointer ? senseKeySpecificDescriptor.size : 0);
  const out = new Uint8Array(total);
  let at = descriptorSenseHeader.writeInto(out, 0, {
    responseCode: DESCRIPTOR_RESPONSE_CURRENT,
    senseKey: c.key & 0x0f,
    asc: c.asc,
    ascq: c.ascq,
    sdatOvfl: 0,
    additionalLength: total - descriptorSenseHeader.size,
  });
  if (withInfo) {
    at = informationDescriptor.writeInto(out, at, {
      type: DESCRIPTOR_INFORMATION,
      length: informationDescriptor.size - 2,
      valid: 1,
      information: BigInt(c.information),
    });
  }
  if (c.fieldPointer) {
    senseKeySpecificDescriptor.writeInto(out, at, {
      type: DESCRIPTOR_SENSE_KEY_SPECIFIC,
      length: senseKeySpecificDescriptor.size - 2,
      senseKeySpecific: encodeFieldPointer(c.fieldPointer),
    });
  }
  return out;
}
