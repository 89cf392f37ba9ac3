/**
 * A disk as the guest sees it through storvsc: a BlockDevice whose reads
 * and writes become READ(16)/WRITE(16) requests (flush: SYNCHRONIZE
 * CACHE(16); discard: UNMAP; zeroing: WRITE SAME(16) without a data block)
 * with their data in guest-memory buffers the host reads and writes in
 * place. A transfer larger than the controller's maximum is split into
 * requests that run at once.
 *
 * Failures come back as SCSI status and sense data; they are turned into
 * DiskIoErrors (DATA PROTECT → EROFS, LBA OUT OF RANGE → ERANGE, other
 * ILLEGAL REQUEST → EINVAL, SPACE ALLOCATION FAILED → ENOSPC, the rest →
 * EIO), with the failing offset from the sense INFORMATION field when the
 * host gives one. Unit attentions, BUSY / TASK SET FULL and ABORTED COMMAND
 * are retried (as the Linux SCSI midlayer retries them); INVALID_LUN means
 * the disk was removed.
 */
import {
  type BlockDevice,
  checkRange,
  DiskIoError,
  type WriteOptions,
  type WriteZeroesOptions,
} from './disk/block-device.ts';
import type { GuestBuffer, GuestBufferPool } from './guest-buffers.ts';
import { SrbStatus, srbStatusCode } from './protocol.ts';
import { Asc, ScsiStatus, SenseKey, VpdPage } from './scsi/codes.ts';
import * as cdbs from './scsi/initiator-cdb.ts';
import {
  parseBlockLimits,
  parseDeviceIdentification,
  parseLogicalBlockProvisioning,
  parseModeSense,
  parseReadCapacity10,
  parseReadCapacity16,
  parseStandardInquiry,
  parseSupportedVpdPages,
  parseUnitSerialNumber,
} from './scsi/initiator-parse.ts';
import { type ParsedSense, parseSense } from './scsi/sense-parser.ts';
import type { SrbCommand, SrbDirection, SrbResult } from './vsc-channel.ts';

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

const SENSE_KEY_NAMES: Record<number, string> = {
  0: 'NO SENSE',
  1: 'RECOVERED ERROR',
  2: 'NOT READY',
  3: 'MEDIUM ERROR',
  4: 'HARDWARE ERROR',
  5: 'ILLEGAL REQUEST',
  6: 'UNIT ATTENTION',
  7: 'DATA PROTECT',
  11: 'ABORTED COMMAND',
};

const hex = (n: number, width = 2): string => `0x${n.toString(16).padStart(width, '0')}`;

/** Describes an SRB result: statuses, and sense key/ASC/ASCQ when there is sense data. */
export function describeResult(result: SrbResult): string {
  const parts = [`SRB status ${hex(result.srbStatus)}`, `SCSI status ${hex(result.scsiStatus)}`];
  const sense = result.sense.length > 0 ? parseSense(result.sense) : undefined;
  if (sense?.ok) {
    const s = sense.value;
    parts.push(
      `sense ${SENSE_KEY_NAMES[s.key] ?? hex(s.key, 1)}, ASC/ASCQ ${hex(s.asc)}/${hex(s.ascq)}`,
    );
  }
  return parts.join(', ');
}

/** A SCSI command that did not succeed. */
export class ScsiCommandError extends Error {
  override readonly name = 'ScsiCommandError';
  constructor(
    readonly what: string,
    readonly result: SrbResult,
  ) {
    super(`${what} failed: ${describeResult(result)}`);
  }
}

type Verdict = 'ok' | 'retry' | 'wait' | 'gone' | 'fail';

function senseOf(result: SrbResult): ParsedSense | undefined {
  if (result.sense.length === 0) return undefined;
  const parsed = parseSense(result.sense);
  return parsed.ok ? parsed.value : undefined;
}

/** What to do with a result: use it, retry now, retry after a pause, drop the disk, or fail. */
function judge(result: SrbResult): Verdict {
  const code = srbStatusCode(result.srbStatus);
  if (code === SrbStatus.InvalidLun) return 'gone';
  const scsi = result.scsiStatus;
  if ((code === SrbStatus.Success || code === SrbStatus.DataOverrun) && scsi === ScsiStatus.GOOD) {
    return 'ok';
  }
  if (scsi === ScsiStatus.BUSY || scsi === ScsiStatus.TASK_SET_FULL || code === SrbStatus.Busy) {
    return 'wait';
  }
  if (scsi === ScsiStatus.CHECK_CONDITION) {
    const sense = senseOf(result);
    if (sense?.key === SenseKey.UNIT_ATTENTION) return 'retry';
    if (sense?.key === SenseKey.ABORTED_COMMAND) return 'wait';
  }
  return 'fail';
}

const MAX_ATTEMPTS = 8;

function pause(attempt: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.min(200, 5 * 2 ** attempt)));
}

/** Runs a command, retrying what the SCSI midlayer would; returns the final result. */
async function runWithRetries(
  transport: ScsiTransport,
  command: SrbCommand,
): Promise<{ verdict: Verdict; result: SrbResult }> {
  let result!: SrbResult;
  let verdict: Verdict = 'fail';
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    result = await transport.submit(command);
    verdict = judge(result);
    if (verdict === 'retry') continue;
    if (verdict === 'wait') {
      await pause(attempt);
      continue;
    }
    break;
  }
  return { verdict, result };
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
    direction: SrbDirection,
    buffer: GuestBuffer | undefined,
    offset: number,
  ): Promise<SrbResult> {
    const { verdict, result } = await runWithRetries(this.transport, {
      lun: this.lun,
      cdb,
      direction,
      ...(buffer ? { buffer } : {}),
    });
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
    throw this.failure(what, result, offset);
  }

  private failure(what: string, result: SrbResult, offset: number): DiskIoError {
    const message = `${what} on LUN ${this.lun} failed: ${describeResult(result)}`;
    const sense = senseOf(result);
    let at = offset;
    if (sense?.information !== undefined) {
      const byte = Number(sense.information) * this.info.blockSize;
      if (Number.isSafeInteger(byte) && byte >= 0) at = byte;
    }
    if (!sense) return new DiskIoError('EIO', message, at);
    if (sense.key === SenseKey.DATA_PROTECT) {
      const full =
        sense.asc === Asc.SPACE_ALLOCATION_FAILED_WRITE_PROTECT.asc &&
        sense.ascq === Asc.SPACE_ALLOCATION_FAILED_WRITE_PROTECT.ascq;
      return new DiskIoError(full ? 'ENOSPC' : 'EROFS', message, at);
    }
    if (sense.key === SenseKey.ILLEGAL_REQUEST) {
      const range = sense.asc === Asc.LBA_OUT_OF_RANGE.asc;
      return new DiskIoError(range ? 'ERANGE' : 'EINVAL', message, at);
    }
    return new DiskIoError('EIO', message, at);
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
    let total = 0;
    for (const t of targets) total += t.length;
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
    let total = 0;
    for (const s of sources) total += s.length;
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
      const cdb = rw16(0x88, lba, length / this.info.blockSize, false);
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
      const cdb = rw16(0x8a, lba, length / this.info.blockSize, fua);
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
 * BigInt: the LBA is below 2^53 and goes in as two 32-bit halves.
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

/** Copies `length` bytes of the buffer to the targets starting `at` bytes into them. */
function scatter(
  buffer: GuestBuffer,
  targets: readonly Uint8Array[],
  at: number,
  length: number,
): void {
  let skip = at;
  let from = 0;
  for (const t of targets) {
    if (from >= length) break;
    if (skip >= t.length) {
      skip -= t.length;
      continue;
    }
    const n = Math.min(t.length - skip, length - from);
    buffer.copyOut(t.subarray(skip, skip + n), from);
    from += n;
    skip = 0;
  }
}

/** Copies `length` bytes of the sources, starting `at` bytes into them, into the buffer. */
function gather(
  buffer: GuestBuffer,
  sources: readonly Uint8Array[],
  at: number,
  length: number,
): void {
  let skip = at;
  let to = 0;
  for (const s of sources) {
    if (to >= length) break;
    if (skip >= s.length) {
      skip -= s.length;
      continue;
    }
    const n = Math.min(s.length - skip, length - to);
    buffer.copyIn(s.subarray(skip, skip + n), to);
    to += n;
    skip = 0;
  }
}

// --- probing a LUN -------------------------------------------------------------

async function dataIn(
  transport: ScsiTransport,
  lun: number,
  what: string,
  cdb: Uint8Array,
  allocation: number,
): Promise<Uint8Array> {
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const { result, data } = await transport.command(lun, cdb, allocation);
    const verdict = judge(result);
    if (verdict === 'ok') return data;
    if (verdict === 'retry') continue;
    if (verdict === 'wait') {
      await pause(attempt);
      continue;
    }
    throw new ScsiCommandError(what, result);
  }
  throw new Error(`${what} on LUN ${lun}: still failing after ${MAX_ATTEMPTS} attempts`);
}

function unwrap<T>(what: string, parsed: { ok: true; value: T } | { ok: false; error: string }): T {
  if (!parsed.ok) throw new Error(`${what}: ${parsed.error}`);
  return parsed.value;
}

/**
 * Probes one LUN as a disk (what Linux's scan and sd probe do): INQUIRY,
 * TEST UNIT READY until the unit attentions are consumed, READ CAPACITY(16)
 * (or 10), the VPD pages for the serial number, identifier and limits,
 * MODE SENSE for write protection and the write cache. Undefined when the
 * LUN holds no direct-access device.
 */
export async function probeLun(
  transport: ScsiTransport,
  lun: number,
): Promise<GuestScsiDisk | undefined> {
  const inquiry = unwrap(
    'INQUIRY',
    parseStandardInquiry(
      await dataIn(transport, lun, 'INQUIRY', cdbs.inquiry({ allocation: 96 }), 96),
    ),
  );
  if (inquiry.qualifier !== 0 || inquiry.deviceType !== 0) return undefined;
  // TEST UNIT READY reports (and so clears) pending unit attentions.
  let ready = false;
  for (let attempt = 0; attempt < MAX_ATTEMPTS && !ready; attempt++) {
    const { result } = await transport.command(lun, cdbs.testUnitReady(), 0);
    const verdict = judge(result);
    if (verdict === 'ok') ready = true;
    else if (verdict === 'wait') await pause(attempt);
    else if (verdict !== 'retry') throw new ScsiCommandError('TEST UNIT READY', result);
  }
  if (!ready) throw new Error(`LUN ${lun} did not become ready`);
  let blocks: number;
  let blockSize: number;
  let physicalBlockSize: number;
  let lbpme = false;
  try {
    const cap = unwrap(
      'READ CAPACITY(16)',
      parseReadCapacity16(
        await dataIn(transport, lun, 'READ CAPACITY(16)', cdbs.readCapacity16(32), 32),
      ),
    );
    blocks = Number(cap.lastLba) + 1;
    blockSize = cap.blockLength;
    physicalBlockSize = blockSize * 2 ** Math.min(cap.logicalBlocksPerPhysicalExponent, 8);
    lbpme = cap.lbpme;
  } catch (error) {
    if (!(error instanceof ScsiCommandError)) throw error;
    const cap = unwrap(
      'READ CAPACITY(10)',
      parseReadCapacity10(
        await dataIn(transport, lun, 'READ CAPACITY(10)', cdbs.readCapacity10(), 8),
      ),
    );
    blocks = cap.lastLba + 1;
    blockSize = cap.blockLength;
    physicalBlockSize = blockSize;
  }
  if (!Number.isSafeInteger(blocks * blockSize) || blockSize < 512 || blockSize > 65536) {
    throw new Error(`LUN ${lun} reports ${blocks} blocks of ${blockSize} bytes`);
  }
  const vpd = async (page: number, size: number): Promise<Uint8Array> =>
    dataIn(
      transport,
      lun,
      `INQUIRY VPD ${hex(page)}`,
      cdbs.inquiry({ page, allocation: size }),
      size,
    );
  const pages = unwrap(
    'VPD page 0x00',
    parseSupportedVpdPages(await vpd(VpdPage.SUPPORTED_PAGES, 255)),
  );
  let serial = '';
  if (pages.includes(VpdPage.UNIT_SERIAL_NUMBER)) {
    serial = unwrap(
      'VPD page 0x80',
      parseUnitSerialNumber(await vpd(VpdPage.UNIT_SERIAL_NUMBER, 255)),
    );
  }
  let identifier = new Uint8Array(16);
  if (pages.includes(VpdPage.DEVICE_IDENTIFICATION)) {
    const designators = unwrap(
      'VPD page 0x83',
      parseDeviceIdentification(await vpd(VpdPage.DEVICE_IDENTIFICATION, 252)),
    );
    // The T10 vendor designator holds vendor (8) + the 16-byte identifier; else the NAA one.
    const t10 = designators.find(
      (d) => d.type === 1 && d.association === 0 && d.designator.length === 24,
    );
    const naa = designators.find((d) => d.type === 3 && d.association === 0);
    if (t10) identifier = t10.designator.slice(8, 24);
    else if (naa) identifier.set(naa.designator.subarray(0, 16));
  }
  let maxTransferBytes = transport.maxTransfer;
  let maxUnmapBlocks = 0;
  let maxUnmapDescriptors = 0;
  let maxWriteSameBlocks = 0;
  if (pages.includes(VpdPage.BLOCK_LIMITS)) {
    const limits = unwrap('VPD page 0xb0', parseBlockLimits(await vpd(VpdPage.BLOCK_LIMITS, 64)));
    if (limits.maxTransferLength > 0) {
      maxTransferBytes = Math.min(maxTransferBytes, limits.maxTransferLength * blockSize);
    }
    maxUnmapBlocks = limits.maxUnmapLbaCount;
    maxUnmapDescriptors = limits.maxUnmapBlockDescriptorCount;
    maxWriteSameBlocks = Number(
      limits.maxWriteSameLength > 0xffff_ffffn ? 0xffff_ffffn : limits.maxWriteSameLength,
    );
  }
  let unmapSupported = false;
  if (pages.includes(VpdPage.LOGICAL_BLOCK_PROVISIONING)) {
    const lbp = unwrap(
      'VPD page 0xb2',
      parseLogicalBlockProvisioning(await vpd(VpdPage.LOGICAL_BLOCK_PROVISIONING, 8)),
    );
    unmapSupported = lbp.lbpu;
  }
  const mode = unwrap(
    'MODE SENSE(6)',
    parseModeSense(
      await dataIn(
        transport,
        lun,
        'MODE SENSE(6)',
        cdbs.modeSense6({ page: 0x08, allocation: 0xff }),
        0xff,
      ),
      false,
    ),
  );
  if (maxTransferBytes < blockSize) maxTransferBytes = blockSize;
  maxTransferBytes -= maxTransferBytes % blockSize;
  return new GuestScsiDisk(transport, {
    lun,
    blocks,
    blockSize,
    physicalBlockSize,
    readOnly: mode.writeProtected,
    vendor: inquiry.vendor,
    product: inquiry.product,
    revision: inquiry.revision,
    serial,
    identifier,
    writeCache: mode.caching?.writeCacheEnabled ?? false,
    canDiscard: lbpme && unmapSupported && maxUnmapBlocks > 0 && maxUnmapDescriptors > 0,
    maxTransferBytes,
    maxUnmapBlocks,
    maxUnmapDescriptors,
    maxWriteSameBlocks,
  });
}
