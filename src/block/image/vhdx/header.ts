import { bytes, defineStruct, guid, reserved, u16, u32, u64 } from '../../../wire/index.ts';
import { ImageFormatError } from '../../block-device.ts';
import { crc32cWithZeroedField, hex32 } from './crc32c.ts';
import {
  FILE_SIGNATURE,
  HEADER_SECTION_SIZE,
  HEADER_SIGNATURE,
  HEADER_SIZE,
  MiB,
} from './format.ts';

/** [MS-VHDX] 2.2.1: the first 64 KiB of the file begins with this. */
export const vhdxFileIdentifier = defineStruct('vhdx_file_identifier', {
  signature: bytes(8),
  /** UTF-16LE name of the creating software, diagnostic only. */
  creator: bytes(512),
});

/** [MS-VHDX] 2.2.2: one of the two headers, at 64 KiB and 128 KiB; the CRC covers all 4 KiB. */
export const vhdxHeader = defineStruct('vhdx_header', {
  signature: u32,
  checksum: u32,
  sequenceNumber: u64,
  fileWriteGuid: guid,
  dataWriteGuid: guid,
  logGuid: guid,
  logVersion: u16,
  version: u16,
  logLength: u32,
  logOffset: u64,
  reserved: reserved(4016),
});

export interface VhdxHeader {
  readonly sequenceNumber: bigint;
  readonly fileWriteGuid: string;
  readonly dataWriteGuid: string;
  readonly logGuid: string;
  readonly logVersion: number;
  readonly version: number;
  readonly logLength: number;
  readonly logOffset: number;
}

export type HeaderResult = { ok: true; header: VhdxHeader } | { ok: false; error: string };

const CHECKSUM_OFFSET = vhdxHeader.offsetOf('checksum');

/** Validates one 4 KiB header block. */
export function parseHeader(block: Uint8Array): HeaderResult {
  if (block.length < HEADER_SIZE) {
    return { ok: false, error: `only ${block.length} of ${HEADER_SIZE} bytes present` };
  }
  const bytes4k = block.subarray(0, HEADER_SIZE);
  const raw = vhdxHeader.read(bytes4k);
  if (raw.signature !== HEADER_SIGNATURE) {
    return { ok: false, error: `bad signature ${hex32(raw.signature)} (expected "head")` };
  }
  const computed = crc32cWithZeroedField(bytes4k, CHECKSUM_OFFSET);
  if (computed !== raw.checksum) {
    return {
      ok: false,
      error: `CRC-32C mismatch (stored ${hex32(raw.checksum)}, computed ${hex32(computed)})`,
    };
  }
  if (raw.version !== 1) return { ok: false, error: `version ${raw.version} is not 1` };
  if (raw.logVersion !== 0) return { ok: false, error: `log version ${raw.logVersion} is not 0` };
  if (raw.logLength % MiB !== 0) {
    return { ok: false, error: `log length ${raw.logLength} is not a multiple of 1 MiB` };
  }
  if (raw.logOffset > BigInt(Number.MAX_SAFE_INTEGER)) {
    return { ok: false, error: `log offset ${raw.logOffset} is out of range` };
  }
  const logOffset = Number(raw.logOffset);
  if (logOffset % MiB !== 0 || logOffset < HEADER_SECTION_SIZE) {
    return {
      ok: false,
      error: `log offset ${logOffset} is not a multiple of 1 MiB past the header section`,
    };
  }
  return {
    ok: true,
    header: {
      sequenceNumber: raw.sequenceNumber,
      fileWriteGuid: raw.fileWriteGuid,
      dataWriteGuid: raw.dataWriteGuid,
      logGuid: raw.logGuid,
      logVersion: raw.logVersion,
      version: raw.version,
      logLength: raw.logLength,
      logOffset,
    },
  };
}

export interface CurrentHeader {
  readonly header: VhdxHeader;
  /** 0 for header 1 (at 64 KiB), 1 for header 2 (at 128 KiB). */
  readonly slot: 0 | 1;
  /** Why the other header was not used, when it was not valid. */
  readonly otherError?: string;
}

function sameHeader(a: VhdxHeader, b: VhdxHeader): boolean {
  return (
    a.fileWriteGuid === b.fileWriteGuid &&
    a.dataWriteGuid === b.dataWriteGuid &&
    a.logGuid === b.logGuid &&
    a.logLength === b.logLength &&
    a.logOffset === b.logOffset
  );
}

/**
 * Picks the current header (2.2.2.1): the valid one with the higher sequence
 * number. Two valid headers with equal sequence numbers are accepted only
 * when identical (some tools write them so); no valid header is an error
 * giving both reasons.
 */
export function selectHeader(first: HeaderResult, second: HeaderResult): CurrentHeader {
  if (first.ok && second.ok) {
    const a = first.header;
    const b = second.header;
    if (a.sequenceNumber === b.sequenceNumber && !sameHeader(a, b)) {
      throw new ImageFormatError(
        'VHDX headers',
        `both headers are valid with sequence number ${a.sequenceNumber} but differ`,
      );
    }
    return b.sequenceNumber > a.sequenceNumber ? { header: b, slot: 1 } : { header: a, slot: 0 };
  }
  if (first.ok)
    return { header: first.header, slot: 0, otherError: (second as { error: string }).error };
  if (second.ok)
    return { header: second.header, slot: 1, otherError: (first as { error: string }).error };
  throw new ImageFormatError(
    'VHDX headers',
    `no valid header: header 1: ${first.error}; header 2: ${second.error}`,
  );
}

/** Encodes a header into its 4 KiB block with the checksum filled in. */
export function encodeHeader(header: VhdxHeader): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE);
  vhdxHeader.writeInto(out, 0, {
    signature: HEADER_SIGNATURE,
    checksum: 0,
    sequenceNumber: header.sequenceNumber,
    fileWriteGuid: header.fileWriteGuid,
    dataWriteGuid: header.dataWriteGuid,
    logGuid: header.logGuid,
    logVersion: header.logVersion,
    version: header.version,
    logLength: header.logLength,
    logOffset: BigInt(header.logOffset),
  });
  const crc = crc32cWithZeroedField(out, CHECKSUM_OFFSET);
  new DataView(out.buffer).setUint32(CHECKSUM_OFFSET, crc, true);
  return out;
}

/** Checks the file identifier's signature; returns the creator string. */
export function parseFileIdentifier(block: Uint8Array): string {
  const id = vhdxFileIdentifier.read(block);
  const signature = String.fromCharCode(...id.signature);
  if (signature !== FILE_SIGNATURE) {
    throw new ImageFormatError(
      'VHDX file identifier',
      `signature ${JSON.stringify(signature)} is not "vhdxfile"`,
    );
  }
  const creator = new TextDecoder('utf-16le').decode(id.creator);
  const nul = creator.indexOf('\0');
  return nul >= 0 ? creator.slice(0, nul) : creator;
}

export function encodeFileIdentifier(creator: string): Uint8Array {
  const name = new Uint8Array(512);
  const units = Math.min(creator.length, 255);
  const view = new DataView(name.buffer);
  for (let i = 0; i < units; i++) view.setUint16(2 * i, creator.charCodeAt(i), true);
  return vhdxFileIdentifier.write({
    signature: new TextEncoder().encode(FILE_SIGNATURE),
    creator: name,
  });
}
