import { NULL_GUID } from '../../../wire/index.ts';
import { ImageFormatError } from '../../block-device.ts';
import { checkNoOverlap, type Extent } from '../../extents.ts';
import type { ImageFile } from '../image-file.ts';
import {
  Bat,
  type BatGeometry,
  batGeometry,
  bitmapEntryIndex,
  hasPayload,
  isValidPayloadState,
  payloadEntryIndex,
} from './bat.ts';
import {
  HEADER_OFFSETS,
  HEADER_SECTION_SIZE,
  HEADER_SIZE,
  LOG_SECTOR_SIZE,
  MiB,
  PAYLOAD_BLOCK_PARTIALLY_PRESENT,
  REGION_TABLE_OFFSETS,
  REGION_TABLE_SIZE,
  SB_BLOCK_NOT_PRESENT,
  SB_BLOCK_PRESENT,
  SECTOR_BITMAP_BLOCK_SIZE,
} from './format.ts';
import {
  type CurrentHeader,
  type HeaderResult,
  parseFileIdentifier,
  parseHeader,
  selectHeader,
} from './header.ts';
import { HeaderWriter } from './header-writer.ts';
import { findActiveSequence, LogOverlay, planReplay, type ReplayPlan } from './log.ts';
import { readMetadata, type VhdxMetadata } from './metadata.ts';
import {
  parseRegionTable,
  type RegionTable,
  type RegionTableResult,
  selectRegionTable,
} from './region-table.ts';

/** What to do with a pending log: replay it into the file, replay it in memory, or refuse. */
export type LogReplayMode = 'apply' | 'memory' | 'refuse';

/** The largest log this implementation loads to replay (Hyper-V and qemu use 1 MiB). */
const MAX_LOG_LENGTH = 256 * MiB;

export interface VhdxLayout {
  readonly fileSize: number;
  readonly creator: string;
  readonly headerResults: readonly [HeaderResult, HeaderResult];
  readonly current: CurrentHeader;
  readonly regionTableResults: readonly [RegionTableResult, RegionTableResult];
  readonly regions: RegionTable;
  readonly metadata: VhdxMetadata;
  readonly geometry: BatGeometry;
  readonly bat: Bat;
  /** Every structure in the file, for allocation and overlap checks. */
  readonly extents: readonly Extent[];
  /** Set when a pending log was found and replayed (in the file or in memory). */
  readonly replayed: { readonly entries: number; readonly inMemory: boolean } | null;
}

/**
 * Reads and validates a VHDX file in the order [MS-VHDX] 3.1 gives: file
 * identifier, headers, log (a pending log is replayed before anything it
 * may change is read), region tables, metadata, BAT. Every structure is
 * checked against the file; the first problem is an ImageFormatError
 * naming the structure.
 */
export async function readVhdxLayout(file: ImageFile, replay: LogReplayMode): Promise<VhdxLayout> {
  let fileSize = await file.size();
  if (fileSize < HEADER_SECTION_SIZE) {
    throw new ImageFormatError(
      'VHDX header section',
      `the file is ${fileSize} bytes, smaller than the 1 MiB header section (truncated?)`,
    );
  }
  const creator = parseFileIdentifier(await file.readStructure(0, 520, 'VHDX file identifier'));
  const headerResults = [
    parseHeader(await file.readStructure(HEADER_OFFSETS[0], HEADER_SIZE, 'VHDX header 1')),
    parseHeader(await file.readStructure(HEADER_OFFSETS[1], HEADER_SIZE, 'VHDX header 2')),
  ] as const;
  let current = selectHeader(headerResults[0], headerResults[1]);

  let replayed: VhdxLayout['replayed'] = null;
  const plan = await pendingLog(file, current, fileSize);
  if (plan) {
    if (replay === 'refuse') {
      throw new ImageFormatError(
        'VHDX log',
        `the image has a pending log (${plan.entries.length} entries) that must be replayed; open it writable or run "hvkit disk check --repair"`,
      );
    }
    if (replay === 'memory') {
      file.setReadOverlay(new LogOverlay(plan));
      replayed = { entries: plan.entries.length, inMemory: true };
    } else {
      current = await applyLog(file, current, plan);
      replayed = { entries: plan.entries.length, inMemory: false };
    }
    fileSize = await file.size();
  }

  const regionTableResults = [
    parseRegionTable(
      await file.readStructure(REGION_TABLE_OFFSETS[0], REGION_TABLE_SIZE, 'VHDX region table 1'),
    ),
    parseRegionTable(
      await file.readStructure(REGION_TABLE_OFFSETS[1], REGION_TABLE_SIZE, 'VHDX region table 2'),
    ),
  ] as const;
  const { table: regions } = selectRegionTable(regionTableResults[0], regionTableResults[1]);
  const metadata = await readMetadata(file, regions.metadata);
  const geometry = batGeometry(
    metadata.virtualDiskSize,
    metadata.blockSize,
    metadata.logicalSectorSize,
    metadata.hasParent,
  );
  const batBytes = geometry.entryCount * 8;
  if (batBytes > regions.bat.length) {
    throw new ImageFormatError(
      'VHDX BAT',
      `${geometry.entryCount} entries need ${batBytes} bytes but the BAT region has ${regions.bat.length}`,
    );
  }
  if (regions.bat.offset + batBytes > fileSize) {
    throw new ImageFormatError(
      'VHDX BAT',
      `the BAT at file offset ${regions.bat.offset} needs ${batBytes} bytes but the file is ${fileSize} bytes (truncated?)`,
    );
  }
  const loaded = new Uint8Array(Math.ceil(batBytes / LOG_SECTOR_SIZE) * LOG_SECTOR_SIZE);
  await file.read(regions.bat.offset, loaded);
  const bat = new Bat(geometry, loaded, regions.bat.offset);

  const h = current.header;
  const extents: Extent[] = [
    { start: 0, length: HEADER_SECTION_SIZE, what: 'header section' },
    { start: h.logOffset, length: h.logLength, what: 'log' },
    { start: regions.bat.offset, length: regions.bat.length, what: 'BAT region' },
    { start: regions.metadata.offset, length: regions.metadata.length, what: 'metadata region' },
    ...regions.others.map((r) => ({ start: r.offset, length: r.length, what: `region ${r.guid}` })),
  ];
  validateBat(bat, fileSize, extents);
  checkNoOverlap(extents, 'VHDX file layout');

  return {
    fileSize,
    creator,
    headerResults,
    current,
    regionTableResults,
    regions,
    metadata,
    geometry,
    bat,
    extents,
    replayed,
  };
}

async function pendingLog(
  file: ImageFile,
  current: CurrentHeader,
  fileSize: number,
): Promise<ReplayPlan | null> {
  const h = current.header;
  if (h.logGuid === NULL_GUID || h.logLength === 0) return null;
  if (h.logLength > MAX_LOG_LENGTH) {
    throw new ImageFormatError(
      'VHDX log',
      `log length ${h.logLength} exceeds the supported ${MAX_LOG_LENGTH}`,
    );
  }
  const log = await file.readStructure(h.logOffset, h.logLength, 'VHDX log');
  const entries = findActiveSequence(log, h.logGuid);
  if (entries.length === 0) return null;
  return planReplay(entries, fileSize, h.logOffset, h.logLength);
}

/** Replays a log into the file, then records an empty log in the headers. */
async function applyLog(
  file: ImageFile,
  current: CurrentHeader,
  plan: ReplayPlan,
): Promise<CurrentHeader> {
  for (const w of plan.writes) {
    if ('data' in w) await file.write(w.fileOffset, w.data);
    else await file.zeroFill(w.fileOffset, w.zeroLength, false);
  }
  const size = await file.size();
  if (size < plan.lastFileOffset) await file.truncate(Math.ceil(plan.lastFileOffset / MiB) * MiB);
  await file.sync();
  const headers = new HeaderWriter(file, current);
  await headers.update({ fileWriteGuid: crypto.randomUUID(), logGuid: NULL_GUID });
  return { header: headers.header, slot: headers.slot };
}

/**
 * Checks every BAT entry the disk uses: a valid state, and for blocks with
 * payload a file offset past the header section whose used part lies inside
 * the file. Sector bitmap entries matter only with a parent (a disk without
 * one never reads them). Adds the blocks to `extents`.
 */
function validateBat(bat: Bat, fileSize: number, extents: Extent[]): void {
  const g = bat.geometry;
  for (let block = 0; block < g.payloadBlocks; block++) {
    const index = payloadEntryIndex(g, block);
    const state = bat.state(index);
    const where = `VHDX BAT entry ${index}`;
    if (!isValidPayloadState(state, g.hasParent)) {
      throw new ImageFormatError(where, `payload block ${block} has invalid state ${state}`);
    }
    if (!hasPayload(state)) continue;
    const offset = bat.fileOffset(index);
    const used = Math.min(g.blockSize, g.virtualDiskSize - block * g.blockSize);
    if (offset < HEADER_SECTION_SIZE) {
      throw new ImageFormatError(
        where,
        `payload block ${block} points into the header section (file offset ${offset})`,
      );
    }
    if (offset + used > fileSize) {
      throw new ImageFormatError(
        where,
        `payload block ${block} at file offset ${offset}+${used} points past the end of the ${fileSize}-byte file`,
      );
    }
    if (state === PAYLOAD_BLOCK_PARTIALLY_PRESENT) {
      const chunk = Math.floor(block / g.chunkRatio);
      if (bat.state(bitmapEntryIndex(g, chunk)) !== SB_BLOCK_PRESENT) {
        throw new ImageFormatError(
          where,
          `payload block ${block} is partially present but sector bitmap block ${chunk} is not`,
        );
      }
    }
    extents.push({ start: offset, length: used, what: `payload block ${block}` });
  }
  if (!g.hasParent) return;
  for (let chunk = 0; chunk < g.bitmapBlocks; chunk++) {
    const index = bitmapEntryIndex(g, chunk);
    const state = bat.state(index);
    const where = `VHDX BAT entry ${index}`;
    if (state === SB_BLOCK_NOT_PRESENT) continue;
    if (state !== SB_BLOCK_PRESENT) {
      throw new ImageFormatError(where, `sector bitmap block ${chunk} has invalid state ${state}`);
    }
    const offset = bat.fileOffset(index);
    if (offset < HEADER_SECTION_SIZE || offset + SECTOR_BITMAP_BLOCK_SIZE > fileSize) {
      throw new ImageFormatError(
        where,
        `sector bitmap block ${chunk} at file offset ${offset} is outside the ${fileSize}-byte file`,
      );
    }
    extents.push({
      start: offset,
      length: SECTOR_BITMAP_BLOCK_SIZE,
      what: `sector bitmap block ${chunk}`,
    });
  }
}
