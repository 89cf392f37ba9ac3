import { access } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { guidToBytes, NULL_GUID } from '../../../wire/index.ts';
import {
  type BlockDevice,
  checkRange,
  DiskIoError,
  ImageFormatError,
  type WriteOptions,
  type WriteZeroesOptions,
} from '../block-device.ts';
import { KeyedLock, OperationGate } from '../concurrency.ts';
import { ImageFile } from '../image-file.ts';
import { sliceVectors, totalLength } from '../vectors.ts';
import { BlockAllocator } from './allocation.ts';
import {
  type Bat,
  type BatGeometry,
  bitmapEntryIndex,
  hasPayload,
  payloadEntryIndex,
} from './bat.ts';
import {
  MiB,
  PAYLOAD_BLOCK_FULLY_PRESENT,
  PAYLOAD_BLOCK_NOT_PRESENT,
  PAYLOAD_BLOCK_PARTIALLY_PRESENT,
  PAYLOAD_BLOCK_UNMAPPED,
  PAYLOAD_BLOCK_ZERO,
  SB_BLOCK_PRESENT,
  SECTOR_BITMAP_BLOCK_SIZE,
  SECTORS_PER_BITMAP_BLOCK,
} from './format.ts';
import { HeaderWriter } from './header-writer.ts';
import { Journal } from './journal.ts';
import { type LogReplayMode, readVhdxLayout, type VhdxLayout } from './layout.ts';
import { parseLinkage } from './parent-locator.ts';
import { bitRuns, SectorBitmaps, setBits } from './sector-bitmap.ts';

export interface VhdxOpenOptions {
  readonly readOnly?: boolean;
  /**
   * A read-only open of an image with a pending log replays it in memory
   * ('memory', the default: the file is not touched) or refuses ('refuse').
   * A writable open always replays it into the file first.
   */
  readonly readOnlyReplay?: 'memory' | 'refuse';
}

/** How deep a chain of differencing disks may go. */
const MAX_CHAIN_DEPTH = 16;
const ZEROS = new Uint8Array(MiB);

/** Turns a file-level I/O error into one carrying the virtual offset it concerns. */
function atVirtual(error: unknown, offset: number): never {
  if (error instanceof DiskIoError) throw new DiskIoError(error.code, error.message, offset);
  throw error;
}

/** One piece of a request, inside one payload block. */
interface Span {
  readonly block: number;
  readonly inBlock: number;
  readonly virtualOffset: number;
  readonly length: number;
  /** Offset of the piece within the request. */
  readonly at: number;
}

function* spans(g: BatGeometry, offset: number, length: number): Generator<Span> {
  let done = 0;
  while (done < length) {
    const pos = offset + done;
    const block = Math.floor(pos / g.blockSize);
    const inBlock = pos - block * g.blockSize;
    const n = Math.min(g.blockSize - inBlock, length - done);
    yield { block, inBlock, virtualOffset: pos, length: n, at: done };
    done += n;
  }
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
 * unaligned.
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
  private readonly allocator: BlockAllocator;
  private readonly journal: Journal;
  private readonly bitmaps: SectorBitmaps | null;
  private readonly locks = new KeyedLock<string>();
  private readonly gate = new OperationGate();
  private session: Promise<void> | null = null;
  private grown: Promise<void> = Promise.resolve();
  private fileLength: number;
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
    this.allocator = new BlockAllocator(layout.extents, layout.fileSize);
    this.fileLength = layout.fileSize;
    this.bitmaps = m.hasParent ? new SectorBitmaps(file, layout.bat) : null;
    this.journal = new Journal({
      file,
      logOffset: layout.current.header.logOffset,
      logLength: layout.current.header.logLength,
      sectorBytes: (offset) =>
        this.bat.containsSector(offset)
          ? this.bat.sectorBytes(offset)
          : this.bitmaps!.sectorBytes(offset),
      logGuid: () => this.headers.header.logGuid,
      fileLength: () => this.fileLength,
    });
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
        if (depth >= MAX_CHAIN_DEPTH) {
          throw new ImageFormatError(
            'VHDX parent locator',
            `differencing chain deeper than ${MAX_CHAIN_DEPTH}`,
          );
        }
        const found = await VhdxDisk.openParent(path, layout, depth);
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
    if (this.closed) throw new DiskIoError('ECLOSED', `${this.path} is closed`, offset);
    checkRange(this, offset, length);
    if (!writing) return;
    if (this.readOnly) throw new DiskIoError('EROFS', `${this.path} is open read-only`, offset);
    if (offset % this.logicalSectorSize !== 0 || length % this.logicalSectorSize !== 0) {
      throw new DiskIoError(
        'EINVAL',
        `unaligned request: offset ${offset}, length ${length}, sector size ${this.logicalSectorSize}`,
        offset,
      );
    }
  }

  async read(offset: number, target: Uint8Array): Promise<void> {
    return this.readv(offset, [target]);
  }

  async readv(offset: number, targets: readonly Uint8Array[]): Promise<void> {
    const length = totalLength(targets);
    this.check(offset, length, false);
    return this.gate.run(() => this.readRange(offset, length, targets));
  }

  private async readRange(
    offset: number,
    length: number,
    targets: readonly Uint8Array[],
  ): Promise<void> {
    const g = this.geometry;
    const tasks: Promise<void>[] = [];
    // Present blocks that are contiguous in the file are read with one call.
    let run: { file: number; at: number; length: number; virtual: number } | null = null;
    const flushRun = () => {
      if (!run) return;
      const r = run;
      tasks.push(
        this.file
          .readv(r.file, sliceVectors(targets, r.at, r.length))
          .catch((e) => atVirtual(e, r.virtual)),
      );
      run = null;
    };
    for (const s of spans(g, offset, length)) {
      const index = payloadEntryIndex(g, s.block);
      const state = this.bat.state(index);
      if (state === PAYLOAD_BLOCK_FULLY_PRESENT) {
        const at = this.bat.fileOffset(index) + s.inBlock;
        if (run && run.file + run.length === at) run.length += s.length;
        else {
          flushRun();
          run = { file: at, at: s.at, length: s.length, virtual: s.virtualOffset };
        }
        continue;
      }
      flushRun();
      const slice = sliceVectors(targets, s.at, s.length);
      if (state === PAYLOAD_BLOCK_PARTIALLY_PRESENT) {
        tasks.push(this.readPartial(index, s, slice));
      } else if (state === PAYLOAD_BLOCK_NOT_PRESENT && this.parent) {
        tasks.push(this.readParent(s.virtualOffset, s.length, slice));
      } else {
        for (const t of slice) t.fill(0);
      }
    }
    flushRun();
    await Promise.all(tasks);
  }

  private async readParent(
    offset: number,
    length: number,
    targets: readonly Uint8Array[],
  ): Promise<void> {
    const parent = this.parent!;
    const inside = Math.max(0, Math.min(length, parent.size - offset));
    if (inside > 0) await parent.readv(offset, sliceVectors(targets, 0, inside));
    if (inside < length) for (const t of sliceVectors(targets, inside, length - inside)) t.fill(0);
  }

  /** Reads a partially present block sector run by sector run: child or parent per the bitmap. */
  private async readPartial(index: number, s: Span, targets: readonly Uint8Array[]): Promise<void> {
    const sector = this.logicalSectorSize;
    const chunk = Math.floor(s.block / this.geometry.chunkRatio);
    const bits = await this.bitmapOf(chunk, index);
    const firstSector = Math.floor(s.virtualOffset / sector);
    const endSector = Math.ceil((s.virtualOffset + s.length) / sector);
    const base = chunk * SECTORS_PER_BITMAP_BLOCK;
    const blockFile = this.bat.fileOffset(index);
    const blockStart = s.block * this.geometry.blockSize;
    const tasks: Promise<void>[] = [];
    for (const [first, count, present] of bitRuns(
      bits,
      firstSector - base,
      endSector - firstSector,
    )) {
      const from = Math.max(s.virtualOffset, (first + base) * sector);
      const to = Math.min(s.virtualOffset + s.length, (first + base + count) * sector);
      const slice = sliceVectors(targets, from - s.virtualOffset, to - from);
      if (present) {
        tasks.push(
          this.file.readv(blockFile + (from - blockStart), slice).catch((e) => atVirtual(e, from)),
        );
      } else {
        tasks.push(this.readParent(from, to - from, slice));
      }
    }
    await Promise.all(tasks);
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
      await this.writeRange(offset, length, sources);
      if (options?.fua) await this.durable().catch((e) => atVirtual(e, offset));
    });
  }

  private async writeRange(
    offset: number,
    length: number,
    sources: readonly Uint8Array[],
  ): Promise<void> {
    const g = this.geometry;
    const tasks: Promise<void>[] = [];
    let run: { file: number; at: number; length: number; virtual: number } | null = null;
    const flushRun = () => {
      if (!run) return;
      const r = run;
      tasks.push(
        this.file
          .writev(r.file, sliceVectors(sources, r.at, r.length))
          .catch((e) => atVirtual(e, r.virtual)),
      );
      run = null;
    };
    for (const s of spans(g, offset, length)) {
      const index = payloadEntryIndex(g, s.block);
      if (this.bat.state(index) === PAYLOAD_BLOCK_FULLY_PRESENT) {
        const at = this.bat.fileOffset(index) + s.inBlock;
        if (run && run.file + run.length === at) run.length += s.length;
        else {
          flushRun();
          run = { file: at, at: s.at, length: s.length, virtual: s.virtualOffset };
        }
        continue;
      }
      flushRun();
      tasks.push(
        this.writeSpan(s, sliceVectors(sources, s.at, s.length)).catch((e) =>
          atVirtual(e, s.virtualOffset),
        ),
      );
    }
    flushRun();
    await Promise.all(tasks);
  }

  /** Writes a piece into one block, allocating the block (and its sector bitmap) if needed. */
  private async writeSpan(s: Span, data: readonly Uint8Array[]): Promise<void> {
    const index = payloadEntryIndex(this.geometry, s.block);
    const chunk = Math.floor(s.block / this.geometry.chunkRatio);
    const inPlace = async (): Promise<void> => {
      const at = this.bat.fileOffset(index) + s.inBlock;
      await this.file.writev(at, data).catch((e) => atVirtual(e, s.virtualOffset));
    };
    const state = this.bat.state(index);
    if (state === PAYLOAD_BLOCK_FULLY_PRESENT) return inPlace();
    if (state === PAYLOAD_BLOCK_PARTIALLY_PRESENT) {
      const bits = await this.bitmapOf(chunk, index);
      await inPlace();
      if (this.markPresent(s, chunk, bits)) await this.journal.commit();
      return;
    }
    let commit = false;
    await this.locks.run(`block ${s.block}`, async () => {
      const now = this.bat.state(index);
      if (now === PAYLOAD_BLOCK_FULLY_PRESENT) return inPlace();
      if (now === PAYLOAD_BLOCK_PARTIALLY_PRESENT) {
        const bits = await this.bitmapOf(chunk, index);
        await inPlace();
        commit = this.markPresent(s, chunk, bits);
        return;
      }
      // A not-present block of a differencing disk reads from the parent; on
      // its first write it becomes partially present, tracked per sector.
      const fromParent = this.parent !== null && now === PAYLOAD_BLOCK_NOT_PRESENT;
      const bits = fromParent ? await this.ensureBitmap(chunk) : null;
      const blockOffset = await this.allocate(this.geometry.blockSize);
      await this.file
        .writev(blockOffset + s.inBlock, data)
        .catch((e) => atVirtual(e, s.virtualOffset));
      // The entry and the bits change together, once the data is written.
      if (bits) {
        this.journal.markDirty(this.bat.set(index, PAYLOAD_BLOCK_PARTIALLY_PRESENT, blockOffset));
        this.markPresent(s, chunk, bits);
      } else {
        this.journal.markDirty(this.bat.set(index, PAYLOAD_BLOCK_FULLY_PRESENT, blockOffset));
      }
      commit = true;
    });
    if (commit) await this.journal.commit();
  }

  private async bitmapOf(chunk: number, index: number): Promise<Uint8Array> {
    const bits = await this.bitmaps!.get(chunk);
    if (!bits) {
      throw new ImageFormatError(
        `VHDX BAT entry ${index}`,
        `sector bitmap block ${chunk} is missing`,
      );
    }
    return bits;
  }

  /** Sets the sector bits of a span in its chunk's bitmap; true when any changed. */
  private markPresent(s: Span, chunk: number, bits: Uint8Array): boolean {
    const sector = this.logicalSectorSize;
    const first = Math.floor(s.virtualOffset / sector) - chunk * SECTORS_PER_BITMAP_BLOCK;
    const base = this.bitmaps!.fileOffsetOf(chunk);
    let changed = false;
    for (const byteOffset of setBits(bits, first, s.length / sector)) {
      this.journal.markDirty(base + byteOffset);
      changed = true;
    }
    return changed;
  }

  /** A chunk's sector bitmap, allocating an all-zero bitmap block when it has none. */
  private ensureBitmap(chunk: number): Promise<Uint8Array> {
    return this.locks.run(`bitmap ${chunk}`, async () => {
      const existing = await this.bitmaps!.get(chunk);
      if (existing) return existing;
      const offset = await this.allocate(SECTOR_BITMAP_BLOCK_SIZE);
      const bits = this.bitmaps!.adopt(chunk, offset);
      this.journal.markDirty(
        this.bat.set(bitmapEntryIndex(this.geometry, chunk), SB_BLOCK_PRESENT, offset),
      );
      return bits;
    });
  }

  /** Reserves a 1 MiB-aligned range; it reads as zeros when this returns. */
  private async allocate(size: number): Promise<number> {
    const { offset, fresh } = this.allocator.take(size);
    if (fresh) {
      await this.growTo(offset + size);
      if (this.layout.metadata.leaveBlocksAllocated) await this.file.preallocate(offset, size);
    } else {
      await this.file.zeroFill(offset, size, !this.layout.metadata.leaveBlocksAllocated);
    }
    return offset;
  }

  /** Extends the file to at least `length`; extensions run in order so the file never shrinks. */
  private growTo(length: number): Promise<void> {
    const next = this.grown.then(async () => {
      if (length > this.fileLength) {
        await this.file.truncate(length);
        this.fileLength = length;
      }
    });
    this.grown = next.catch(() => undefined);
    return next;
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
        await this.zeroRange(offset, length, 'discard');
      })
      .catch((e) => atVirtual(e, offset));
  }

  async writeZeroes(offset: number, length: number, options?: WriteZeroesOptions): Promise<void> {
    this.check(offset, length, true);
    return this.gate
      .run(async () => {
        await this.beginModification();
        await this.zeroRange(offset, length, options?.mayUnmap ? 'unmap' : 'zero');
        if (options?.fua) await this.durable();
      })
      .catch((e) => atVirtual(e, offset));
  }

  /**
   * Zeroes a range. Whole blocks are deallocated (state UNMAPPED for a
   * discard, ZERO for write-zeroes that may unmap) unless the file keeps its
   * blocks allocated (a fixed disk); their space is punched out of the file
   * once the new BAT is durable. Parts of blocks are zeroed in place.
   */
  private async zeroRange(
    offset: number,
    length: number,
    mode: 'discard' | 'unmap' | 'zero',
  ): Promise<void> {
    const g = this.geometry;
    const keep = this.layout.metadata.leaveBlocksAllocated || mode === 'zero';
    const freed: number[] = [];
    const tasks: Promise<void>[] = [];
    for (const s of spans(g, offset, length)) {
      const index = payloadEntryIndex(g, s.block);
      const used = Math.min(g.blockSize, this.size - s.block * g.blockSize);
      const whole = s.inBlock === 0 && s.length === used;
      const state = this.bat.state(index);
      if (whole && (!keep || (!hasPayload(state) && this.parent))) {
        if (state === PAYLOAD_BLOCK_NOT_PRESENT && !this.parent) continue;
        tasks.push(
          this.locks.run(`block ${s.block}`, async () => {
            const now = this.bat.state(index);
            if (hasPayload(now)) freed.push(this.bat.fileOffset(index));
            const next = mode === 'discard' ? PAYLOAD_BLOCK_UNMAPPED : PAYLOAD_BLOCK_ZERO;
            if (now !== next) this.journal.markDirty(this.bat.set(index, next, 0));
          }),
        );
        continue;
      }
      const deallocate = mode !== 'zero' && !this.layout.metadata.leaveBlocksAllocated;
      tasks.push(this.zeroSpan(s, index, deallocate).catch((e) => atVirtual(e, s.virtualOffset)));
    }
    await Promise.all(tasks);
    await this.journal.commit();
    await Promise.all(freed.map((o) => this.file.punchHole(o, g.blockSize)));
  }

  private async zeroSpan(s: Span, index: number, deallocate: boolean): Promise<void> {
    const state = this.bat.state(index);
    if (state === PAYLOAD_BLOCK_FULLY_PRESENT || state === PAYLOAD_BLOCK_PARTIALLY_PRESENT) {
      const at = this.bat.fileOffset(index) + s.inBlock;
      if (state === PAYLOAD_BLOCK_FULLY_PRESENT) {
        await this.file
          .zeroFill(at, s.length, deallocate)
          .catch((e) => atVirtual(e, s.virtualOffset));
        return;
      }
      const chunk = Math.floor(s.block / this.geometry.chunkRatio);
      const bits = await this.bitmapOf(chunk, index);
      await this.file
        .zeroFill(at, s.length, deallocate)
        .catch((e) => atVirtual(e, s.virtualOffset));
      if (this.markPresent(s, chunk, bits)) await this.journal.commit();
      return;
    }
    if (state === PAYLOAD_BLOCK_NOT_PRESENT && this.parent) {
      // The parent's data shows through here: write real zeros into the child.
      const pieces: Uint8Array[] = [];
      for (let n = s.length; n > 0; n -= ZEROS.length)
        pieces.push(ZEROS.subarray(0, Math.min(n, ZEROS.length)));
      await this.writeSpan(s, pieces);
    }
    // Other states already read as zeros.
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

  /**
   * Finds and opens the parent of a differencing disk ([MS-VHDX] 2.6.2.6):
   * relative_path first (relative to the child's directory, backslashes as
   * separators), then absolute_win32_path when it is a path of this system;
   * the parent's DataWriteGuid must equal parent_linkage (or parent_linkage2).
   */
  private static async openParent(
    childPath: string,
    layout: VhdxLayout,
    depth: number,
  ): Promise<{ disk: VhdxDisk; path: string }> {
    const S = 'VHDX parent locator';
    const entries = layout.metadata.parentLocator!.entries;
    const linkageText = entries.get('parent_linkage');
    const linkage = linkageText ? parseLinkage(linkageText) : null;
    if (!linkage) {
      throw new ImageFormatError(
        S,
        `parent_linkage ${JSON.stringify(linkageText ?? null)} is missing or not a GUID`,
      );
    }
    const linkage2Text = entries.get('parent_linkage2');
    const linkage2 = linkage2Text ? parseLinkage(linkage2Text) : null;
    const tried: string[] = [];
    const candidates: string[] = [];
    const relative = entries.get('relative_path');
    if (relative) {
      const p = resolve(dirname(childPath), relative.replaceAll('\\', '/'));
      candidates.push(p);
      tried.push(`relative_path ${JSON.stringify(relative)} (${p})`);
    }
    const absolute = entries.get('absolute_win32_path');
    if (absolute) {
      if (isAbsolute(absolute)) candidates.push(absolute);
      tried.push(`absolute_win32_path ${JSON.stringify(absolute)}`);
    }
    let found: string | null = null;
    for (const c of candidates) {
      try {
        await access(c);
        found = c;
        break;
      } catch {
        // try the next one
      }
    }
    if (!found) {
      throw new ImageFormatError(
        S,
        `parent not found; tried ${tried.length > 0 ? tried.join(', ') : 'no usable path'}`,
      );
    }
    const disk = await VhdxDisk.openAt(found, { readOnly: true }, depth + 1);
    const actual = disk.guids.dataWrite;
    if (actual !== linkage && actual !== linkage2) {
      await disk.close();
      throw new ImageFormatError(
        S,
        `parent ${found} has DataWriteGuid {${actual}} but parent_linkage is {${linkage}}: the parent changed after this differencing disk was created`,
      );
    }
    if (disk.logicalSectorSize !== layout.metadata.logicalSectorSize) {
      await disk.close();
      throw new ImageFormatError(
        S,
        `parent ${found} has ${disk.logicalSectorSize}-byte sectors, this disk ${layout.metadata.logicalSectorSize}`,
      );
    }
    return { disk, path: found };
  }
}
