/**
 * A disk as the guest sees it through storvsc: a BlockDevice whose reads
 * and writes become READ(16)/WRITE(16) requests (flush: SYNCHRONIZE
 * CACHE(16); discard: UNMAP; zeroing: WRITE SAME(16) without a data block)
 * with their data in guest-memory buffers the host reads and writes in
 * place. A transfer larger than the controller's maximum is split into
 * requests that run at once.
 *
 * Commands are retried as guest-retry.ts says (unit attentions, BUSY / TASK
 * SET FULL, ABORTED COMMAND); INVALID_LUN means the disk was removed; other
 * failures become the DiskIoErrors of guest-scsi-errors.ts. The disk itself
 * is found and measured by guest-probe.ts.
 */
import {
  type BlockDevice,
  checkRange,
  DiskIoError,
  type WriteOptions,
  type WriteZeroesOptions,
} from '../../../block/block-device.ts';
import { sliceVectors, totalLength } from '../../../block/vectors.ts';
import { type DataDirection, ScsiOp } from '../../../scsi/codes.ts';
import * as cdbs from '../../../scsi/initiator/cdb-builders.ts';
import type { GuestBuffer, GuestBufferPool } from './buffers.ts';
import { withRetries } from './retry.ts';
import { diskIoErrorFor } from './scsi-errors.ts';
import type { SrbCommand, SrbResult } from './storvsc-channel.ts';

/** What a guest disk needs from its controller. */
export interface ScsiTransport {
  readonly buffers: GuestBufferPool | undefined;
  readonly maxTransfer: number;
  submit(command: SrbCommand): Promise<SrbResult>;
  command(
    lun: number,
    cdb: Uint8Array,
    allocation: number,
  ): Promise<{ result: SrbResult; data: Uint8Array }>;
  lunGone(lun: number): void;
}

export interface GuestDiskInfo {
  readonly lun: number;
  readonly blocks: number;
  readonly blockSize: number;
  readonly physicalBlockSize: number;
  readonly readOnly: boolean;
  readonly vendor: string;
  readonly product: string;
  readonly revision: string;
  readonly serial: string;
  /** 16 bytes from the device identification page. */
  readonly identifier: Uint8Array;
  readonly writeCache: boolean;
  readonly canDiscard: boolean;
  readonly maxTransferBytes: number;
  readonly maxUnmapBlocks: number;
  readonly maxUnmapDescriptors: number;
  readonly maxWriteSameBlocks: number;
}

export class GuestScsiDisk implements BlockDevice {
  readonly format = 'storvsc';
  readonly size: number;
  readonly logicalSectorSize: number;
  readonly physicalSectorSize: number;
  readonly readOnly: boolean;
  readonly identifier: Uint8Array;
  readonly canFlush = true;
  readonly canDiscard: boolean;
  readonly canWriteZeroes = true;
  removed = false;
  private closed = false;

  constructor(
    private readonly transport: ScsiTransport,
    readonly info: GuestDiskInfo,
  ) {
    this.size = info.blocks * info.blockSize;
    this.logicalSectorSize = info.blockSize;
    this.physicalSectorSize = info.physicalBlockSize;
    this.readOnly = info.readOnly;
    this.identifier = info.identifier;
    this.canDiscard = info.canDiscard;
  }

  get lun(): number {
    return this.info.lun;
  }

  /** The disk left the bus: every request fails from now on. */
  markRemoved(): void {
    this.removed = true;
  }

  private usable(offset?: number): void {
    if (this.removed) throw new DiskIoError('EIO', `LUN ${this.lun} was removed`, offset);
    if (this.closed) throw new DiskIoError('ECLOSED', `LUN ${this.lun} is closed`, offset);
  }

  private check(offset: number, length: number, writing: boolean): void {
    this.usable(offset);
    checkRange(this, offset, length);
    const bs = this.info.blockSize;
    if (offset % bs !== 0 || length % bs !== 0) {
      throw new DiskIoError(
        'EINVAL',
        `range ${offset}+${length} is not aligned to the ${bs}-byte block`,
        offset,
      );
    }
    if (writing && this.readOnly) {
      throw new DiskIoError('EROFS', `LUN ${this.lun} is write-protected`, offset);
    }
  }

  /** Runs a command and throws a DiskIoError unless it succeeded. */
  private async run(
    what: string,
    cdb: Uint8Array,
    direction: DataDirection,
    buffer: GuestBuffer | undefined,
    offset: number,
  ): Promise<SrbResult> {
    const command: SrbCommand = {
      lun: this.lun,
      cdb,
      direction,
      ...(buffer ? { buffer } : {}),
    };
    const { verdict, result } = await withRetries(() => this.transport.submit(command));
    if (verdict === 'ok') {
      if (buffer && result.transferred < buffer.length) {
        throw new DiskIoError(
          'EIO',
          `${what} on LUN ${this.lun} moved ${result.transferred} of ${buffer.length} bytes`,
          offset + result.transferred,
        );
      }
      return result;
    }
    if (verdict === 'gone') {
      this.transport.lunGone(this.lun);
      throw new DiskIoError('EIO', `LUN ${this.lun} was removed (${what})`, offset);
    }
    throw diskIoErrorFor(what, this.lun, this.info.blockSize, result, offset);
  }

  private pool(): GuestBufferPool {
    const pool = this.transport.buffers;
    if (!pool) throw new DiskIoError('EIO', 'storvsc controller has no I/O buffers');
    return pool;
  }

  // --- reads and writes --------------------------------------------------------

  async read(offset: number, target: Uint8Array): Promise<void> {
    await this.readv(offset, [target]);
  }

  async readv(offset: number, targets: readonly Uint8Array[]): Promise<void> {
    const total = totalLength(targets);
    this.check(offset, total, false);
    const max = this.maxPiece();
    if (total <= max) {
      if (total > 0) await this.readPiece(offset, 0, total, targets);
      return;
    }
    await this.pieces(total, max, (at, length) => this.readPiece(offset, at, length, targets));
  }

  async write(offset: number, source: Uint8Array, options?: WriteOptions): Promise<void> {
    await this.writev(offset, [source], options);
  }

  async writev(
    offset: number,
    sources: readonly Uint8Array[],
    options?: WriteOptions,
  ): Promise<void> {
    const total = totalLength(sources);
    this.check(offset, total, true);
    const fua = options?.fua === true;
    const max = this.maxPiece();
    if (total <= max) {
      if (total > 0) await this.writePiece(offset, 0, total, sources, fua);
      return;
    }
    await this.pieces(total, max, (at, length) =>
      this.writePiece(offset, at, length, sources, fua),
    );
  }

  private maxPiece(): number {
    return Math.min(this.transport.maxTransfer, this.info.maxTransferBytes);
  }

  /** Splits a transfer of `total` bytes into pieces of at most `max`, run at once. */
  private async pieces(
    total: number,
    max: number,
    piece: (at: number, length: number) => Promise<void>,
  ): Promise<void> {
    const work: Promise<void>[] = [];
    for (let at = 0; at < total; at += max) work.push(piece(at, Math.min(max, total - at)));
    const results = await Promise.allSettled(work);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
  }

  private async readPiece(
    offset: number,
    at: number,
    length: number,
    targets: readonly Uint8Array[],
  ): Promise<void> {
    const pending = this.pool().acquire(length);
    const buffer = pending instanceof Promise ? await pending : pending;
    try {
      const lba = (offset + at) / this.info.blockSize;
      const cdb = rw16(ScsiOp.READ_16, lba, length / this.info.blockSize, false);
      await this.run('READ(16)', cdb, 'in', buffer, offset + at);
      scatter(buffer, targets, at, length);
    } finally {
      buffer.release();
    }
  }

  private async writePiece(
    offset: number,
    at: number,
    length: number,
    sources: readonly Uint8Array[],
    fua: boolean,
  ): Promise<void> {
    const pending = this.pool().acquire(length);
    const buffer = pending instanceof Promise ? await pending : pending;
    try {
      gather(buffer, sources, at, length);
      const lba = (offset + at) / this.info.blockSize;
      const cdb = rw16(ScsiOp.WRITE_16, lba, length / this.info.blockSize, fua);
      await this.run('WRITE(16)', cdb, 'out', buffer, offset + at);
    } finally {
      buffer.release();
    }
  }

  async flush(): Promise<void> {
    this.usable();
    await this.run('SYNCHRONIZE CACHE(16)', cdbs.synchronizeCache16(), 'none', undefined, 0);
  }

  async discard(offset: number, length: number): Promise<void> {
    this.check(offset, length, true);
    if (!this.canDiscard) throw new DiskIoError('EINVAL', `LUN ${this.lun} cannot unmap`, offset);
    const bs = this.info.blockSize;
    const perDescriptor = Math.max(1, Math.min(this.info.maxUnmapBlocks, 0xffff_ffff));
    const perCommand = Math.max(1, Math.min(this.info.maxUnmapDescriptors, 64));
    let lba = offset / bs;
    let left = length / bs;
    while (left > 0) {
      const ranges: { lba: number; blocks: number }[] = [];
      let commandBlocks = 0;
      while (left > 0 && ranges.length < perCommand && commandBlocks < perDescriptor) {
        const blocks = Math.min(left, perDescriptor - commandBlocks);
        ranges.push({ lba, blocks });
        lba += blocks;
        left -= blocks;
        commandBlocks += blocks;
      }
      const list = cdbs.unmapParameterList(ranges);
      const buffer = await this.pool().acquire(list.length);
      try {
        buffer.copyIn(list);
        await this.run('UNMAP', cdbs.unmap(list.length), 'out', buffer, ranges[0]!.lba * bs);
      } finally {
        buffer.release();
      }
    }
  }

  async writeZeroes(offset: number, length: number, options?: WriteZeroesOptions): Promise<void> {
    this.check(offset, length, true);
    const bs = this.info.blockSize;
    const step = Math.max(1, Math.min(this.info.maxWriteSameBlocks || 0xffff, 0xffff_ffff));
    let lba = offset / bs;
    let left = length / bs;
    while (left > 0) {
      const blocks = Math.min(left, step);
      const cdb = cdbs.writeSame16({ lba, blocks, unmap: options?.mayUnmap === true, ndob: true });
      await this.run('WRITE SAME(16)', cdb, 'none', undefined, lba * bs);
      lba += blocks;
      left -= blocks;
    }
    if (options?.fua) await this.flush();
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

/**
 * READ(16) / WRITE(16) for the data path (SBC-3 5.16, 5.40), built without
 * BigInt: the LBA is below 2^53 and goes in as two 32-bit halves. (The
 * general builders in scsi/initiator-cdb.ts check and convert through BigInt;
 * here the range was checked already and this runs for every request.)
 */
function rw16(op: number, lba: number, blocks: number, fua: boolean): Uint8Array {
  const cdb = new Uint8Array(16);
  cdb[0] = op;
  cdb[1] = fua ? 0x08 : 0;
  const hi = Math.floor(lba / 0x1_0000_0000);
  const lo = lba >>> 0;
  cdb[2] = hi >>> 24;
  cdb[3] = (hi >>> 16) & 0xff;
  cdb[4] = (hi >>> 8) & 0xff;
  cdb[5] = hi & 0xff;
  cdb[6] = lo >>> 24;
  cdb[7] = (lo >>> 16) & 0xff;
  cdb[8] = (lo >>> 8) & 0xff;
  cdb[9] = lo & 0xff;
  cdb[10] = blocks >>> 24;
  cdb[11] = (blocks >>> 16) & 0xff;
  cdb[12] = (blocks >>> 8) & 0xff;
  cdb[13] = blocks & 0xff;
  return cdb;
}

/** Copies `length` bytes of the buffer to the targets, starting `at` bytes into them. */
function scatter(
  buffer: GuestBuffer,
  targets: readonly Uint8Array[],
  at: number,
  length: number,
): void {
  let from = 0;
  for (const t of sliceVectors(targets, at, length)) {
    buffer.copyOut(t, from);
    from += t.length;
  }
}

/** Copies `length` bytes of the sources, starting `at` bytes into them, into the buffer. */
function gather(
  buffer: GuestBuffer,
  sources: readonly Uint8Array[],
  at: number,
  length: number,
): void {
  let to = 0;
  for (const s of sliceVectors(sources, at, length)) {
    buffer.copyIn(s, to);
    to += s.length;
  }
}
