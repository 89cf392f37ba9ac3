import { bytes, defineStruct, guid, u32, u64 } from '../../../wire/index.ts';
import { ImageFormatError } from '../../block-device.ts';
import type { ReadOverlay } from '../image-file.ts';
import { crc32cWithZeroedField } from './crc32c.ts';
import {
  DATA_DESCRIPTOR_SIGNATURE,
  DATA_SECTOR_SIGNATURE,
  HEADER_SECTION_SIZE,
  LOG_ENTRY_SIGNATURE,
  LOG_SECTOR_SIZE,
  ZERO_DESCRIPTOR_SIGNATURE,
} from './format.ts';

/**
 * The VHDX metadata log ([MS-VHDX] 2.3): a circular buffer of 4 KiB
 * sectors holding entries. An entry is a header and its descriptors (in as
 * many 4 KiB sectors as they need) followed by one data sector per data
 * descriptor; the CRC-32C covers the whole entry. A zero descriptor zeroes
 * a range; a data descriptor writes one 4 KiB sector whose first 8 and last
 * 4 bytes live in the descriptor (the data sector's own first and last
 * bytes carry its signature and the sequence number).
 */

export const vhdxLogEntryHeader = defineStruct('vhdx_log_entry_header', {
  signature: u32,
  checksum: u32,
  entryLength: u32,
  tail: u32,
  sequenceNumber: u64,
  descriptorCount: u32,
  reserved: u32,
  logGuid: guid,
  flushedFileOffset: u64,
  lastFileOffset: u64,
});

export const vhdxLogZeroDescriptor = defineStruct('vhdx_log_zero_descriptor', {
  signature: u32,
  reserved: u32,
  zeroLength: u64,
  fileOffset: u64,
  sequenceNumber: u64,
});

export const vhdxLogDataDescriptor = defineStruct('vhdx_log_data_descriptor', {
  signature: u32,
  trailingBytes: bytes(4),
  leadingBytes: bytes(8),
  fileOffset: u64,
  sequenceNumber: u64,
});

export const vhdxLogDataSector = defineStruct('vhdx_log_data_sector', {
  signature: u32,
  sequenceHigh: u32,
  data: bytes(4084),
  sequenceLow: u32,
});

const DESCRIPTOR_SIZE = 32;
const CHECKSUM_OFFSET = vhdxLogEntryHeader.offsetOf('checksum');

/** One change an entry makes to the file: a 4 KiB sector of data, or a zeroed range. */
export type LogWrite =
  | { readonly fileOffset: number; readonly data: Uint8Array }
  | { readonly fileOffset: number; readonly zeroLength: number };

export interface LogEntry {
  /** Offset of the entry within the log. */
  readonly position: number;
  readonly length: number;
  readonly tail: number;
  readonly sequenceNumber: bigint;
  readonly flushedFileOffset: number;
  readonly lastFileOffset: number;
  readonly writes: readonly LogWrite[];
}

/** Sectors that the header and `count` descriptors occupy. */
export function descriptorSectors(count: number): number {
  return Math.ceil((vhdxLogEntryHeader.size + count * DESCRIPTOR_SIZE) / LOG_SECTOR_SIZE);
}

function safe(value: bigint): number | null {
  return value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : null;
}

/** The bytes of `length` log bytes starting at `position`, wrapping at the end of the log. */
function logBytes(log: Uint8Array, position: number, length: number): Uint8Array {
  if (position + length <= log.length) return log.subarray(position, position + length);
  const out = new Uint8Array(length);
  const first = log.length - position;
  out.set(log.subarray(position));
  out.set(log.subarray(0, length - first), first);
  return out;
}

/**
 * Parses and fully validates the entry at `position` (a multiple of 4 KiB)
 * of the log; returns null when it is not a valid entry of this log GUID.
 */
export function parseLogEntryAt(
  log: Uint8Array,
  position: number,
  logGuid: string,
): LogEntry | null {
  if (position % LOG_SECTOR_SIZE !== 0 || position + LOG_SECTOR_SIZE > log.length) return null;
  const head = vhdxLogEntryHeader.read(log, position);
  if (head.signature !== LOG_ENTRY_SIGNATURE) return null;
  const { entryLength, descriptorCount } = head;
  if (entryLength === 0 || entryLength % LOG_SECTOR_SIZE !== 0 || entryLength > log.length) {
    return null;
  }
  if (head.sequenceNumber === 0n || head.logGuid !== logGuid) return null;
  if (head.tail % LOG_SECTOR_SIZE !== 0 || head.tail >= log.length) return null;
  const descSectors = descriptorSectors(descriptorCount);
  const sectors = entryLength / LOG_SECTOR_SIZE;
  if (descSectors > sectors) return null;
  const flushedFileOffset = safe(head.flushedFileOffset);
  const lastFileOffset = safe(head.lastFileOffset);
  if (flushedFileOffset === null || lastFileOffset === null) return null;

  const entry = logBytes(log, position, entryLength);
  if (crc32cWithZeroedField(entry, CHECKSUM_OFFSET) !== head.checksum) return null;

  const writes: LogWrite[] = [];
  let dataSector = descSectors;
  for (let i = 0; i < descriptorCount; i++) {
    const at = vhdxLogEntryHeader.size + i * DESCRIPTOR_SIZE;
    const signature = new DataView(entry.buffer, entry.byteOffset).getUint32(at, true);
    if (signature === ZERO_DESCRIPTOR_SIGNATURE) {
      const d = vhdxLogZeroDescriptor.read(entry, at);
      const fileOffset = safe(d.fileOffset);
      const zeroLength = safe(d.zeroLength);
      if (d.sequenceNumber !== head.sequenceNumber || fileOffset === null || zeroLength === null) {
        return null;
      }
      if (fileOffset % LOG_SECTOR_SIZE !== 0 || zeroLength % LOG_SECTOR_SIZE !== 0) return null;
      writes.push({ fileOffset, zeroLength });
    } else if (signature === DATA_DESCRIPTOR_SIGNATURE) {
      const d = vhdxLogDataDescriptor.read(entry, at);
      const fileOffset = safe(d.fileOffset);
      if (d.sequenceNumber !== head.sequenceNumber || fileOffset === null) return null;
      if (fileOffset % LOG_SECTOR_SIZE !== 0 || dataSector >= sectors) return null;
      const sector = vhdxLogDataSector.read(entry, dataSector * LOG_SECTOR_SIZE);
      dataSector++;
      const sequence = (BigInt(sector.sequenceHigh) << 32n) | BigInt(sector.sequenceLow);
      if (sector.signature !== DATA_SECTOR_SIGNATURE || sequence !== head.sequenceNumber) {
        return null;
      }
      const data = new Uint8Array(LOG_SECTOR_SIZE);
      data.set(d.leadingBytes, 0);
      data.set(sector.data, 8);
      data.set(d.trailingBytes, LOG_SECTOR_SIZE - 4);
      writes.push({ fileOffset, data });
    } else {
      return null;
    }
  }
  return {
    position,
    length: entryLength,
    tail: head.tail,
    sequenceNumber: head.sequenceNumber,
    flushedFileOffset,
    lastFileOffset,
    writes,
  };
}

/**
 * Finds the active sequence (2.3.3): the valid entry with the highest
 * sequence number, preceded by the contiguous entries with consecutive
 * sequence numbers back to the one its Tail names. When that chain is
 * broken the sequence is taken from where it still holds (writers that
 * apply every entry before writing the next leave nothing older to redo).
 * Returns [] when the log holds no valid entry for this GUID.
 */
export function findActiveSequence(log: Uint8Array, logGuid: string): LogEntry[] {
  const entries: LogEntry[] = [];
  for (let p = 0; p + LOG_SECTOR_SIZE <= log.length; p += LOG_SECTOR_SIZE) {
    const e = parseLogEntryAt(log, p, logGuid);
    if (e) entries.push(e);
  }
  if (entries.length === 0) return [];
  let last = entries[0]!;
  for (const e of entries) if (e.sequenceNumber > last.sequenceNumber) last = e;
  const sequence = [last];
  let current = last;
  while (current.position !== last.tail && sequence.length < entries.length) {
    const previous = entries.find(
      (e) =>
        (e.position + e.length) % log.length === current.position &&
        e.sequenceNumber === current.sequenceNumber - 1n,
    );
    if (!previous) break;
    sequence.unshift(previous);
    current = previous;
  }
  return sequence;
}

export interface ReplayPlan {
  readonly entries: readonly LogEntry[];
  readonly writes: readonly LogWrite[];
  /** The file must be at least this long afterwards. */
  readonly lastFileOffset: number;
}

/**
 * Checks a sequence against the file before anything is applied: every
 * FlushedFileOffset must be within the file (else it was truncated), and
 * every change must fall after the header section, outside the log and
 * below LastFileOffset.
 */
export function planReplay(
  entries: readonly LogEntry[],
  fileSize: number,
  logOffset: number,
  logLength: number,
): ReplayPlan {
  const S = 'VHDX log';
  let lastFileOffset = 0;
  const writes: LogWrite[] = [];
  for (const e of entries) {
    const name = `entry ${e.sequenceNumber} at log offset ${e.position}`;
    if (e.flushedFileOffset > fileSize) {
      throw new ImageFormatError(
        S,
        `${name} records a flushed file size of ${e.flushedFileOffset} bytes but the file has ${fileSize} (truncated)`,
      );
    }
    if (e.lastFileOffset < e.flushedFileOffset) {
      throw new ImageFormatError(
        S,
        `${name}: last file offset ${e.lastFileOffset} is below flushed file offset ${e.flushedFileOffset}`,
      );
    }
    const limit = Math.max(e.lastFileOffset, fileSize);
    for (const w of e.writes) {
      const length = 'data' in w ? w.data.length : w.zeroLength;
      const end = w.fileOffset + length;
      if (w.fileOffset < HEADER_SECTION_SIZE || end > limit) {
        throw new ImageFormatError(
          S,
          `${name} changes file range ${w.fileOffset}+${length}, outside ${HEADER_SECTION_SIZE}..${limit}`,
        );
      }
      if (w.fileOffset < logOffset + logLength && logOffset < end) {
        throw new ImageFormatError(S, `${name} changes the log itself at ${w.fileOffset}`);
      }
      writes.push(w);
    }
    lastFileOffset = Math.max(lastFileOffset, e.lastFileOffset);
  }
  return { entries, writes, lastFileOffset };
}

/** A replay kept in memory: reads see the log's changes, the file is untouched. */
export class LogOverlay implements ReadOverlay {
  constructor(private readonly plan: ReplayPlan) {}

  get minimumFileSize(): number {
    return this.plan.lastFileOffset;
  }

  apply(position: number, target: Uint8Array): void {
    const end = position + target.length;
    for (const w of this.plan.writes) {
      const length = 'data' in w ? w.data.length : w.zeroLength;
      const from = Math.max(position, w.fileOffset);
      const to = Math.min(end, w.fileOffset + length);
      if (from >= to) continue;
      if ('data' in w) {
        target.set(w.data.subarray(from - w.fileOffset, to - w.fileOffset), from - position);
      } else {
        target.fill(0, from - position, to - position);
      }
    }
  }
}

export interface NewLogEntry {
  readonly sequenceNumber: bigint;
  readonly logGuid: string;
  readonly tail: number;
  readonly flushedFileOffset: number;
  readonly lastFileOffset: number;
  /** Whole 4 KiB sectors to write, each at a 4 KiB-aligned file offset. */
  readonly sectors: readonly { readonly fileOffset: number; readonly data: Uint8Array }[];
}

/** Encodes one log entry of data descriptors, checksum included. */
export function encodeLogEntry(e: NewLogEntry): Uint8Array {
  const count = e.sectors.length;
  const descSectors = descriptorSectors(count);
  const out = new Uint8Array((descSectors + count) * LOG_SECTOR_SIZE);
  vhdxLogEntryHeader.writeInto(out, 0, {
    signature: LOG_ENTRY_SIGNATURE,
    checksum: 0,
    entryLength: out.length,
    tail: e.tail,
    sequenceNumber: e.sequenceNumber,
    descriptorCount: count,
    reserved: 0,
    logGuid: e.logGuid,
    flushedFileOffset: BigInt(e.flushedFileOffset),
    lastFileOffset: BigInt(e.lastFileOffset),
  });
  e.sectors.forEach((s, i) => {
    if (s.data.length !== LOG_SECTOR_SIZE || s.fileOffset % LOG_SECTOR_SIZE !== 0) {
      throw new ImageFormatError(
        'VHDX log',
        `sector ${i} to log is not a whole aligned 4 KiB sector`,
      );
    }
    vhdxLogDataDescriptor.writeInto(out, vhdxLogEntryHeader.size + i * DESCRIPTOR_SIZE, {
      signature: DATA_DESCRIPTOR_SIGNATURE,
      trailingBytes: s.data.subarray(LOG_SECTOR_SIZE - 4),
      leadingBytes: s.data.subarray(0, 8),
      fileOffset: BigInt(s.fileOffset),
      sequenceNumber: e.sequenceNumber,
    });
    vhdxLogDataSector.writeInto(out, (descSectors + i) * LOG_SECTOR_SIZE, {
      signature: DATA_SECTOR_SIGNATURE,
      sequenceHigh: Number(e.sequenceNumber >> 32n),
      data: s.data.subarray(8, LOG_SECTOR_SIZE - 4),
      sequenceLow: Number(e.sequenceNumber & 0xffffffffn),
    });
  });
  const crc = crc32cWithZeroedField(out, CHECKSUM_OFFSET);
  new DataView(out.buffer).setUint32(CHECKSUM_OFFSET, crc, true);
  return out;
}
