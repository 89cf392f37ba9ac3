import {
  type BlockDevice,
  DiskIoError,
  ImageFormatError,
  type WriteOptions,
  type WriteZeroesOptions,
} from '../../block-device.ts';
import { type BlockSpan, blockSpans } from '../../block-spans.ts';
import { KeyedLock, OperationGate } from '../../concurrency.ts';
import { checkNoOverlap, type Extent } from '../../extents.ts';
import { atVirtual, checkRequest } from '../../request-errors.ts';
import { sliceVectors, totalLength } from '../../vectors.ts';
import { ImageFile } from '../image-file.ts';
import {
  ascii,
  DISK_TYPE_DIFFERENCING,
  DISK_TYPE_DYNAMIC,
  DISK_TYPE_FIXED,
  DYNAMIC_COOKIE,
  DYNAMIC_HEADER_SIZE,
  FOOTER_CHECKSUM_OFFSET,
  FOOTER_COOKIE,
  FOOTER_SIZE,
  HEADER_CHECKSUM_OFFSET,
  UNUSED_BAT_ENTRY,
  vhdChecksum,
  vhdDynamicHeader,
  vhdFooter,
} from './footer.ts';

export interface VhdFooterInfo {
  readonly diskType: number;
  readonly currentSize: number;
  readonly dataOffset: bigint;
  readonly uniqueId: Uint8Array;
  readonly creatorApplication: string;
  readonly geometry: { cylinders: number; heads: number; sectorsPerTrack: number };
  /** The footer's bytes as read (to rewrite it at the new end of a growing file). */
  readonly bytes: Uint8Array;
}

type FooterResult = { ok: true; footer: VhdFooterInfo } | { ok: false; error: string };

export function parseFooter(bytes: Uint8Array): FooterResult {
  const f = vhdFooter.read(bytes);
  const cookie = ascii(f.cookie);
  if (cookie !== FOOTER_COOKIE)
    return { ok: false, error: `cookie ${JSON.stringify(cookie)} is not "conectix"` };
  const computed = vhdChecksum(bytes.subarray(0, FOOTER_SIZE), FOOTER_CHECKSUM_OFFSET);
  if (computed !== f.checksum) {
    return {
      ok: false,
      error: `checksum mismatch (stored 0x${f.checksum.toString(16)}, computed 0x${computed.toString(16)})`,
    };
  }
  if (f.fileFormatVersion >>> 16 !== 1) {
    return { ok: false, error: `format version 0x${f.fileFormatVersion.toString(16)} is not 1.x` };
  }
  if (f.currentSize > BigInt(Number.MAX_SAFE_INTEGER)) {
    return { ok: false, error: `current size ${f.currentSize} is out of range` };
  }
  return {
    ok: true,
    footer: {
      diskType: f.diskType,
      currentSize: Number(f.currentSize),
      dataOffset: f.dataOffset,
      uniqueId: f.uniqueId,
      creatorApplication: ascii(f.creatorApplication),
      geometry: { cylinders: f.cylinders, heads: f.heads, sectorsPerTrack: f.sectorsPerTrack },
      bytes: bytes.slice(0, FOOTER_SIZE),
    },
  };
}

/** The largest BAT loaded into memory (64M blocks: 128 TiB in 2 MiB blocks). */
const MAX_LOADED_BAT = 256 * 1024 * 1024;

export interface VhdDynamicInfo {
  readonly tableOffset: number;
  readonly maxTableEntries: number;
  readonly blockSize: number;
  /** Bytes of the sector bitmap that precedes each block's data (padded to 512). */
  readonly bitmapSize: number;
}

/**
 * The layout of a VHD as read and checked: footer (the copy at offset 0 is
 * used when the one at the end is damaged), and for a dynamic disk its
 * header, BAT and blocks, which must lie before the footer without overlap.
 */
export interface VhdLayout {
  readonly fileSize: number;
  readonly footer: VhdFooterInfo;
  /** File offset of the footer that ends the file. */
  readonly footerOffset: number;
  readonly footerError: string | null;
  readonly dynamic: VhdDynamicInfo | null;
  readonly bat: Uint32Array | null;
  readonly extents: readonly Extent[];
}

export async function readVhdLayout(file: ImageFile): Promise<VhdLayout> {
  const fileSize = await file.size();
  if (fileSize < FOOTER_SIZE) {
    throw new ImageFormatError('VHD footer', `the file is only ${fileSize} bytes`);
  }
  const footerOffset = fileSize - FOOTER_SIZE;
  const end = parseFooter(await file.readStructure(footerOffset, FOOTER_SIZE, 'VHD footer'));
  let footer: VhdFooterInfo;
  let footerError: string | null = null;
  if (end.ok) footer = end.footer;
  else {
    const copy = parseFooter(await file.readStructure(0, FOOTER_SIZE, 'VHD footer copy'));
    if (!copy.ok || copy.footer.diskType !== DISK_TYPE_DYNAMIC) {
      throw new ImageFormatError('VHD footer', end.error);
    }
    footer = copy.footer;
    footerError = end.error;
  }
  if (footer.diskType === DISK_TYPE_DIFFERENCING) {
    throw new ImageFormatError('VHD footer', 'differencing VHDs are not supported (use VHDX)');
  }
  if (footer.diskType !== DISK_TYPE_FIXED && footer.diskType !== DISK_TYPE_DYNAMIC) {
    throw new ImageFormatError(
      'VHD footer',
      `disk type ${footer.diskType} is not fixed (2) or dynamic (3)`,
    );
  }
  const size = footer.currentSize;
  if (size === 0 || size % 512 !== 0) {
    throw new ImageFormatError(
      'VHD footer',
      `current size ${size} is not a positive multiple of 512`,
    );
  }
  if (footer.diskType === DISK_TYPE_FIXED) {
    if (size > footerOffset) {
      throw new ImageFormatError(
        'VHD footer',
        `a fixed disk of ${size} bytes needs a file of ${size + FOOTER_SIZE} bytes, the file has ${fileSize} (truncated?)`,
      );
    }
    return { fileSize, footer, footerOffset, footerError, dynamic: null, bat: null, extents: [] };
  }

  if (
    footer.dataOffset > BigInt(footerOffset - DYNAMIC_HEADER_SIZE) ||
    footer.dataOffset % 512n !== 0n
  ) {
    throw new ImageFormatError(
      'VHD footer',
      `dynamic header offset ${footer.dataOffset} does not fit in the ${fileSize}-byte file`,
    );
  }
  const headerOffset = Number(footer.dataOffset);
  const headerBytes = await file.readStructure(
    headerOffset,
    DYNAMIC_HEADER_SIZE,
    'VHD dynamic header',
  );
  const h = vhdDynamicHeader.read(headerBytes);
  const S = 'VHD dynamic header';
  if (ascii(h.cookie) !== DYNAMIC_COOKIE) {
    throw new ImageFormatError(S, `cookie ${JSON.stringify(ascii(h.cookie))} is not "cxsparse"`);
  }
  const computed = vhdChecksum(headerBytes, HEADER_CHECKSUM_OFFSET);
  if (computed !== h.checksum) {
    throw new ImageFormatError(
      S,
      `checksum mismatch (stored 0x${h.checksum.toString(16)}, computed 0x${computed.toString(16)})`,
    );
  }
  if (h.headerVersion >>> 16 !== 1) {
    throw new ImageFormatError(S, `header version 0x${h.headerVersion.toString(16)} is not 1.x`);
  }
  const blockSize = h.blockSize;
  if (blockSize < 4096 || blockSize > 256 * 1024 * 1024 || (blockSize & (blockSize - 1)) !== 0) {
    throw new ImageFormatError(
      S,
      `block size ${blockSize} is not a power of two from 4 KiB to 256 MiB`,
    );
  }
  const blocks = Math.ceil(size / blockSize);
  if (h.maxTableEntries < blocks) {
    throw new ImageFormatError(
      S,
      `the BAT has ${h.maxTableEntries} entries but ${size} bytes in ${blockSize}-byte blocks need ${blocks}`,
    );
  }
  const batBytes = Math.ceil((h.maxTableEntries * 4) / 512) * 512;
  if (h.tableOffset % 512n !== 0n || h.tableOffset + BigInt(batBytes) > BigInt(footerOffset)) {
    throw new ImageFormatError(
      'VHD BAT',
      `${h.maxTableEntries} entries at file offset ${h.tableOffset} do not fit before the footer at ${footerOffset}`,
    );
  }
  const tableOffset = Number(h.tableOffset);
  // Only the entries the disk uses are loaded (whole 512-byte sectors of them).
  const loadBytes = Math.ceil((blocks * 4) / 512) * 512;
  if (loadBytes > MAX_LOADED_BAT) {
    throw new ImageFormatError(
      'VHD BAT',
      `${blocks} blocks of ${blockSize} bytes need a ${loadBytes}-byte BAT; at most ${MAX_LOADED_BAT} is supported`,
    );
  }
  const raw = await file.readStructure(tableOffset, loadBytes, 'VHD BAT');
  const bat = new Uint32Array(loadBytes / 4);
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  for (let i = 0; i < bat.length; i++) bat[i] = view.getUint32(i * 4, false);
  const bitmapSize = Math.ceil(blockSize / 512 / 8 / 512) * 512;

  const extents: Extent[] = [
    { start: headerOffset, length: DYNAMIC_HEADER_SIZE, what: 'dynamic header' },
    { start: tableOffset, length: batBytes, what: 'BAT' },
  ];
  if (headerOffset >= FOOTER_SIZE)
    extents.push({ start: 0, length: FOOTER_SIZE, what: 'footer copy' });
  for (let b = 0; b < blocks; b++) {
    const entry = bat[b]!;
    if (entry === UNUSED_BAT_ENTRY) continue;
    const start = entry * 512;
    const used = bitmapSize + Math.min(blockSize, size - b * blockSize);
    if (start + used > footerOffset) {
      throw new ImageFormatError(
        `VHD BAT entry ${b}`,
        `block ${b} at file offset ${start}+${used} points past the footer at ${footerOffset}`,
      );
    }
    extents.push({ start, length: used, what: `block ${b}` });
  }
  checkNoOverlap(extents, 'VHD file layout');
  return {
    fileSize,
    footer,
    footerOffset,
    footerError,
    dynamic: { tableOffset, maxTableEntries: h.maxTableEntries, blockSize, bitmapSize },
    bat,
    extents,
  };
}

/**
 * A VHD image (fixed or dynamic) as a block device. The virtual size is the
 * footer's current size (not the CHS product), as Hyper-V reads it. A
 * dynamic disk allocates a block on its first write where the footer was,
 * with an all-ones sector bitmap, and moves the footer after it; reads of a
 * present block return its data (the bitmap is not consulted, as blocks are
 * zero-filled when allocated). Discard and write-zeroes keep blocks
 * allocated and zero their data, punching holes where allowed.
 */
export class VhdDisk implements BlockDevice {
  readonly format = 'vhd';
  readonly canFlush = true;
  readonly canDiscard: boolean;
  readonly canWriteZeroes: boolean;
  readonly logicalSectorSize = 512;
  readonly physicalSectorSize = 512;
  readonly size: number;
  readonly identifier: Uint8Array;
  private readonly locks = new KeyedLock<string>();
  private readonly gate = new OperationGate();
  private footerOffset: number;
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly file: ImageFile,
    readonly layout: VhdLayout,
    readonly readOnly: boolean,
  ) {
    this.size = layout.footer.currentSize;
    this.identifier = layout.footer.uniqueId;
    this.footerOffset = layout.footerOffset;
    this.canDiscard = !readOnly;
    this.canWriteZeroes = !readOnly;
  }

  static async open(path: string, options: { readOnly?: boolean } = {}): Promise<VhdDisk> {
    const readOnly = options.readOnly ?? false;
    const file = await ImageFile.open(path, readOnly);
    try {
      return new VhdDisk(path, file, await readVhdLayout(file), readOnly);
    } catch (error) {
      await file.close();
      throw error;
    }
  }

  get blockSize(): number | null {
    return this.layout.dynamic?.blockSize ?? null;
  }

  /** Blocks allocated in the file (dynamic disks), and how many the disk has. */
  blockCounts(): { allocated: number; total: number } {
    const d = this.layout.dynamic;
    if (!d) return { allocated: 0, total: 0 };
    const total = Math.ceil(this.size / d.blockSize);
    let allocated = 0;
    for (let b = 0; b < total; b++) if (this.layout.bat![b] !== UNUSED_BAT_ENTRY) allocated++;
    return { allocated, total };
  }

  async allocatedBytes(): Promise<number> {
    return this.file.allocatedBytes();
  }

  /** Writes, discards and write-zeroes must be whole 512-byte sectors. */
  private check(offset: number, length: number, writing: boolean): void {
    checkRequest(this, this.path, this.closed, offset, length, writing ? 'sector write' : 'read');
  }

  /**
   * Calls fn for each piece of [offset, offset+length) inside one block; a
   * fixed disk is one piece with block -1 and inBlock the file offset.
   */
  private pieces(
    offset: number,
    length: number,
    fn: (s: BlockSpan) => Promise<void>,
  ): Promise<void>[] {
    const d = this.layout.dynamic;
    if (!d) return [fn({ block: -1, inBlock: offset, virtualOffset: offset, length, at: 0 })];
    return Array.from(blockSpans(d.blockSize, offset, length), (s) => fn(s));
  }

  /** The file offset of a virtual offset, or null when its block is not allocated. */
  private fileOffset(block: number, inBlock: number): number | null {
    if (block < 0) return inBlock;
    const entry = this.layout.bat![block]!;
    if (entry === UNUSED_BAT_ENTRY) return null;
    return entry * 512 + this.layout.dynamic!.bitmapSize + inBlock;
  }

  async read(offset: number, target: Uint8Array): Promise<void> {
    return this.readv(offset, [target]);
  }

  async readv(offset: number, targets: readonly Uint8Array[]): Promise<void> {
    const length = totalLength(targets);
    this.check(offset, length, false);
    return this.gate.run(async () => {
      await Promise.all(
        this.pieces(offset, length, async (s) => {
          const slice = sliceVectors(targets, s.at, s.length);
          const where = this.fileOffset(s.block, s.inBlock);
          if (where === null) for (const t of slice) t.fill(0);
          else await this.file.readv(where, slice).catch((e) => atVirtual(e, s.virtualOffset));
        }),
      );
    });
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
      await Promise.all(
        this.pieces(offset, length, async (s) => {
          const slice = sliceVectors(sources, s.at, s.length);
          try {
            const where =
              this.fileOffset(s.block, s.inBlock) ?? (await this.allocate(s.block)) + s.inBlock;
            await this.file.writev(where, slice);
          } catch (error) {
            atVirtual(error, s.virtualOffset);
          }
        }),
      );
      if (options?.fua) await this.file.sync().catch((e) => atVirtual(e, offset));
    });
  }

  /**
   * Allocates a block where the footer is: footer first at the new end,
   * then the sector bitmap over the old footer, a flush, and only then the
   * BAT entry, so a crash leaves at worst an unreferenced block.
   * Returns the file offset of the block's data.
   */
  private allocate(block: number): Promise<number> {
    return this.locks.run(`block ${block}`, async () => {
      const d = this.layout.dynamic!;
      const existing = this.fileOffset(block, 0);
      if (existing !== null) return existing;
      const start = await this.locks.run('footer', async () => {
        const at = this.footerOffset;
        const next = at + d.bitmapSize + d.blockSize;
        await this.file.write(next, this.layout.footer.bytes);
        this.footerOffset = next;
        return at;
      });
      await this.file.write(start, new Uint8Array(d.bitmapSize).fill(0xff));
      await this.file.sync();
      this.layout.bat![block] = start / 512;
      await this.writeBatSector(block);
      return start + d.bitmapSize;
    });
  }

  /** Writes the 512-byte BAT sector holding an entry, from the in-memory BAT. */
  private writeBatSector(block: number): Promise<void> {
    const d = this.layout.dynamic!;
    const first = Math.floor(block / 128) * 128;
    return this.locks.run(`bat ${first}`, async () => {
      const sector = new Uint8Array(512);
      const view = new DataView(sector.buffer);
      for (let i = 0; i < 128; i++)
        view.setUint32(i * 4, this.layout.bat![first + i] ?? UNUSED_BAT_ENTRY, false);
      await this.file.write(d.tableOffset + first * 4, sector);
    });
  }

  async flush(): Promise<void> {
    if (this.closed) return Promise.reject(new DiskIoError('ECLOSED', `${this.path} is closed`));
    if (this.readOnly) return Promise.resolve();
    return this.gate.run(() => this.file.sync());
  }

  async discard(offset: number, length: number): Promise<void> {
    this.check(offset, length, true);
    return this.gate.run(() => this.zero(offset, length, true));
  }

  async writeZeroes(offset: number, length: number, options?: WriteZeroesOptions): Promise<void> {
    this.check(offset, length, true);
    return this.gate.run(async () => {
      await this.zero(offset, length, options?.mayUnmap ?? false);
      if (options?.fua) await this.file.sync();
    });
  }

  private async zero(offset: number, length: number, deallocate: boolean): Promise<void> {
    await Promise.all(
      this.pieces(offset, length, async (s) => {
        const where = this.fileOffset(s.block, s.inBlock);
        if (where === null) return;
        await this.file
          .zeroFill(where, s.length, deallocate)
          .catch((e) => atVirtual(e, s.virtualOffset));
      }),
    );
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.gate.drain();
    await this.file.close();
  }
}
