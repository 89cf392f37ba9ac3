import { unlink } from 'node:fs/promises';
import { DiskIoError } from '../../block-device.ts';
import { ImageFile } from '../image-file.ts';
import {
  DISK_TYPE_DYNAMIC,
  DISK_TYPE_FIXED,
  DYNAMIC_COOKIE,
  DYNAMIC_HEADER_SIZE,
  FOOTER_CHECKSUM_OFFSET,
  FOOTER_COOKIE,
  FOOTER_SIZE,
  HEADER_CHECKSUM_OFFSET,
  MAX_VHD_SIZE,
  VHD_EPOCH_MS,
  vhdChecksum,
  vhdDynamicHeader,
  vhdFooter,
} from './footer.ts';
import { chsGeometry } from './geometry.ts';

export interface CreateVhdOptions {
  readonly size: number;
  readonly type: 'fixed' | 'dynamic';
  /** Block size of a dynamic disk; default 2 MiB (the specification's and Hyper-V's). */
  readonly blockSize?: number;
}

export const DEFAULT_VHD_BLOCK_SIZE = 2 * 1024 * 1024;
const ascii = (text: string) => new TextEncoder().encode(text);

function invalid(message: string): never {
  throw new DiskIoError('EINVAL', message);
}

/** Encodes a footer for a new disk, checksum included. */
export function encodeFooter(size: number, type: number, uniqueId: Uint8Array): Uint8Array {
  const chs = chsGeometry(size);
  const out = vhdFooter.write({
    cookie: ascii(FOOTER_COOKIE),
    features: 2,
    fileFormatVersion: 0x00010000,
    dataOffset: type === DISK_TYPE_FIXED ? 0xffff_ffff_ffff_ffffn : BigInt(FOOTER_SIZE),
    timeStamp: Math.max(0, Math.floor((Date.now() - VHD_EPOCH_MS) / 1000)) >>> 0,
    // Readers that choose between the CHS product and the footer's size by the
    // creator (qemu before 10.0 among them) take the footer's size for Hyper-V's
    // "win ", which is how this image is meant to be read.
    creatorApplication: ascii('win '),
    creatorVersion: 0x00010000,
    creatorHostOs: 0x5769326b, // "Wi2k"
    originalSize: BigInt(size),
    currentSize: BigInt(size),
    cylinders: chs.cylinders,
    heads: chs.heads,
    sectorsPerTrack: chs.sectorsPerTrack,
    diskType: type,
    checksum: 0,
    uniqueId,
    savedState: 0,
  });
  new DataView(out.buffer).setUint32(
    FOOTER_CHECKSUM_OFFSET,
    vhdChecksum(out, FOOTER_CHECKSUM_OFFSET),
    false,
  );
  return out;
}

/**
 * Creates a VHD file (refusing an existing path). Fixed: the data then the
 * footer. Dynamic: footer copy, dynamic header at 512, the BAT at 1536
 * (all entries unused, padded to 512 bytes), the footer.
 */
export async function createVhd(path: string, options: CreateVhdOptions): Promise<void> {
  const { size } = options;
  if (!Number.isSafeInteger(size) || size <= 0 || size > MAX_VHD_SIZE) {
    invalid(`size ${size} is not between 512 bytes and 2040 GiB (the VHD limit)`);
  }
  if (size % 512 !== 0) invalid(`size ${size} is not a multiple of 512`);
  const blockSize = options.blockSize ?? DEFAULT_VHD_BLOCK_SIZE;
  if (options.type === 'dynamic') {
    if (blockSize < 4096 || blockSize > 256 * 1024 * 1024 || (blockSize & (blockSize - 1)) !== 0) {
      invalid(`block size ${blockSize} is not a power of two from 4 KiB to 256 MiB`);
    }
  }
  const uniqueId = crypto.getRandomValues(new Uint8Array(16));
  const type = options.type === 'fixed' ? DISK_TYPE_FIXED : DISK_TYPE_DYNAMIC;
  const footer = encodeFooter(size, type, uniqueId);

  const file = await ImageFile.create(path);
  try {
    if (type === DISK_TYPE_FIXED) {
      await file.preallocate(0, size);
      await file.write(size, footer);
    } else {
      const entries = Math.ceil(size / blockSize);
      const tableOffset = FOOTER_SIZE + DYNAMIC_HEADER_SIZE;
      const batBytes = Math.ceil((entries * 4) / 512) * 512;
      const header = vhdDynamicHeader.write({
        cookie: ascii(DYNAMIC_COOKIE),
        dataOffset: 0xffff_ffff_ffff_ffffn,
        tableOffset: BigInt(tableOffset),
        headerVersion: 0x00010000,
        maxTableEntries: entries,
        blockSize,
        checksum: 0,
        parentUniqueId: new Uint8Array(16),
        parentTimeStamp: 0,
        reserved1: 0,
        parentUnicodeName: new Uint8Array(512),
        parentLocators: [],
      });
      new DataView(header.buffer).setUint32(
        HEADER_CHECKSUM_OFFSET,
        vhdChecksum(header, HEADER_CHECKSUM_OFFSET),
        false,
      );
      await file.write(0, footer);
      await file.write(FOOTER_SIZE, header);
      await file.write(tableOffset, new Uint8Array(batBytes).fill(0xff));
      await file.write(tableOffset + batBytes, footer);
    }
    await file.sync();
    await file.close();
  } catch (error) {
    await file.close().catch(() => undefined);
    await unlink(path).catch(() => undefined);
    throw error;
  }
}
