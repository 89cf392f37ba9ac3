import { unlink } from 'node:fs/promises';
import { relative, resolve } from 'node:path';
import { DiskIoError } from '../../block-device.ts';
import { ImageFile } from '../image-file.ts';
import { Bat, batGeometry, payloadEntryIndex } from './bat.ts';
import {
  HEADER_OFFSETS,
  MAX_BLOCK_SIZE,
  MAX_VIRTUAL_DISK_SIZE,
  MIN_BLOCK_SIZE,
  MiB,
  PAYLOAD_BLOCK_FULLY_PRESENT,
  REGION_BAT,
  REGION_METADATA,
  REGION_TABLE_OFFSETS,
} from './format.ts';
import { encodeFileIdentifier, encodeHeader } from './header.ts';
import { encodeMetadataRegion } from './metadata.ts';
import { linkageValue } from './parent-locator.ts';
import { encodeRegionTable } from './region-table.ts';
import { VhdxDisk } from './vhdx-disk.ts';

export type VhdxType = 'fixed' | 'dynamic' | 'differencing';

export interface CreateVhdxOptions {
  /** Virtual size in bytes; for a differencing disk, defaults to the parent's. */
  readonly size?: number;
  readonly type: VhdxType;
  /** Payload block size (power of two, 1-256 MiB); default 32 MiB, 2 MiB for differencing. */
  readonly blockSize?: number;
  readonly logicalSectorSize?: 512 | 4096;
  readonly physicalSectorSize?: 512 | 4096;
  /** The parent image of a differencing disk. */
  readonly parent?: string;
  readonly creator?: string;
}

/** Hyper-V's defaults: 32 MiB blocks for fixed and dynamic disks, 2 MiB for differencing. */
export const DEFAULT_BLOCK_SIZE = 32 * MiB;
export const DEFAULT_DIFFERENCING_BLOCK_SIZE = 2 * MiB;
const LOG_LENGTH = MiB;

function invalid(message: string): never {
  throw new DiskIoError('EINVAL', message);
}

/**
 * Creates a VHDX file (refusing an existing path). Layout: header section,
 * a 1 MiB log at 1 MiB, the metadata region at 2 MiB, the BAT at 3 MiB, then
 * payload. A fixed disk has every block allocated (preallocated on disk
 * where the filesystem can) and LeaveBlocksAllocated set; a dynamic one has
 * all blocks NOT_PRESENT; a differencing one records its parent's
 * DataWriteGuid and path in a parent locator.
 */
export async function createVhdx(path: string, options: CreateVhdxOptions): Promise<void> {
  let parentInfo: { size: number; sector: number; dataWriteGuid: string; path: string } | null =
    null;
  if (options.type === 'differencing') {
    if (!options.parent) invalid('a differencing VHDX needs a parent');
    const parent = await VhdxDisk.open(options.parent, { readOnly: true });
    try {
      parentInfo = {
        size: parent.size,
        sector: parent.logicalSectorSize,
        dataWriteGuid: parent.guids.dataWrite,
        path: options.parent,
      };
    } finally {
      await parent.close();
    }
  } else if (options.parent) {
    invalid(`a ${options.type} VHDX has no parent`);
  }

  const sector = parentInfo?.sector ?? options.logicalSectorSize ?? 512;
  if (options.logicalSectorSize && parentInfo && options.logicalSectorSize !== parentInfo.sector) {
    invalid(`the parent has ${parentInfo.sector}-byte sectors; a child must use the same`);
  }
  if (sector !== 512 && sector !== 4096)
    invalid(`logical sector size ${sector} is not 512 or 4096`);
  const physical = options.physicalSectorSize ?? 4096;
  if (physical !== 512 && physical !== 4096)
    invalid(`physical sector size ${physical} is not 512 or 4096`);
  const size = options.size ?? parentInfo?.size;
  if (size === undefined) invalid('a size is required');
  if (parentInfo && size !== parentInfo.size) {
    invalid(`a differencing disk has its parent's size (${parentInfo.size} bytes), not ${size}`);
  }
  if (!Number.isSafeInteger(size) || size <= 0 || size > MAX_VIRTUAL_DISK_SIZE) {
    invalid(`size ${size} is not between 1 byte and 64 TiB`);
  }
  if (size % sector !== 0) invalid(`size ${size} is not a multiple of the ${sector}-byte sector`);
  const blockSize =
    options.blockSize ?? (parentInfo ? DEFAULT_DIFFERENCING_BLOCK_SIZE : DEFAULT_BLOCK_SIZE);
  if (
    blockSize < MIN_BLOCK_SIZE ||
    blockSize > MAX_BLOCK_SIZE ||
    (blockSize & (blockSize - 1)) !== 0
  ) {
    invalid(`block size ${blockSize} is not a power of two from 1 MiB to 256 MiB`);
  }

  const geometry = batGeometry(size, blockSize, sector, parentInfo !== null);
  const logOffset = MiB;
  const metadataOffset = logOffset + LOG_LENGTH;
  const metadataLength = MiB;
  const batOffset = metadataOffset + metadataLength;
  const batLength = Math.ceil((geometry.entryCount * 8) / MiB) * MiB;
  const dataOffset = batOffset + batLength;

  const parentLocator = parentInfo
    ? new Map([
        ['parent_linkage', linkageValue(parentInfo.dataWriteGuid)],
        ['relative_path', relativeWindowsPath(path, parentInfo.path)],
        ['absolute_win32_path', resolve(parentInfo.path)],
      ])
    : undefined;
  const metadata = encodeMetadataRegion({
    blockSize,
    leaveBlocksAllocated: options.type === 'fixed',
    virtualDiskSize: size,
    logicalSectorSize: sector,
    physicalSectorSize: physical,
    page83: crypto.randomUUID(),
    ...(parentLocator ? { parentLocator } : {}),
  });
  if (metadata.length > metadataLength) invalid('the parent locator is too long');

  const batBytes = new Uint8Array(Math.ceil((geometry.entryCount * 8) / 4096) * 4096);
  const bat = new Bat(geometry, batBytes, batOffset);
  let end = dataOffset;
  if (options.type === 'fixed') {
    for (let b = 0; b < geometry.payloadBlocks; b++) {
      bat.set(payloadEntryIndex(geometry, b), PAYLOAD_BLOCK_FULLY_PRESENT, end);
      end += blockSize;
    }
  }

  const header = {
    sequenceNumber: 1n,
    fileWriteGuid: crypto.randomUUID(),
    dataWriteGuid: crypto.randomUUID(),
    logGuid: '00000000-0000-0000-0000-000000000000',
    logVersion: 0,
    version: 1,
    logLength: LOG_LENGTH,
    logOffset,
  };
  const regionTable = encodeRegionTable(
    { guid: REGION_BAT, offset: batOffset, length: batLength, required: true },
    { guid: REGION_METADATA, offset: metadataOffset, length: metadataLength, required: true },
  );

  const file = await ImageFile.create(path);
  try {
    await file.write(0, encodeFileIdentifier(options.creator ?? 'hvkit'));
    await file.write(HEADER_OFFSETS[0], encodeHeader(header));
    await file.write(HEADER_OFFSETS[1], encodeHeader({ ...header, sequenceNumber: 2n }));
    await file.write(REGION_TABLE_OFFSETS[0], regionTable);
    await file.write(REGION_TABLE_OFFSETS[1], regionTable);
    await file.write(metadataOffset, metadata);
    // A dynamic or differencing BAT starts all zero: the file's extension provides it.
    if (options.type === 'fixed') await file.write(batOffset, batBytes);
    if (end > dataOffset) await file.preallocate(dataOffset, end - dataOffset);
    await file.truncate(end);
    await file.sync();
    await file.close();
  } catch (error) {
    await file.close().catch(() => undefined);
    await unlink(path).catch(() => undefined);
    throw error;
  }
}

/** The parent's path relative to the child's directory, written the Windows way (".\\dir\\p.vhdx"). */
function relativeWindowsPath(childPath: string, parentPath: string): string {
  const rel = relative(resolve(childPath, '..'), resolve(parentPath)).replaceAll('/', '\\');
  return rel.startsWith('..') ? rel : `.\\${rel}`;
}
