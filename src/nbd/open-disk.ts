/**
 * Opens what a user names as a disk: an nbd:// or nbd+unix:// URI connects
 * to that NBD server (the client is a BlockDevice); anything else is an
 * image file of the block layer (raw, VHDX, VHD), or a scratch disk in
 * memory. This lives in nbd/ because it is the one layer that knows both
 * NBD URIs and block/'s images; block/ itself knows nothing of any network.
 */
import { resolve } from 'node:path';
import type { BlockDevice } from '../block/block-device.ts';
import { type DiskFormat, type OpenDiskOptions, openImage } from '../block/image/open.ts';
import { MemoryDisk } from '../block/memory-disk.ts';
import { connectNbd } from './client/client.ts';
import { isNbdUri } from './uri.ts';

/** Opens an image file or an NBD URI as a BlockDevice. */
export function openDisk(target: string, options: OpenDiskOptions = {}): Promise<BlockDevice> {
  if (isNbdUri(target)) return connectNbd(target, { readOnly: options.readOnly ?? false });
  return openImage(target, options);
}

/** A disk as a VM config or a control command names it. */
export interface DiskSource {
  /** An image file (relative to the base directory) or an NBD URI. */
  readonly path?: string | undefined;
  /** A scratch disk of this many bytes in memory, instead of a path. */
  readonly memory?: number | undefined;
  readonly readOnly: boolean;
  /** Skip format detection. */
  readonly format?: DiskFormat | undefined;
}

/**
 * Opens a configured disk; resolves with the device and where it came from
 * (the resolved path, the URI, or "memory").
 */
export async function openDiskSource(
  source: DiskSource,
  baseDir = process.cwd(),
): Promise<{ device: BlockDevice; source: string }> {
  if (source.memory !== undefined) {
    return {
      device: new MemoryDisk(source.memory, { readOnly: source.readOnly }),
      source: 'memory',
    };
  }
  if (source.path === undefined) throw new Error('a disk needs a path or a memory size');
  const target = isNbdUri(source.path) ? source.path : resolve(baseDir, source.path);
  const device = await openDisk(target, {
    readOnly: source.readOnly,
    ...(source.format ? { format: source.format } : {}),
  });
  return { device, source: target };
}
