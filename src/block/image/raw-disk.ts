import { createHash } from 'node:crypto';
import { realpath } from 'node:fs/promises';
import {
  type BlockDevice,
  DiskIoError,
  type WriteOptions,
  type WriteZeroesOptions,
} from '../block-device.ts';
import { checkRequest } from '../request-errors.ts';
import { totalLength } from '../vectors.ts';
import { ImageFile } from './image-file.ts';

export interface RawDiskOptions {
  readonly readOnly?: boolean;
  /** The 16-byte VPD 0x83 identifier; derived from the file's real path when absent. */
  readonly identifier?: Uint8Array;
  /** 512 (default) or 4096. */
  readonly logicalSectorSize?: number;
}

/**
 * Derives a stable 16-byte identifier from the file's canonical path, so
 * the same file keeps its SCSI identity across runs and copies get their
 * own. Shaped as an RFC 4122 name-based id (version 5 bits, variant 10).
 */
export function identifierFromPath(canonicalPath: string): Uint8Array {
  const digest = createHash('sha256').update('hvkit raw disk\0').update(canonicalPath).digest();
  const id = new Uint8Array(digest.subarray(0, 16));
  id[6] = (id[6]! & 0x0f) | 0x50;
  id[8] = (id[8]! & 0x3f) | 0x80;
  return id;
}

/**
 * A raw image file: virtual offset = file offset. Sparse-friendly: discard
 * punches holes, write-zeroes punches when allowed to unmap and otherwise
 * converts the range to zeroed extents, falling back to writing zeros where
 * the filesystem can do neither. A file whose length is not a multiple of
 * the sector size is presented rounded up; the missing tail reads as zeros.
 */
export class RawDisk implements BlockDevice {
  readonly format = 'raw';
  readonly canFlush = true;
  readonly canDiscard = true;
  readonly canWriteZeroes = true;
  readonly physicalSectorSize = 4096;
  private closed = false;

  private constructor(
    private readonly file: ImageFile,
    readonly size: number,
    readonly logicalSectorSize: number,
    readonly readOnly: boolean,
    readonly identifier: Uint8Array,
  ) {}

  static async open(path: string, options: RawDiskOptions = {}): Promise<RawDisk> {
    const sector = options.logicalSectorSize ?? 512;
    if (sector !== 512 && sector !== 4096) {
      throw new DiskIoError('EINVAL', `logical sector size ${sector} is not 512 or 4096`);
    }
    const readOnly = options.readOnly ?? false;
    const file = await ImageFile.open(path, readOnly);
    try {
      const bytes = await file.size();
      const size = Math.ceil(bytes / sector) * sector;
      const identifier = options.identifier ?? identifierFromPath(await realpath(path));
      if (identifier.length !== 16) {
        throw new DiskIoError('EINVAL', `identifier must be 16 bytes, not ${identifier.length}`);
      }
      return new RawDisk(file, size, sector, readOnly, identifier);
    } catch (error) {
      await file.close();
      throw error;
    }
  }

  private check(offset: number, length: number, writing: boolean): void {
    checkRequest(this, this.file.path, this.closed, offset, length, writing ? 'write' : 'read');
  }

  async read(offset: number, target: Uint8Array): Promise<void> {
    this.check(offset, target.length, false);
    await this.file.read(offset, target);
  }

  async readv(offset: number, targets: readonly Uint8Array[]): Promise<void> {
    this.check(offset, totalLength(targets), false);
    await this.file.readv(offset, targets);
  }

  async write(offset: number, source: Uint8Array, options?: WriteOptions): Promise<void> {
    await this.writev(offset, [source], options);
  }

  async writev(
    offset: number,
    sources: readonly Uint8Array[],
    options?: WriteOptions,
  ): Promise<void> {
    this.check(offset, totalLength(sources), true);
    await this.file.writev(offset, sources);
    if (options?.fua) await this.file.sync();
  }

  async flush(): Promise<void> {
    if (this.closed) throw new DiskIoError('ECLOSED', `${this.file.path} is closed`);
    if (!this.readOnly) await this.file.sync();
  }

  async discard(offset: number, length: number): Promise<void> {
    this.check(offset, length, true);
    await this.file.zeroFill(offset, length, true);
  }

  async writeZeroes(offset: number, length: number, options?: WriteZeroesOptions): Promise<void> {
    this.check(offset, length, true);
    await this.file.zeroFill(offset, length, options?.mayUnmap ?? false);
    if (options?.fua) await this.file.sync();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.file.close();
  }
}
