import { unlink } from 'node:fs/promises';
import { DiskIoError } from '../block-device.ts';
import { ImageFile } from './image-file.ts';
import type { DiskFormat } from './open.ts';
import { createVhd } from './vhd/create.ts';
import { createVhdx } from './vhdx/create.ts';

export interface CreateImageOptions {
  readonly format: DiskFormat;
  /** Virtual size in bytes (a differencing VHDX takes its parent's when absent). */
  readonly size?: number;
  /** fixed: all space allocated up front; dynamic (default): allocated on write. */
  readonly type?: 'fixed' | 'dynamic';
  readonly blockSize?: number;
  readonly logicalSectorSize?: 512 | 4096;
  /** Parent image: makes a differencing VHDX. */
  readonly parent?: string;
}

function invalid(message: string): never {
  throw new DiskIoError('EINVAL', message);
}

/** Creates a new image of any format; never touches an existing file. */
export async function createImage(path: string, o: CreateImageOptions): Promise<void> {
  const type = o.type ?? 'dynamic';
  if (o.parent && o.format !== 'vhdx')
    invalid(`only VHDX images can have a parent, not ${o.format}`);
  if (o.parent && o.type === 'fixed') invalid('a differencing image cannot be fixed');
  switch (o.format) {
    case 'vhdx':
      return createVhdx(path, {
        type: o.parent ? 'differencing' : type,
        ...(o.size !== undefined ? { size: o.size } : {}),
        ...(o.blockSize !== undefined ? { blockSize: o.blockSize } : {}),
        ...(o.logicalSectorSize !== undefined ? { logicalSectorSize: o.logicalSectorSize } : {}),
        ...(o.parent !== undefined ? { parent: o.parent } : {}),
      });
    case 'vhd':
      if (o.logicalSectorSize !== undefined && o.logicalSectorSize !== 512) {
        invalid('VHD images have 512-byte sectors');
      }
      if (o.size === undefined) invalid('a size is required');
      return createVhd(path, {
        size: o.size,
        type,
        ...(o.blockSize !== undefined ? { blockSize: o.blockSize } : {}),
      });
    case 'raw': {
      if (o.size === undefined) invalid('a size is required');
      if (!Number.isSafeInteger(o.size) || o.size <= 0)
        invalid(`size ${o.size} is not a positive byte count`);
      if (o.blockSize !== undefined) invalid('raw images have no block size');
      if (o.logicalSectorSize !== undefined) invalid('raw images record no sector size');
      const file = await ImageFile.create(path);
      try {
        if (type === 'fixed') await file.preallocate(0, o.size);
        await file.truncate(o.size);
        await file.close();
      } catch (error) {
        await file.close().catch(() => undefined);
        await unlink(path).catch(() => undefined);
        throw error;
      }
      return;
    }
    default:
      invalid(`unknown format ${JSON.stringify(o.format)}`);
  }
}
