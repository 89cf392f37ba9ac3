import { basename, resolve } from 'node:path';
import { ImageFile } from './image-file.ts';
import { type DiskFormat, detectFormat } from './open.ts';
import { RawDisk } from './raw-disk.ts';
import { DISK_TYPE_FIXED } from './vhd/footer.ts';
import { VhdDisk } from './vhd/vhd-disk.ts';
import { payloadStateName } from './vhdx/format.ts';
import { VhdxDisk } from './vhdx/vhdx-disk.ts';

/**
 * What `hvkit disk info` reports about an image. Field names follow
 * `qemu-img info --output=json` where qemu has the same fact
 * (virtual-size, actual-size, cluster-size, dirty-flag, backing-filename);
 * the rest is under format-specific.
 */
export interface ImageInfo {
  readonly filename: string;
  readonly format: DiskFormat;
  readonly 'virtual-size': number;
  /** Storage the file occupies (st_blocks * 512). */
  readonly 'actual-size': number;
  readonly 'file-length': number;
  /** The block size, for formats that allocate in blocks. */
  readonly 'cluster-size'?: number;
  /** True when the image has a pending log (shown as replayed in memory). */
  readonly 'dirty-flag': boolean;
  readonly 'format-specific'?: {
    readonly type: DiskFormat;
    readonly data: Record<string, unknown>;
  };
  readonly 'backing-filename'?: string;
  readonly 'full-backing-filename'?: string;
  readonly 'backing-image'?: ImageInfo;
}

export async function inspectImage(path: string, format?: DiskFormat): Promise<ImageInfo> {
  const fmt = format ?? (await detectFormat(path));
  if (fmt === 'vhdx') return inspectVhdx(path);
  if (fmt === 'vhd') return inspectVhd(path);
  const disk = await RawDisk.open(path, { readOnly: true });
  try {
    return {
      filename: path,
      format: 'raw',
      'virtual-size': disk.size,
      ...(await fileSizes(path)),
      'dirty-flag': false,
    };
  } finally {
    await disk.close();
  }
}

async function fileSizes(path: string): Promise<{ 'actual-size': number; 'file-length': number }> {
  const file = await ImageFile.open(path, true);
  try {
    return { 'actual-size': await file.allocatedBytes(), 'file-length': await file.size() };
  } finally {
    await file.close();
  }
}

async function inspectVhdx(path: string): Promise<ImageInfo> {
  const disk = await VhdxDisk.open(path, { readOnly: true });
  try {
    const m = disk.layout.metadata;
    const states: Record<string, number> = {};
    for (const [state, count] of [...disk.blockStateCounts()].sort((a, b) => a[0] - b[0])) {
      const name = payloadStateName(state);
      states[name] = (states[name] ?? 0) + count;
    }
    const type = m.hasParent ? 'differencing' : m.leaveBlocksAllocated ? 'fixed' : 'dynamic';
    const g = disk.guids;
    const info: ImageInfo = {
      filename: path,
      format: 'vhdx',
      'virtual-size': disk.size,
      ...(await fileSizes(path)),
      'cluster-size': disk.blockSize,
      'dirty-flag': disk.layout.replayed !== null,
      'format-specific': {
        type: 'vhdx',
        data: {
          type,
          'logical-sector-size': m.logicalSectorSize,
          'physical-sector-size': m.physicalSectorSize,
          'block-states': states,
          'file-write-guid': g.fileWrite,
          'data-write-guid': g.dataWrite,
          'log-guid': g.log,
          'page83-data': g.page83,
          creator: disk.layout.creator,
          ...(disk.layout.replayed ? { 'pending-log-entries': disk.layout.replayed.entries } : {}),
          ...(m.parentLocator
            ? { 'parent-locator': Object.fromEntries(m.parentLocator.entries) }
            : {}),
        },
      },
    };
    if (!disk.parentPath) return info;
    const parent = await inspectImage(disk.parentPath, 'vhdx');
    return {
      ...info,
      'backing-filename': basename(disk.parentPath),
      'full-backing-filename': resolve(disk.parentPath),
      'backing-image': parent,
    };
  } finally {
    await disk.close();
  }
}

async function inspectVhd(path: string): Promise<ImageInfo> {
  const disk = await VhdDisk.open(path, { readOnly: true });
  try {
    const f = disk.layout.footer;
    const counts = disk.blockCounts();
    const fixed = f.diskType === DISK_TYPE_FIXED;
    const id = Buffer.from(disk.identifier).toString('hex');
    return {
      filename: path,
      format: 'vhd',
      'virtual-size': disk.size,
      ...(await fileSizes(path)),
      ...(disk.blockSize !== null ? { 'cluster-size': disk.blockSize } : {}),
      'dirty-flag': false,
      'format-specific': {
        type: 'vhd',
        data: {
          type: fixed ? 'fixed' : 'dynamic',
          ...(fixed
            ? {}
            : {
                'block-states': {
                  allocated: counts.allocated,
                  'not allocated': counts.total - counts.allocated,
                },
              }),
          'unique-id': id,
          creator: f.creatorApplication,
          geometry: f.geometry,
        },
      },
    };
  } finally {
    await disk.close();
  }
}
