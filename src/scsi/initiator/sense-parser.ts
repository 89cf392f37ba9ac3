import type { ReadResult } from '../../wire/index.ts';
import { SenseKey } from '../codes.ts';
import type { FieldPointer } from '../sense.ts';

/**
 * Parses sense data from the other side (SPC-4 4.5): fixed format (response
 * codes 0x70 current, 0x71 deferred) and descriptor format (0x72, 0x73).
 * Accepts arbitrary bytes: every read is bounds-checked against both the
 * bytes received and the ADDITIONAL SENSE LENGTH, and the result is a value
 * or an error message, never an exception.
 */

export interface SenseDescriptor {
  readonly type: number;
  /** The whole descriptor, header included (a copy). */
  readonly bytes: Uint8Array;
}

export interface ParsedSense {
  readonly format: 'fixed' | 'descriptor';
  readonly deferred: boolean;
  readonly key: number;
  readonly asc: number;
  readonly ascq: number;
  /** The INFORMATION field, present only when marked VALID. */
  readonly information?: bigint;
  readonly commandSpecific?: bigint;
  /** The 3 sense-key-specific bytes, present only when SKSV is set. */
  readonly senseKeySpecific?: Uint8Array;
  /** Decoded from the sense-key-specific bytes for ILLEGAL REQUEST. */
  readonly fieldPointer?: FieldPointer;
  /** Descriptor format: every descriptor, in order. */
  readonly descriptors: readonly SenseDescriptor[];
  /** The data stopped before its ADDITIONAL SENSE LENGTH said it would (allocation length). */
  readonly truncated: boolean;
}

function fail(error: string): ReadResult<ParsedSense> {
  return { ok: false, error };
}

function be32(b: Uint8Array, at: number): number {
  return (
    (((b[at] ?? 0) << 24) |
      ((b[at + 1] ?? 0) << 16) |
      ((b[at + 2] ?? 0) << 8) |
      (b[at + 3] ?? 0)) >>>
    0
  );
}

function be64(b: Uint8Array, at: number): bigint {
  return (BigInt(be32(b, at)) << 32n) | BigInt(be32(b, at + 4));
}

/** Decodes sense-key-specific bytes as a field pointer (SPC-4 4.5.2.4.2). */
export function decodeFieldPointer(sks: Uint8Array): FieldPointer | undefined {
  const first = sks[0] ?? 0;
  if (sks.length < 3 || !(first & 0x80)) return undefined;
  const byte = ((sks[1] ?? 0) << 8) | (sks[2] ?? 0);
  const inCdb = (first & 0x40) !== 0;
  return first & 0x08 ? { inCdb, byte, bit: first & 0x07 } : { inCdb, byte };
}

function withSks(key: number, sks: Uint8Array | undefined) {
  if (!sks) return {};
  const pointer = key === SenseKey.ILLEGAL_REQUEST ? decodeFieldPointer(sks) : undefined;
  return pointer ? { senseKeySpecific: sks, fieldPointer: pointer } : { senseKeySpecific: sks };
}

function parseFixed(bytes: Uint8Array, deferred: boolean): ReadResult<ParsedSense> {
  if (bytes.length < 8) return fail(`fixed sense data: need 8 header bytes, have ${bytes.length}`);
  const additional = bytes[7] ?? 0;
  const declaredEnd = 8 + additional;
  const end = Math.min(bytes.length, declaredEnd);
  if (end < 14) {
    return fail(
      `fixed sense data: ASC/ASCQ are bytes 12-13, but only ${end} bytes are present (${bytes.length} received, additional sense length ${additional})`,
    );
  }
  const first = bytes[0] ?? 0;
  const key = (bytes[2] ?? 0) & 0x0f;
  const sks = end >= 18 && (bytes[15] ?? 0) & 0x80 ? bytes.slice(15, 18) : undefined;
  return {
    ok: true,
    value: {
      format: 'fixed',
      deferred,
      key,
      asc: bytes[12] ?? 0,
      ascq: bytes[13] ?? 0,
      ...(first & 0x80 ? { information: BigInt(be32(bytes, 3)) } : {}),
      commandSpecific: BigInt(be32(bytes, 8)),
      ...withSks(key, sks),
      descriptors: [],
      truncated: bytes.length < declaredEnd,
    },
  };
}

function parseDescriptor(bytes: Uint8Array, deferred: boolean): ReadResult<ParsedSense> {
  if (bytes.length < 8)
    return fail(`descriptor sense data: need 8 header bytes, have ${bytes.length}`);
  const key = (bytes[1] ?? 0) & 0x0f;
  const additional = bytes[7] ?? 0;
  const declaredEnd = 8 + additional;
  const end = Math.min(bytes.length, declaredEnd);
  const descriptors: SenseDescriptor[] = [];
  let information: bigint | undefined;
  let commandSpecific: bigint | undefined;
  let sks: Uint8Array | undefined;
  let truncated = bytes.length < declaredEnd;
  let at = 8;
  while (at < end) {
    if (at + 2 > end) {
      if (end === declaredEnd) return fail(`descriptor sense data: stray byte at offset ${at}`);
      truncated = true;
      break;
    }
    const type = bytes[at] ?? 0;
    const length = bytes[at + 1] ?? 0;
    const next = at + 2 + length;
    if (next > declaredEnd) {
      return fail(
        `descriptor sense data: descriptor type 0x${type.toString(16)} at offset ${at} has ${length} bytes, past the additional sense length ${additional}`,
      );
    }
    if (next > end) {
      truncated = true;
      break;
    }
    if (type === 0x00 || type === 0x01) {
      if (length !== 0x0a) {
        return fail(
          `descriptor sense data: ${type === 0 ? 'information' : 'command-specific'} descriptor at offset ${at} has length ${length}, expected 10`,
        );
      }
      const value = be64(bytes, at + 4);
      if (type === 0x00) {
        if ((bytes[at + 2] ?? 0) & 0x80) information = value;
      } else {
        commandSpecific = value;
      }
    } else if (type === 0x02) {
      if (length !== 0x06) {
        return fail(
          `descriptor sense data: sense key specific descriptor at offset ${at} has length ${length}, expected 6`,
        );
      }
      if ((bytes[at + 4] ?? 0) & 0x80) sks = bytes.slice(at + 4, at + 7);
    }
    descriptors.push({ type, bytes: bytes.slice(at, next) });
    at = next;
  }
  return {
    ok: true,
    value: {
      format: 'descriptor',
      deferred,
      key,
      asc: bytes[2] ?? 0,
      ascq: bytes[3] ?? 0,
      ...(information !== undefined ? { information } : {}),
      ...(commandSpecific !== undefined ? { commandSpecific } : {}),
      ...withSks(key, sks),
      descriptors,
      truncated,
    },
  };
}

export function parseSense(bytes: Uint8Array): ReadResult<ParsedSense> {
  if (bytes.length === 0) return fail('sense data: empty');
  const code = (bytes[0] ?? 0) & 0x7f;
  switch (code) {
    case 0x70:
    case 0x71:
      return parseFixed(bytes, code === 0x71);
    case 0x72:
    case 0x73:
      return parseDescriptor(bytes, code === 0x73);
    default:
      return fail(
        `sense data: response code 0x${code.toString(16)} is neither fixed (0x70/0x71) nor descriptor (0x72/0x73) format`,
      );
  }
}
