import { putBe16, putBe32 } from '../cdb.ts';
import { ModePage, PageControl, SAI_READ_CAPACITY_16, ScsiOp } from '../codes.ts';
import { unmapBlockDescriptor, unmapParameterHeader } from '../protocol.ts';

/**
 * Builders for the CDBs the guest's storvsc sends (SPC-4, SBC-3), and the
 * UNMAP parameter list. Each returns a new CDB of exactly its command's
 * length. Arguments come from the guest's own code, not from the other side,
 * so a value that does not fit its field is a programming error: RangeError.
 */

type Lba = number | bigint;

function check(name: string, value: number, max: number): number {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new RangeError(`${name} ${value} is not an integer in 0..${max}`);
  }
  return value;
}

function lba64(value: Lba): bigint {
  const big =
    typeof value === 'bigint' ? value : BigInt(check('LBA', value, Number.MAX_SAFE_INTEGER));
  if (big < 0n || big > 0xffff_ffff_ffff_ffffn)
    throw new RangeError(`LBA ${value} does not fit 64 bits`);
  return big;
}

function lba32(value: Lba): number {
  const big = lba64(value);
  if (big > 0xffff_ffffn) throw new RangeError(`LBA ${value} does not fit a 10-byte CDB (32 bits)`);
  return Number(big);
}

function putBe64(b: Uint8Array, at: number, value: bigint): void {
  new DataView(b.buffer, b.byteOffset, b.byteLength).setBigUint64(at, value, false);
}

export function testUnitReady(): Uint8Array {
  return new Uint8Array(6);
}

/** REQUEST SENSE; `descriptor` asks for descriptor-format sense data. */
export function requestSense(allocation = 252, options: { descriptor?: boolean } = {}): Uint8Array {
  return Uint8Array.of(
    ScsiOp.REQUEST_SENSE,
    options.descriptor ? 0x01 : 0,
    0,
    0,
    check('allocation length', allocation, 0xff),
    0,
  );
}

/** INQUIRY: standard data, or the VPD page `page` when given. */
export function inquiry(options: { page?: number; allocation?: number } = {}): Uint8Array {
  const cdb = new Uint8Array(6);
  cdb[0] = ScsiOp.INQUIRY;
  if (options.page !== undefined) {
    cdb[1] = 0x01;
    cdb[2] = check('VPD page', options.page, 0xff);
  }
  putBe16(cdb, 3, check('allocation length', options.allocation ?? 96, 0xffff));
  return cdb;
}

export function readCapacity10(): Uint8Array {
  const cdb = new Uint8Array(10);
  cdb[0] = ScsiOp.READ_CAPACITY_10;
  return cdb;
}

export function readCapacity16(allocation = 32): Uint8Array {
  const cdb = new Uint8Array(16);
  cdb[0] = ScsiOp.SERVICE_ACTION_IN_16;
  cdb[1] = SAI_READ_CAPACITY_16;
  putBe32(cdb, 10, check('allocation length', allocation, 0xffffffff));
  return cdb;
}

export interface BlockRequest {
  readonly lba: Lba;
  readonly blocks: number;
  /** Force unit access (writes: durable before completion). */
  readonly fua?: boolean;
}

function rw10(op: number, req: BlockRequest): Uint8Array {
  const cdb = new Uint8Array(10);
  cdb[0] = op;
  cdb[1] = req.fua ? 0x08 : 0;
  putBe32(cdb, 2, lba32(req.lba));
  putBe16(cdb, 7, check('transfer length', req.blocks, 0xffff));
  return cdb;
}

function rw16(op: number, req: BlockRequest): Uint8Array {
  const cdb = new Uint8Array(16);
  cdb[0] = op;
  cdb[1] = req.fua ? 0x08 : 0;
  putBe64(cdb, 2, lba64(req.lba));
  putBe32(cdb, 10, check('transfer length', req.blocks, 0xffffffff));
  return cdb;
}

export const read10 = (req: BlockRequest): Uint8Array => rw10(ScsiOp.READ_10, req);
export const write10 = (req: BlockRequest): Uint8Array => rw10(ScsiOp.WRITE_10, req);
export const read16 = (req: BlockRequest): Uint8Array => rw16(ScsiOp.READ_16, req);
export const write16 = (req: BlockRequest): Uint8Array => rw16(ScsiOp.WRITE_16, req);

/** VERIFY(16); `bytchk` 0 = medium verification, 1 = compare with the data-out buffer. */
export function verify16(req: { lba: Lba; blocks: number; bytchk?: 0 | 1 }): Uint8Array {
  const cdb = rw16(ScsiOp.VERIFY_16, { lba: req.lba, blocks: req.blocks });
  cdb[1] = (req.bytchk ?? 0) << 1;
  return cdb;
}

export interface CacheRange {
  /** Default 0. */
  readonly lba?: Lba;
  /** Default 0: to the end of the medium. */
  readonly blocks?: number;
  readonly immed?: boolean;
}

export function synchronizeCache10(range: CacheRange = {}): Uint8Array {
  const cdb = rw10(ScsiOp.SYNCHRONIZE_CACHE_10, { lba: range.lba ?? 0, blocks: range.blocks ?? 0 });
  cdb[1] = range.immed ? 0x02 : 0;
  return cdb;
}

export function synchronizeCache16(range: CacheRange = {}): Uint8Array {
  const cdb = rw16(ScsiOp.SYNCHRONIZE_CACHE_16, { lba: range.lba ?? 0, blocks: range.blocks ?? 0 });
  cdb[1] = range.immed ? 0x02 : 0;
  return cdb;
}

export interface UnmapRange {
  readonly lba: Lba;
  readonly blocks: number;
}

/** The UNMAP parameter list (SBC-3 5.28.2) for these ranges. */
export function unmapParameterList(ranges: readonly UnmapRange[]): Uint8Array {
  const descriptorBytes = ranges.length * unmapBlockDescriptor.size;
  const total = unmapParameterHeader.size + descriptorBytes;
  if (total > 0xffff)
    throw new RangeError(`UNMAP: ${ranges.length} ranges do not fit a 16-bit parameter list`);
  const out = new Uint8Array(total);
  let at = unmapParameterHeader.writeInto(out, 0, {
    unmapDataLength: total - 2,
    blockDescriptorDataLength: descriptorBytes,
  });
  for (const r of ranges) {
    at = unmapBlockDescriptor.writeInto(out, at, {
      lba: lba64(r.lba),
      blocks: check('UNMAP blocks', r.blocks, 0xffffffff),
    });
  }
  return out;
}

export function unmap(parameterListLength: number): Uint8Array {
  const cdb = new Uint8Array(10);
  cdb[0] = ScsiOp.UNMAP;
  putBe16(cdb, 7, check('parameter list length', parameterListLength, 0xffff));
  return cdb;
}

/** WRITE SAME(16); `unmap` lets the target deallocate, `ndob` sends no data block (zeros). */
export function writeSame16(req: {
  lba: Lba;
  blocks: number;
  unmap?: boolean;
  ndob?: boolean;
}): Uint8Array {
  const cdb = rw16(ScsiOp.WRITE_SAME_16, { lba: req.lba, blocks: req.blocks });
  cdb[1] = (req.unmap ? 0x08 : 0) | (req.ndob ? 0x01 : 0);
  return cdb;
}

/** REPORT LUNS; select 0 = all LUNs, 1 = well-known, 2 = all logical units. */
export function reportLuns(options: { select?: number; allocation?: number } = {}): Uint8Array {
  const cdb = new Uint8Array(12);
  cdb[0] = ScsiOp.REPORT_LUNS;
  cdb[2] = check('select report', options.select ?? 0, 0xff);
  putBe32(cdb, 6, check('allocation length', options.allocation ?? 8 + 8 * 256, 0xffffffff));
  return cdb;
}

export interface ModeSenseRequest {
  /** Default 0x3f, all pages. */
  readonly page?: number;
  readonly subpage?: number;
  /** Default current values. */
  readonly pageControl?: PageControl;
  /** Disable block descriptors (default false). */
  readonly dbd?: boolean;
  readonly allocation?: number;
}

export function modeSense6(req: ModeSenseRequest = {}): Uint8Array {
  const cdb = new Uint8Array(6);
  cdb[0] = ScsiOp.MODE_SENSE_6;
  cdb[1] = req.dbd ? 0x08 : 0;
  cdb[2] =
    (check('page control', req.pageControl ?? PageControl.CURRENT, 3) << 6) |
    check('page code', req.page ?? ModePage.ALL, 0x3f);
  cdb[3] = check('subpage', req.subpage ?? 0, 0xff);
  cdb[4] = check('allocation length', req.allocation ?? 0xff, 0xff);
  return cdb;
}

export function modeSense10(req: ModeSenseRequest & { llbaa?: boolean } = {}): Uint8Array {
  const cdb = new Uint8Array(10);
  cdb[0] = ScsiOp.MODE_SENSE_10;
  cdb[1] = (req.dbd ? 0x08 : 0) | (req.llbaa ? 0x10 : 0);
  cdb[2] =
    (check('page control', req.pageControl ?? PageControl.CURRENT, 3) << 6) |
    check('page code', req.page ?? ModePage.ALL, 0x3f);
  cdb[3] = check('subpage', req.subpage ?? 0, 0xff);
  putBe16(cdb, 7, check('allocation length', req.allocation ?? 0x1000, 0xffff));
  return cdb;
}

/** MODE SELECT(10) with PF=1 (page format), SP=0. */
export function modeSelect10(parameterListLength: number): Uint8Array {
  const cdb = new Uint8Array(10);
  cdb[0] = ScsiOp.MODE_SELECT_10;
  cdb[1] = 0x10;
  putBe16(cdb, 7, check('parameter list length', parameterListLength, 0xffff));
  return cdb;
}

/**
 * A MODE SELECT(10) parameter list that sets WCE: the header with no block
 * descriptor and the caching page as MODE SENSE reported it (`currentPage`,
 * 20 bytes, page code first) with only the WCE bit changed.
 */
export function cachingModeSelectList(
  currentPage: Uint8Array,
  writeCacheEnabled: boolean,
): Uint8Array {
  if (currentPage.length !== 20 || ((currentPage[0] ?? 0) & 0x3f) !== ModePage.CACHING) {
    throw new RangeError('cachingModeSelectList needs the 20-byte caching mode page');
  }
  const out = new Uint8Array(8 + 20);
  out.set(currentPage, 8);
  out[8] = ModePage.CACHING; // PS is reserved in MODE SELECT
  const b2 = out[10] ?? 0;
  out[10] = writeCacheEnabled ? b2 | 0x04 : b2 & ~0x04;
  return out;
}

export function startStopUnit(options: { start: boolean; noFlush?: boolean }): Uint8Array {
  const cdb = new Uint8Array(6);
  cdb[0] = ScsiOp.START_STOP_UNIT;
  cdb[4] = (options.start ? 0x01 : 0) | (options.noFlush ? 0x04 : 0);
  return cdb;
}
