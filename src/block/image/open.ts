import { open } from 'node:fs/promises';
import { type BlockDevice, DiskIoError } from '../block-device.ts';
import { RawDisk } from './raw-disk.ts';
import { VhdDisk } from './vhd/vhd-disk.ts';
import { VhdxDisk } from './vhdx/vhdx-disk.ts';

export type DiskFormat = 'raw' | 'vhdx' | 'vhd';

export const DISK_FORMATS: readonly DiskFormat[] = ['raw', 'vhdx', 'vhd'];

export interface OpenDiskOptions {
  /** Skip detection and open as this format. */
  readonly format?: DiskFormat;
  readonly readOnly?: boolean;
}

const VHDX_SIGNATURE = 'vhdxfile';
const VHD_COOKIE = 'conectix';

function ascii(bytes: Uint8Array): string {
  return String.fromCharCode(...bytes);
}

/**
 * Tells the format from the file's signatures: "vhdxfile" at offset 0 is
 * VHDX ([MS-VHDX] 2.2.1); a "conectix" footer in the last 512 bytes (or its
 * copy at offset 0 in a dynamic VHD) is VHD; anything else is raw.
 */
export async function detectFormat(path: string): Promise<DiskFormat> {
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(path, 'r');
  } catch (error) {
    throw new DiskIoError('EIO', `cannot open ${path}: ${(error as Error).message}`);
  }
  try {
    const size = (await handle.stat()).size;
    const head = new Uint8Array(8);
    await handle.read(head, 0, 8, 0);
    const first = ascii(head);
    if (first === VHDX_SIGNATURE) return 'vhdx';
    if (first === VHD_COOKIE) return 'vhd';
    if (size >= 512) {
      const tail = new Uint8Array(8);
      await handle.read(tail, 0, 8, size - 512);
      if (ascii(tail) === VHD_COOKIE) return 'vhd';
    }
    return 'raw';
  } finally {
    await handle.close();
  }
}

/**
 * Opens a disk image file as a BlockDevice, detecting its format unless one
 * is given. A malformed image rejects with an ImageFormatError naming the
 * bad structure; an unreadable file with a DiskIoError. (An nbd:// URI is
 * opened by nbd/open-disk.ts, which also knows the NBD client.)
 */
export async function openImage(path: string, options: OpenDiskOptions = {}): Promise<BlockDevice> {
  const format = options.format ?? (await detectFormat(path));
  const readOnly = options.readOnly ?? false;
  switch (format) {
    case 'raw':
      return RawDisk.open(path, { readOnly });
    case 'vhdx':
      return VhdxDisk.open(path, { readOnly });
    case 'vhd':
      return VhdDisk.open(path, { readOnly });
    default:
      throw new DiskIoError('EINVAL', `unknown disk format ${JSON.stringify(format)}`);
  }
}
