import { bytes, defineStruct, guid, u16, u32 } from '../../../wire/index.ts';
import { ImageFormatError } from '../../block-device.ts';
import type { ImageFile } from '../image-file.ts';
import {
  ITEM_FILE_PARAMETERS,
  ITEM_LOGICAL_SECTOR_SIZE,
  ITEM_PAGE83_DATA,
  ITEM_PARENT_LOCATOR,
  ITEM_PHYSICAL_SECTOR_SIZE,
  ITEM_VIRTUAL_DISK_SIZE,
  MAX_BLOCK_SIZE,
  MAX_METADATA_ITEM_SIZE,
  MAX_TABLE_ENTRIES,
  MAX_VIRTUAL_DISK_SIZE,
  METADATA_SIGNATURE,
  METADATA_TABLE_SIZE,
  MIN_BLOCK_SIZE,
  PARENT_LOCATOR_TYPE_VHDX,
} from './format.ts';
import { encodeParentLocator, type ParentLocator, parseParentLocator } from './parent-locator.ts';
import type { Region } from './region-table.ts';

/** [MS-VHDX] 2.6.1: the metadata table at the start of the metadata region. */
export const vhdxMetadataTableHeader = defineStruct('vhdx_metadata_table_header', {
  signature: bytes(8),
  reserved: u16,
  entryCount: u16,
  reserved2: bytes(20),
});

/** [MS-VHDX] 2.6.1.2: flags bit 0 IsUser, bit 1 IsVirtualDisk, bit 2 IsRequired. */
export const vhdxMetadataTableEntry = defineStruct('vhdx_metadata_table_entry', {
  itemId: guid,
  offset: u32,
  length: u32,
  flags: u32,
  reserved: u32,
});

/** [MS-VHDX] 2.6.2.1: flags bit 0 LeaveBlocksAllocated, bit 1 HasParent. */
export const vhdxFileParameters = defineStruct('vhdx_file_parameters', {
  blockSize: u32,
  flags: u32,
});

const FLAG_USER = 1;
const FLAG_VIRTUAL_DISK = 2;
const FLAG_REQUIRED = 4;

export interface MetadataItem {
  readonly itemId: string;
  readonly offset: number;
  readonly length: number;
  readonly user: boolean;
  readonly virtualDisk: boolean;
  readonly required: boolean;
}

export interface VhdxMetadata {
  readonly blockSize: number;
  readonly leaveBlocksAllocated: boolean;
  readonly hasParent: boolean;
  readonly virtualDiskSize: number;
  readonly logicalSectorSize: number;
  readonly physicalSectorSize: number;
  /** Page 83 data: the disk's SCSI identifier, as a GUID. */
  readonly page83: string;
  readonly parentLocator: ParentLocator | null;
  readonly items: readonly MetadataItem[];
}

const KNOWN_ITEMS: ReadonlyMap<string, { name: string; minLength: number }> = new Map([
  [ITEM_FILE_PARAMETERS, { name: 'file parameters', minLength: 8 }],
  [ITEM_VIRTUAL_DISK_SIZE, { name: 'virtual disk size', minLength: 8 }],
  [ITEM_PAGE83_DATA, { name: 'page 83 data', minLength: 16 }],
  [ITEM_LOGICAL_SECTOR_SIZE, { name: 'logical sector size', minLength: 4 }],
  [ITEM_PHYSICAL_SECTOR_SIZE, { name: 'physical sector size', minLength: 4 }],
  [ITEM_PARENT_LOCATOR, { name: 'parent locator', minLength: 20 }],
]);

function fail(structure: string, message: string): never {
  throw new ImageFormatError(structure, message);
}

/** Parses and validates the 64 KiB metadata table. */
export function parseMetadataTable(table: Uint8Array, regionLength: number): MetadataItem[] {
  const S = 'VHDX metadata table';
  const head = vhdxMetadataTableHeader.read(table);
  const signature = String.fromCharCode(...head.signature);
  if (signature !== METADATA_SIGNATURE) {
    fail(S, `signature ${JSON.stringify(signature)} is not "metadata"`);
  }
  if (head.entryCount > MAX_TABLE_ENTRIES) {
    fail(S, `entry count ${head.entryCount} exceeds ${MAX_TABLE_ENTRIES}`);
  }
  const items: MetadataItem[] = [];
  for (let i = 0; i < head.entryCount; i++) {
    const e = vhdxMetadataTableEntry.read(
      table,
      vhdxMetadataTableHeader.size + i * vhdxMetadataTableEntry.size,
    );
    const where = `VHDX metadata entry ${i} (${KNOWN_ITEMS.get(e.itemId)?.name ?? e.itemId})`;
    const item: MetadataItem = {
      itemId: e.itemId,
      offset: e.offset,
      length: e.length,
      user: (e.flags & FLAG_USER) !== 0,
      virtualDisk: (e.flags & FLAG_VIRTUAL_DISK) !== 0,
      required: (e.flags & FLAG_REQUIRED) !== 0,
    };
    if (item.length > MAX_METADATA_ITEM_SIZE) {
      fail(where, `length ${item.length} exceeds 1 MiB`);
    }
    if (item.length > 0) {
      if (item.offset < METADATA_TABLE_SIZE) {
        fail(where, `offset ${item.offset} lies inside the 64 KiB metadata table`);
      }
      if (item.offset + item.length > regionLength) {
        fail(
          where,
          `item at ${item.offset}+${item.length} is past the end of the ${regionLength}-byte metadata region`,
        );
      }
    }
    for (const other of items) {
      if (other.itemId === item.itemId && other.user === item.user) fail(where, 'listed twice');
      if (
        item.length > 0 &&
        other.length > 0 &&
        item.offset < other.offset + other.length &&
        other.offset < item.offset + item.length
      ) {
        fail(where, `overlaps item ${other.itemId}`);
      }
    }
    const known = !item.user && KNOWN_ITEMS.has(item.itemId);
    if (!known && item.required)
      fail(where, 'is required but not supported by this implementation');
    items.push(item);
  }
  return items;
}

/** Reads the metadata region's table and the known items, validating each value. */
export async function readMetadata(file: ImageFile, region: Region): Promise<VhdxMetadata> {
  const table = await file.readStructure(region.offset, METADATA_TABLE_SIZE, 'VHDX metadata table');
  const items = parseMetadataTable(table, region.length);
  const read = async (id: string): Promise<Uint8Array | null> => {
    const item = items.find((i) => i.itemId === id && !i.user);
    const known = KNOWN_ITEMS.get(id)!;
    if (!item) return null;
    if (item.length < known.minLength) {
      fail(`VHDX ${known.name}`, `item length ${item.length} is below ${known.minLength}`);
    }
    return file.readStructure(region.offset + item.offset, item.length, `VHDX ${known.name}`);
  };
  const need = async (id: string): Promise<Uint8Array> => {
    const data = await read(id);
    if (!data) fail('VHDX metadata table', `required item ${KNOWN_ITEMS.get(id)!.name} is missing`);
    return data;
  };
  const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

  const params = vhdxFileParameters.read(await need(ITEM_FILE_PARAMETERS));
  const blockSize = params.blockSize;
  if (
    blockSize < MIN_BLOCK_SIZE ||
    blockSize > MAX_BLOCK_SIZE ||
    (blockSize & (blockSize - 1)) !== 0
  ) {
    fail(
      'VHDX file parameters',
      `block size ${blockSize} is not a power of two from 1 MiB to 256 MiB`,
    );
  }
  const leaveBlocksAllocated = (params.flags & 1) !== 0;
  const hasParent = (params.flags & 2) !== 0;

  const logicalSectorSize = view(await need(ITEM_LOGICAL_SECTOR_SIZE)).getUint32(0, true);
  if (logicalSectorSize !== 512 && logicalSectorSize !== 4096) {
    fail('VHDX logical sector size', `${logicalSectorSize} is not 512 or 4096`);
  }
  const physicalSectorSize = view(await need(ITEM_PHYSICAL_SECTOR_SIZE)).getUint32(0, true);
  if (physicalSectorSize !== 512 && physicalSectorSize !== 4096) {
    fail('VHDX physical sector size', `${physicalSectorSize} is not 512 or 4096`);
  }
  const sizeBig = view(await need(ITEM_VIRTUAL_DISK_SIZE)).getBigUint64(0, true);
  if (sizeBig === 0n || sizeBig > BigInt(MAX_VIRTUAL_DISK_SIZE)) {
    fail('VHDX virtual disk size', `${sizeBig} is not between 1 byte and 64 TiB`);
  }
  const virtualDiskSize = Number(sizeBig);
  if (virtualDiskSize % logicalSectorSize !== 0) {
    fail(
      'VHDX virtual disk size',
      `${virtualDiskSize} is not a multiple of the ${logicalSectorSize}-byte logical sector`,
    );
  }
  const page83 = guid.decode(view(await need(ITEM_PAGE83_DATA)), 0);

  let parentLocator: ParentLocator | null = null;
  const locatorBytes = await read(ITEM_PARENT_LOCATOR);
  if (hasParent) {
    if (!locatorBytes) fail('VHDX metadata table', 'HasParent is set but no parent locator exists');
    parentLocator = parseParentLocator(locatorBytes);
    if (parentLocator.locatorType !== PARENT_LOCATOR_TYPE_VHDX) {
      fail('VHDX parent locator', `locator type ${parentLocator.locatorType} is not a VHDX parent`);
    }
  }
  return {
    blockSize,
    leaveBlocksAllocated,
    hasParent,
    virtualDiskSize,
    logicalSectorSize,
    physicalSectorSize,
    page83,
    parentLocator,
    items,
  };
}

export interface NewMetadata {
  readonly blockSize: number;
  readonly leaveBlocksAllocated: boolean;
  readonly virtualDiskSize: number;
  readonly logicalSectorSize: number;
  readonly physicalSectorSize: number;
  readonly page83: string;
  readonly parentLocator?: ReadonlyMap<string, string>;
}

/** Encodes the start of a metadata region: the table, then the items from 64 KiB on. */
export function encodeMetadataRegion(m: NewMetadata): Uint8Array {
  const values: { id: string; data: Uint8Array; virtualDisk: boolean }[] = [];
  values.push({
    id: ITEM_FILE_PARAMETERS,
    data: vhdxFileParameters.write({
      blockSize: m.blockSize,
      flags: (m.leaveBlocksAllocated ? 1 : 0) | (m.parentLocator ? 2 : 0),
    }),
    virtualDisk: false,
  });
  const u32le = (v: number) => {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v, true);
    return b;
  };
  values.push({ id: ITEM_VIRTUAL_DISK_SIZE, data: u64Bytes(m.virtualDiskSize), virtualDisk: true });
  const page83 = new Uint8Array(16);
  guid.encode(new DataView(page83.buffer), 0, m.page83);
  values.push({ id: ITEM_PAGE83_DATA, data: page83, virtualDisk: true });
  values.push({
    id: ITEM_LOGICAL_SECTOR_SIZE,
    data: u32le(m.logicalSectorSize),
    virtualDisk: true,
  });
  values.push({
    id: ITEM_PHYSICAL_SECTOR_SIZE,
    data: u32le(m.physicalSectorSize),
    virtualDisk: true,
  });
  if (m.parentLocator) {
    values.push({
      id: ITEM_PARENT_LOCATOR,
      data: encodeParentLocator(m.parentLocator),
      virtualDisk: false,
    });
  }
  const itemsSize = values.reduce((n, v) => n + v.data.length, 0);
  const out = new Uint8Array(METADATA_TABLE_SIZE + itemsSize);
  let at = vhdxMetadataTableHeader.writeInto(out, 0, {
    signature: new TextEncoder().encode(METADATA_SIGNATURE),
    reserved: 0,
    entryCount: values.length,
    reserved2: new Uint8Array(20),
  });
  let itemAt = METADATA_TABLE_SIZE;
  for (const v of values) {
    at = vhdxMetadataTableEntry.writeInto(out, at, {
      itemId: v.id,
      offset: itemAt,
      length: v.data.length,
      flags: FLAG_REQUIRED | (v.virtualDisk ? FLAG_VIRTUAL_DISK : 0),
      reserved: 0,
    });
    out.set(v.data, itemAt);
    itemAt += v.data.length;
  }
  return out;
}

function u64Bytes(value: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(value), true);
  return b;
}
