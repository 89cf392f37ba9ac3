import { defineStruct, guid, u32, u64 } from '../../../wire/index.ts';
import { ImageFormatError } from '../../block-device.ts';
import { crc32cWithZeroedField, hex32 } from './crc32c.ts';
import {
  HEADER_SECTION_SIZE,
  MAX_TABLE_ENTRIES,
  MiB,
  REGION_BAT,
  REGION_METADATA,
  REGION_TABLE_SIGNATURE,
  REGION_TABLE_SIZE,
} from './format.ts';

/** [MS-VHDX] 2.2.3: region table header; the CRC covers the whole 64 KiB table. */
export const vhdxRegionTableHeader = defineStruct('vhdx_region_table_header', {
  signature: u32,
  checksum: u32,
  entryCount: u32,
  reserved: u32,
});

/** [MS-VHDX] 2.2.3.1: one region; bit 0 of flags is Required. */
export const vhdxRegionTableEntry = defineStruct('vhdx_region_table_entry', {
  guid: guid,
  fileOffset: u64,
  length: u32,
  flags: u32,
});

export interface Region {
  readonly guid: string;
  readonly offset: number;
  readonly length: number;
  readonly required: boolean;
}

export interface RegionTable {
  readonly bat: Region;
  readonly metadata: Region;
  /** Regions this implementation does not know (all optional). */
  readonly others: readonly Region[];
}

export type RegionTableResult = { ok: true; table: RegionTable } | { ok: false; error: string };

const CHECKSUM_OFFSET = vhdxRegionTableHeader.offsetOf('checksum');

export function parseRegionTable(block: Uint8Array): RegionTableResult {
  if (block.length < REGION_TABLE_SIZE) {
    return { ok: false, error: `only ${block.length} of ${REGION_TABLE_SIZE} bytes present` };
  }
  const table = block.subarray(0, REGION_TABLE_SIZE);
  const head = vhdxRegionTableHeader.read(table);
  if (head.signature !== REGION_TABLE_SIGNATURE) {
    return { ok: false, error: `bad signature ${hex32(head.signature)} (expected "regi")` };
  }
  const computed = crc32cWithZeroedField(table, CHECKSUM_OFFSET);
  if (computed !== head.checksum) {
    return {
      ok: false,
      error: `CRC-32C mismatch (stored ${hex32(head.checksum)}, computed ${hex32(computed)})`,
    };
  }
  if (head.entryCount > MAX_TABLE_ENTRIES) {
    return { ok: false, error: `entry count ${head.entryCount} exceeds ${MAX_TABLE_ENTRIES}` };
  }
  const regions: Region[] = [];
  for (let i = 0; i < head.entryCount; i++) {
    const e = vhdxRegionTableEntry.read(
      table,
      vhdxRegionTableHeader.size + i * vhdxRegionTableEntry.size,
    );
    const where = `entry ${i} (${e.guid})`;
    if (e.fileOffset > BigInt(Number.MAX_SAFE_INTEGER)) {
      return { ok: false, error: `${where}: file offset ${e.fileOffset} is out of range` };
    }
    const offset = Number(e.fileOffset);
    if (offset % MiB !== 0 || offset < HEADER_SECTION_SIZE) {
      return {
        ok: false,
        error: `${where}: file offset ${offset} is not a multiple of 1 MiB past the header section`,
      };
    }
    if (e.length === 0 || e.length % MiB !== 0) {
      return {
        ok: false,
        error: `${where}: length ${e.length} is not a positive multiple of 1 MiB`,
      };
    }
    for (const r of regions) {
      if (r.guid === e.guid) return { ok: false, error: `${where}: region listed twice` };
      if (offset < r.offset + r.length && r.offset < offset + e.length) {
        return { ok: false, error: `${where}: overlaps region ${r.guid}` };
      }
    }
    regions.push({ guid: e.guid, offset, length: e.length, required: (e.flags & 1) === 1 });
  }
  const bat = regions.find((r) => r.guid === REGION_BAT);
  const metadata = regions.find((r) => r.guid === REGION_METADATA);
  if (!bat) return { ok: false, error: 'no BAT region' };
  if (!metadata) return { ok: false, error: 'no metadata region' };
  const others = regions.filter((r) => r !== bat && r !== metadata);
  const unknownRequired = others.find((r) => r.required);
  if (unknownRequired) {
    return {
      ok: false,
      error: `required region ${unknownRequired.guid} is not supported by this implementation`,
    };
  }
  return { ok: true, table: { bat, metadata, others } };
}

/** Uses region table 1, or table 2 when table 1 is invalid; neither valid is an error. */
export function selectRegionTable(
  first: RegionTableResult,
  second: RegionTableResult,
): { table: RegionTable; slot: 0 | 1 } {
  if (first.ok) return { table: first.table, slot: 0 };
  if (second.ok) return { table: second.table, slot: 1 };
  throw new ImageFormatError(
    'VHDX region tables',
    `no valid region table: table 1: ${first.error}; table 2: ${second.error}`,
  );
}

/** Encodes a region table (BAT and metadata, both required) into its 64 KiB block. */
export function encodeRegionTable(bat: Region, metadata: Region): Uint8Array {
  const out = new Uint8Array(REGION_TABLE_SIZE);
  let at = vhdxRegionTableHeader.writeInto(out, 0, {
    signature: REGION_TABLE_SIGNATURE,
    checksum: 0,
    entryCount: 2,
    reserved: 0,
  });
  for (const r of [bat, metadata]) {
    at = vhdxRegionTableEntry.writeInto(out, at, {
      guid: r.guid,
      fileOffset: BigInt(r.offset),
      length: r.length,
      flags: r.required ? 1 : 0,
    });
  }
  const crc = crc32cWithZeroedField(out, CHECKSUM_OFFSET);
  new DataView(out.buffer).setUint32(CHECKSUM_OFFSET, crc, true);
  return out;
}
