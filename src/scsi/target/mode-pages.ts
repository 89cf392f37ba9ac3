import { Asc, type AscPair, ModePage, PageControl } from '../codes.ts';
import {
  cachingModePage,
  controlModePage,
  longBlockDescriptor,
  MODE_DSP_DPOFUA,
  MODE_DSP_WP,
  modeHeader6,
  modeHeader10,
  shortBlockDescriptor,
} from '../protocol.ts';
import type { FieldPointer } from '../sense.ts';
import { parameterField } from './result.ts';

/**
 * Mode parameters of a disk LUN (SPC-4 7.5, SBC-3 6.4): the caching page
 * (WCE is the one changeable field) and the control page (nothing
 * changeable). Saved values are not supported. MODE SENSE builds the data;
 * MODE SELECT validates a whole parameter list before applying any of it.
 */

export interface ModeState {
  readonly writeCacheEnabled: boolean;
  readonly defaultWriteCacheEnabled: boolean;
  readonly readOnly: boolean;
  readonly blocks: number;
  readonly blockSize: number;
}

const WCE = 0x04;
/** Control page: QUEUE ALGORITHM MODIFIER 1 (unrestricted reordering allowed). */
const CONTROL_FLAGS3 = 0x10;

function cachingPage(pc: number, state: ModeState): Uint8Array {
  const wce =
    pc === PageControl.CHANGEABLE
      ? 1
      : (pc === PageControl.DEFAULT ? state.defaultWriteCacheEnabled : state.writeCacheEnabled)
        ? 1
        : 0;
  return cachingModePage.write({
    pageCode: ModePage.CACHING,
    spf: 0,
    ps: 0,
    pageLength: cachingModePage.size - 2,
    wce,
    writeRetentionPriority: 0,
    demandReadRetentionPriority: 0,
    disablePrefetchTransferLength: 0,
    minimumPrefetch: 0,
    maximumPrefetch: 0,
    maximumPrefetchCeiling: 0,
    flags12: 0,
    cacheSegments: 0,
    cacheSegmentSize: 0,
  });
}

function controlPage(pc: number): Uint8Array {
  const changeable = pc === PageControl.CHANGEABLE;
  return controlModePage.write({
    pageCode: ModePage.CONTROL,
    spf: 0,
    ps: 0,
    pageLength: controlModePage.size - 2,
    flags2: 0,
    flags3: changeable ? 0 : CONTROL_FLAGS3,
    flags4: 0,
    flags5: 0,
    obsolete6: 0,
    busyTimeoutPeriod: 0,
    extendedSelfTestCompletionTime: 0,
  });
}

export interface ModeSenseRequest {
  readonly ten: boolean;
  readonly dbd: boolean;
  readonly llbaa: boolean;
  readonly pageCode: number;
  readonly subpage: number;
  readonly pc: number;
}

export type ModeSenseOutcome =
  | { readonly ok: true; readonly data: Uint8Array }
  | { readonly ok: false; readonly code: AscPair; readonly pointer: FieldPointer };

/** Builds MODE SENSE(6)/(10) parameter data, or says which CDB field is wrong. */
export function modeSense(req: ModeSenseRequest, state: ModeState): ModeSenseOutcome {
  if (req.pc === PageControl.SAVED) {
    return {
      ok: false,
      code: Asc.SAVING_PARAMETERS_NOT_SUPPORTED,
      pointer: { inCdb: true, byte: 2, bit: 7 },
    };
  }
  const pages: Uint8Array[] = [];
  if (req.pageCode === ModePage.ALL) {
    if (req.subpage !== 0x00 && req.subpage !== 0xff) {
      return { ok: false, code: Asc.INVALID_FIELD_IN_CDB, pointer: { inCdb: true, byte: 3 } };
    }
    pages.push(cachingPage(req.pc, state), controlPage(req.pc));
  } else if (req.pageCode === ModePage.CACHING || req.pageCode === ModePage.CONTROL) {
    if (req.subpage !== 0) {
      return { ok: false, code: Asc.INVALID_FIELD_IN_CDB, pointer: { inCdb: true, byte: 3 } };
    }
    pages.push(
      req.pageCode === ModePage.CACHING ? cachingPage(req.pc, state) : controlPage(req.pc),
    );
  } else {
    return {
      ok: false,
      code: Asc.INVALID_FIELD_IN_CDB,
      pointer: { inCdb: true, byte: 2, bit: 5 },
    };
  }

  const changeable = req.pc === PageControl.CHANGEABLE;
  let descriptor: Uint8Array = new Uint8Array(0);
  const long = req.ten && req.llbaa;
  if (!req.dbd) {
    if (long) {
      descriptor = longBlockDescriptor.write({
        blocks: changeable ? 0 : state.blocks,
        blockLength: changeable ? 0 : state.blockSize,
      });
    } else {
      const blockLength = changeable ? 0 : state.blockSize;
      descriptor = shortBlockDescriptor.write({
        blocks: changeable ? 0 : Math.min(state.blocks, 0xffffffff),
        blockLengthHigh: (blockLength >>> 16) & 0xff,
        blockLengthLow: blockLength & 0xffff,
      });
    }
  }
  const dsp = changeable ? 0 : (state.readOnly ? MODE_DSP_WP : 0) | MODE_DSP_DPOFUA;
  const headerSize = req.ten ? modeHeader10.size : modeHeader6.size;
  let total = headerSize + descriptor.length;
  for (const p of pages) total += p.length;
  const out = new Uint8Array(total);
  if (req.ten) {
    modeHeader10.writeInto(out, 0, {
      modeDataLength: total - 2,
      mediumType: 0,
      deviceSpecific: dsp,
      longLba: long && !req.dbd ? 1 : 0,
      blockDescriptorLength: descriptor.length,
    });
  } else {
    modeHeader6.writeInto(out, 0, {
      modeDataLength: total - 1,
      mediumType: 0,
      deviceSpecific: dsp,
      blockDescriptorLength: descriptor.length,
    });
  }
  let at = headerSize;
  out.set(descriptor, at);
  at += descriptor.length;
  for (const p of pages) {
    out.set(p, at);
    at += p.length;
  }
  return { ok: true, data: out };
}

export type ModeSelectOutcome =
  | { readonly ok: true; readonly writeCacheEnabled: boolean }
  | { readonly ok: false; readonly code: AscPair; readonly pointer?: FieldPointer };

function lengthError(): ModeSelectOutcome {
  return { ok: false, code: Asc.PARAMETER_LIST_LENGTH_ERROR };
}

function fieldError(byte: number, bit?: number): ModeSelectOutcome {
  return {
    ok: false,
    code: Asc.INVALID_FIELD_IN_PARAMETER_LIST,
    pointer: parameterField(byte, bit),
  };
}

function highestBit(x: number): number {
  return 31 - Math.clz32(x);
}

/**
 * Validates a MODE SELECT(6)/(10) parameter list (SPC-4 6.9/6.10): header,
 * at most one block descriptor (which must restate the current geometry or
 * give 0 blocks), then caching and control pages in which only changeable
 * bits may differ from the current values. A truncated header, descriptor or
 * page is a PARAMETER LIST LENGTH ERROR; a bad value is an INVALID FIELD IN
 * PARAMETER LIST pointing at the byte and bit.
 */
export function modeSelect(params: Uint8Array, ten: boolean, state: ModeState): ModeSelectOutcome {
  const header = ten ? modeHeader10 : modeHeader6;
  const parsed = header.tryRead(params);
  if (!parsed.ok) return lengthError();
  const mediumTypeAt = ten ? 2 : 1;
  if (parsed.value.mediumType !== 0) return fieldError(mediumTypeAt);
  const longLba = ten && (params[4] ?? 0) & 0x01;
  const descriptorSize = longLba ? longBlockDescriptor.size : shortBlockDescriptor.size;
  const bdl = parsed.value.blockDescriptorLength;
  const bdlAt = ten ? 6 : 3;
  if (bdl !== 0 && bdl !== descriptorSize) return fieldError(bdlAt);
  let at = header.size;
  if (params.length < at + bdl) return lengthError();
  if (bdl !== 0) {
    if (longLba) {
      const d = longBlockDescriptor.read(params, at);
      if (d.blocks !== 0n && d.blocks !== BigInt(state.blocks)) return fieldError(at);
      if (d.blockLength !== state.blockSize) return fieldError(at + 12);
    } else {
      const d = shortBlockDescriptor.read(params, at);
      if (d.blocks !== 0 && d.blocks !== Math.min(state.blocks, 0xffffffff)) return fieldError(at);
      if (((d.blockLengthHigh << 16) | d.blockLengthLow) !== state.blockSize) {
        return fieldError(at + 5);
      }
    }
    at += bdl;
  }
  let writeCacheEnabled = state.writeCacheEnabled;
  while (at < params.length) {
    if (at + 2 > params.length) return lengthError();
    const first = params[at] ?? 0;
    if (first & 0x40) return fieldError(at, 6);
    const code = first & 0x3f;
    const length = params[at + 1] ?? 0;
    if (at + 2 + length > params.length) return lengthError();
    let current: Uint8Array;
    let changeable: Uint8Array;
    if (code === ModePage.CACHING) {
      current = cachingPage(PageControl.CURRENT, state);
      changeable = cachingPage(PageControl.CHANGEABLE, state);
    } else if (code === ModePage.CONTROL) {
      current = controlPage(PageControl.CURRENT);
      changeable = controlPage(PageControl.CHANGEABLE);
    } else {
      return fieldError(at, 5);
    }
    if (length !== current.length - 2) return fieldError(at + 1);
    for (let i = 2; i < current.length; i++) {
      const diff = ((params[at + i] ?? 0) ^ (current[i] ?? 0)) & ~(changeable[i] ?? 0) & 0xff;
      if (diff !== 0) return fieldError(at + i, highestBit(diff));
    }
    if (code === ModePage.CACHING) writeCacheEnabled = ((params[at + 2] ?? 0) & WCE) !== 0;
    at += 2 + length;
  }
  return { ok: true, writeCacheEnabled };
}
