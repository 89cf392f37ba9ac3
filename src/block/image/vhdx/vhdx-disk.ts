import { guidToBytes, NULL_GUID } from '../../../wire/index.ts';
import {
  type BlockDevice,
  DiskIoError,
  ImageFormatError,
  type WriteOptions,
  type WriteZeroesOptions,
} from '../../block-device.ts';
import { OperationGate } from '../../concurrency.ts';
import { atVirtual, checkRequest } from '../../request-errors.ts';
import { totalLength } from '../../vectors.ts';
import { ImageFile } from '../image-file.ts';
import { FileSpace } from './allocation.ts';
import { type Bat, type BatGeometry, payloadEntryIndex } from './bat.ts';
import { MiB } from './format.ts';
import { HeaderWriter } from './header-writer.ts';
import { Journal } from './journal.ts';
import { type LogReplayMode, readVhdxLayout, type VhdxLayout } from './layout.ts';
import { openParent } from './parent-disk.ts';
import { type PayloadSource, readPayload } from './payload-reader.ts';
import { PayloadWriter } from './payload-writer.ts';
import { type ZeroTarget, zeroPayload } from './payload-zeroing.ts';
import { SectorBitmaps } from './sector-bitmap.ts';

export interface VhdxOpenOptions {
  readonly readOnly?: boolean;
  /**
   * A read-only open of an image with a pending log replays it in memory
   * ('memory', the default: the file is not touched) or refuses ('refuse').
   * A writable open always replays it into the file first.
   */
  readonly readOnlyReplay?: 'memory' | 'refuse';
}

/**
 * A VHDX image ([MS-VHDX]) as a block device: fixed, dynamic and
 * differencing; reads and writes. Blocks are allocated on first write
 * (1 MiB-aligned, reusing unused space inside the file first, else at the
 * end); BAT and sector bitmap changes go through the log (see Journal).
 * The first change of a writable open writes new FileWriteGuid,
 * DataWriteGuid and LogGuid into the headers; a clean close clears LogGuid.
 *
 * Writes, discards and write-zeroes must be aligned to the logical sector
 * size (a differencing disk tracks presence per sector); reads may be
 * unaligned. The read path is in payload-reader.ts, the write path in
 * payload-writer.ts, discard and write-zeroes in payload-zeroing.ts.
 */
export class VhdxDisk implements BlockDevice {
  readonly format = 'vhdx';
  readonly canFlush = true;
  readonly canDiscard: boolean;
  readonly canWriteZeroes: boolean;
  readonly size: number;
  readonly logicalSectorSize: number;
  readonly physicalSectorSize: number;
  readonly identifier: Uint8Array;

  private readonly bat: Bat;
  private readonly geometry: BatGeometry;
  private readonly headers: HeaderWriter;
  private readonly journal: Journal;
  private readonly source: PayloadSource;
  private readonly writer: PayloadWriter;
  private readonly zeroing: ZeroTarget;
  private readonly gate = new OperationGate();
  private session: Promise<void> | null = null;
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly file: ImageFile,
    readonly layout: VhdxLayout,
    readonly readOnly: boolean,
    readonly parent: BlockDevice | null,
    readonly parentPath: string | null,
  ) {
    const m = layout.metadata;
    this.size = m.virtualDiskSize;
    this.logicalSectorSize = m.logicalSectorSize;
    this.physicalSectorSize = m.physicalSectorSize;
    this.identifier = guidToBytes(m.page83);
    this.canDiscard = !readOnly;
    this.canWriteZeroes = !readOnly;
    this.bat = layout.bat;
    this.geometry = layout.geometry;
    this.headers = new HeaderWriter(file, layout.current);
    const space = new FileSpace(file, layout.extents, layout.fileSize, m.leaveBlocksAllocated);
    const bitmaps = m.hasParent ? new SectorBitmaps(file, layout.bat) : null;
    this.journal = new Journal({
      file,
      logOffset: layout.current.header.logOffset,
      logLength: layout.current.header.logLength,
      sectorBytes: (offset) =>
        this.bat.containsSector(offset)
          ? this.bat.sectorBytes(offset)
          : bitmaps!.sectorBytes(offset),
      logGuid: () => this.headers.header.logGuid,
      fileLength: () => space.length,
    });
    this.source = { file, bat: layout.bat, parent, bitmaps };
    this.writer = new PayloadWriter(this.source, this.journal, space);
    this.zeroing = {
      ...this.source,
      journal: this.journal,
      writer: this.writer,
      leaveBlocksAllocated: m.leaveBlocksAllocated,
    };
  }

  static async open(path: string, options: VhdxOpenOptions = {}): Promise<VhdxDisk> {
    return VhdxDisk.openAt(path, options, 0);
  }

  private static async openAt(
    path: string,
    options: VhdxOpenOptions,
    depth: number,
  ): Promise<VhdxDisk> {
    const readOnly = options.readOnly ?? false;
    const replay: LogReplayMode = readOnly ? (options.readOnlyReplay ?? 'memory') : 'apply';
    const file = await ImageFile.open(path, readOnly);
    let parent: BlockDevice | null = null;
    try {
      const layout = await readVhdxLayout(file, replay);
      if (!readOnly && layout.current.header.logLength < MiB) {
        throw new ImageFormatError(
          'VHDX log',
          `the log is ${layout.current.header.logLength} bytes; writing needs a log of at least 1 MiB (open it read-only)`,
        );
      }
      let parentPath: string | null = null;
      if (layout.metadata.hasParent) {
        const found = await openParent(path, layout.metadata, depth, (p, d) =>
          VhdxDisk.openAt(p, { readOnly: true }, d),
        );
        parent = found.disk;
        parentPath = found.path;
      }
      return new VhdxDisk(path, file, layout, readOnly, parent, parentPath);
    } catch (error) {
      await parent?.close();
      await file.close();
      throw error;
    }
  }

  /** The current header's GUIDs. */
  get guids(): { fileWrite: string; dataWrite: string; log: string; page83: string } {
    const h = this.headers.header;
    return {
      fileWrite: h.fileWriteGuid,
      dataWrite: h.dataWriteGuid,
      log: h.logGuid,
      page83: this.layout.metadata.page83,
    };
  }

  get blockSize(): number {
    return this.geometry.blockSize;
  }

  /** How many payload blocks are in each state. */
  blockStateCounts(): Map<number, number> {
    const counts = new Map<number, number>();
    for (let b = 0; b < this.geometry.payloadBlocks; b++) {
      const s = this.bat.state(payloadEntryIndex(this.geometry, b));
      counts.set(s, (counts.get(s) ?? 0) + 1);
    }
    return counts;
  }

  async allocatedBytes(): Promise<number> {
    return this.file.allocatedBytes();
  }

  private check(offset: number, length: number, writing: boolean): void {
    checkRequest(this, this.path, this.closed, offset, length, writing ? 'sector write' : 'read');
  }

  async read(offset: number, target: Uint8Array): Promise<void> {
    return this.readv(offset, [target]);
  }

  async readv(offset: number, targets: readonly Uint8Array[]): Promise<void> {
    const length = totalLength(targets);
    this.check(offset, length, false);
    return this.gate.run(() => readPayload(this.source, offset, length, targets));
  }

  async write(offset: number, source: Uint8Array, options?: WriteOptions): Promise<void> {
    return this.writev(offset, [source], options);
  }

  async writev(
    offset: number,
    sources: readonly Uint8Array[],
    options?: WriteOptions,
  ): Promise<void> {
    const length = totalLength(sources);
    this.check(offset, length, true);
    return this.gate.run(async () => {
      await this.beginModification().catch((e) => atVirtual(e, offset));
      await this.writer.writeRange(offset, length, sources);
      if (options?.fua) await this.durable().catch((e) => atVirtual(e, offset));
    });
  }

  /** The first change of this open: new FileWriteGuid, DataWriteGuid and LogGuid. */
  private beginModification(): Promise<void> {
    if (!this.session) {
      this.session = this.headers.update({
        fileWriteGuid: crypto.randomUUID(),
        dataWriteGuid: crypto.randomUUID(),
        logGuid: crypto.randomUUID(),
      });
      this.session.catch(() => {
        this.session = null;
      });
    }
    return this.session;
  }

  private async durable(): Promise<void> {
    await this.journal.commit();
    await this.file.sync();
  }

  async flush(): Promise<void> {
    if (this.closed) return Promise.reject(new DiskIoError('ECLOSED', `${this.path} is closed`));
    if (this.readOnly || !this.session) return Promise.resolve();
    return this.gate.run(() => this.durable());
  }

  async discard(offset: number, length: number): Promise<void> {
    this.check(offset, length, true);
    return this.gate
      .run(async () => {
        await this.beginModification();
        await zeroPayload(this.zeroing, offset, length, 'discard');
      })
      .catch((e) => atVirtual(e, offset));
  }

  async writeZeroes(offset: number, length: number, options?: WriteZeroesOptions): Promise<void> {
    this.check(offset, length, true);
    return this.gate
      .run(async () => {
        await this.beginModification();
        await zeroPayload(this.zeroing, offset, length, options?.mayUnmap ? 'unmap' : 'zero');
        if (options?.fua) await this.durable();
      })
      .catch((e) => atVirtual(e, offset));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.gate.drain();
    try {
      if (this.session) {
        await this.session;
        await this.durable();
        await this.headers.update({ logGuid: NULL_GUID });
      }
    } finally {
      await this.parent?.close();
      await this.file.close();
    }
  }
}
