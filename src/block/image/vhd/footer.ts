import {
  array,
  bytes,
  defineStruct,
  reserved,
  u8,
  u16be,
  u32be,
  u64be,
} from '../../../wire/index.ts';

/**
 * The VHD hard disk footer (VHD specification, "Hard Disk Footer Format"):
 * 512 bytes, big-endian, at the end of every VHD and also at offset 0 of a
 * dynamic one. The checksum is the one's complement of the byte sum of the
 * footer with the checksum field counted as zero.
 */
export const vhdFooter = defineStruct('vhd_footer', {
  cookie: bytes(8),
  features: u32be,
  fileFormatVersion: u32be,
  dataOffset: u64be,
  timeStamp: u32be,
  creatorApplication: bytes(4),
  creatorVersion: u32be,
  creatorHostOs: u32be,
  originalSize: u64be,
  currentSize: u64be,
  cylinders: u16be,
  heads: u8,
  sectorsPerTrack: u8,
  diskType: u32be,
  checksum: u32be,
  uniqueId: bytes(16),
  savedState: u8,
  reserved: reserved(427),
});

/** One of the eight parent locator entries of a dynamic disk header. */
export const vhdParentLocatorEntry = defineStruct('vhd_parent_locator_entry', {
  platformCode: u32be,
  platformDataSpace: u32be,
  platformDataLength: u32be,
  reserved: u32be,
  platformDataOffset: u64be,
});

/** The dynamic disk header (1024 bytes, big-endian); "cxsparse". */
export const vhdDynamicHeader = defineStruct('vhd_dynamic_header', {
  cookie: bytes(8),
  dataOffset: u64be,
  tableOffset: u64be,
  headerVersion: u32be,
  maxTableEntries: u32be,
  blockSize: u32be,
  checksum: u32be,
  parentUniqueId: bytes(16),
  parentTimeStamp: u32be,
  reserved1: u32be,
  parentUnicodeName: bytes(512),
  parentLocators: array(vhdParentLocatorEntry, 8),
  reserved2: reserved(256),
});

export const FOOTER_SIZE = 512;
export const DYNAMIC_HEADER_SIZE = 1024;
export const FOOTER_COOKIE = 'conectix';
export const DYNAMIC_COOKIE = 'cxsparse';
export const DISK_TYPE_FIXED = 2;
export const DISK_TYPE_DYNAMIC = 3;
export const DISK_TYPE_DIFFERENCING = 4;
export const UNUSED_BAT_ENTRY = 0xffffffff;
/** 2040 GiB: the largest VHD the specification allows. */
export const MAX_VHD_SIZE = 2040 * 1024 * 1024 * 1024;
/** VHD timestamps count seconds from 2000-01-01T00:00:00Z. */
export const VHD_EPOCH_MS = Date.UTC(2000, 0, 1);

export function vhdChecksum(bytes: Uint8Array, checksumOffset: number): number {
  let sum = 0;
  for (let i = 0; i < bytes.length; i++) {
    if (i >= checksumOffset && i < checksumOffset + 4) continue;
    sum += bytes[i]!;
  }
  return ~sum >>> 0;
}

export const FOOTER_CHECKSUM_OFFSET = vhdFooter.offsetOf('checksum');
export const HEADER_CHECKSUM_OFFSET = vhdDynamicHeader.offsetOf('checksum');

export function ascii(bytes: Uint8Array): string {
  return String.fromCharCode(...bytes);
}
