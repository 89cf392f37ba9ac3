import {
  type BlockDevice,
  checkRange,
  DiskIoError,
  type WriteOptions,
  type WriteZeroesOptions,
} from './block-device.ts';
import { totalLength } from './vectors.ts';

/**
 * A block device held in memory: the reference backend for tests and the
 * default VM's scratch disk. Discard and write-zeroes simply zero the range.
 */
export class MemoryDisk implements BlockDevice {
  readonly format = 'memory';
  readonly canFlush = true;
  readonly canDiscard = true;
  readonly canWriteZeroes = true;
  readonly identifier: Uint8Array;
  readonly logicalSectorSize: number;
  readonly physicalSectorSize: number;
  readonly readOnly: boolean;
  readonly data: Uint8Array;
  private closed = false;

  constructor(
    readonly size: number,
    options: {
      logicalSectorSize?: number;
      physicalSectorSize?: number;
      readOnly?: boolean;
      identifier?: Uint8Array;
      contents?: Uint8Array;
    } = {},
  ) {
    this.logicalSectorSize = options.logicalSectorSize ?? 512;
    this.physicalSectorSize = options.physicalSectorSize ?? this.logicalSectorSize;
    if (!Number.isSafeInteger(size) || size < 0 || size % this.logicalSectorSize !== 0) {
      throw new DiskIoError(
        'EINVAL',
        `memory disk size ${size} is not a multiple of ${this.logicalSectorSize}`,
      );
    }
    this.readOnly = options.readOnly ?? false;
    this.identifier = options.identifier ?? crypto.getRandomValues(new Uint8Array(16));
    this.data = new Uint8Array(size);
    if (options.contents) this.data.set(options.contents.subarray(0, size));
  }

  private check(offset: number, length: number, writing: boolean): void {
    if (this.closed) throw new DiskIoError('ECLOSED', 'memory disk is closed', offset);
    checkRange(this, offset, length);
    if (writing && this.readOnly)
      throw new DiskIoError('EROFS', 'memory disk is read-only', offset);
  }

  async read(offset: number, target: Uint8Array): Promise<void> {
    this.check(offset, target.length, false);
    target.set(this.data.subarray(offset, offset + target.length));
  }

  async readv(offset: number, targets: readonly Uint8Array[]): Promise<void> {
    let at = offset;
    for (const t of targets) {
      await this.read(at, t);
      at += t.length;
    }
  }

  async write(offset: number, source: Uint8Array, _options?: WriteOptions): Promise<void> {
    this.check(offset, source.length, true);
    this.data.set(source, offset);
  }

  async writev(
    offset: number,
    sources: readonly Uint8Array[],
    options?: WriteOptions,
  ): Promise<void> {
    this.check(offset, totalLength(sources), true);
    let at = offset;
    for (const s of sources) {
      await this.write(at, s, options);
      at += s.length;
    }
  }

  async flush(): Promise<void> {
    if (this.closed) throw new DiskIoError('ECLOSED', 'memory disk is closed');
  }

  async discard(offset: number, length: number): Promise<void> {
    this.check(offset, length, true);
    this.data.fill(0, offset, offset + length);
  }

  async writeZeroes(offset: number, length: number, _options?: WriteZeroesOptions): Promise<void> {
    this.check(offset, length, true);
    this.data.fill(0, offset, offset + length);
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}
