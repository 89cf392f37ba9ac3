import type { ReadResult } from '../../wire/index.ts';
import { ModePage } from '../codes.ts';
import { readCapacity10Data, readCapacity16Data } from '../protocol.ts';

/**
 * Strict parsers for the parameter data a SCSI target returns to storvsc.
 * The target is the other side of the bus and is not trusted: every parser
 * takes arbitrary bytes, checks every length it reads against the bytes it
 * was given, and returns `{ ok: true, value }` or `{ ok: false, error }` with
 * a message naming the structure and the numbers. None of them throws.
 *
 * Where a response was cut short by the allocation length the parser either
 * says how many bytes the whole response needs (VPD pages) or parses the
 * complete entries and sets `truncated` (REPORT LUNS, MODE SENSE).
 */

type Result<T> = ReadResult<T>;

function fail<T>(error: string): Result<T> {
  return { ok: false, error };
}

function be16(b: Uint8Array, at: number): number {
  return ((b[at] ?? 0) << 8) | (b[at + 1] ?? 0);
}

function be32(b: Uint8Array, at: number): number {
  return (
    (((b[at] ?? 0) << 24) |
      ((b[at + 1] ?? 0) << 16) |
      ((b[at + 2] ?? 0) << 8) |
      (b[at + 3] ?? 0)) >>>
    0
  );
}

function be64(b: Uint8Array, at: number): bigint {
  return (BigInt(be32(b, at)) << 32n) | BigInt(be32(b, at + 4));
}

function hexByte(n: number): string {
  return `0x${n.toString(16).padStart(2, '0')}`;
}

/**
 * An ASCII text field (SPC-4 4.3.1): printable characters, padded with spaces
 * (NUL padding is tolerated). Anything else is an error naming the byte.
 */
function asciiField(bytes: Uint8Array, start: number, end: number, what: string): Result<string> {
  let text = '';
  for (let i = start; i < end; i++) {
    const c = bytes[i] ?? 0;
    if (c === 0) {
      text += ' ';
    } else if (c < 0x20 || c > 0x7e) {
      return fail(`${what}: byte ${i} is ${hexByte(c)}, not printable ASCII`);
    } else {
      text += String.fromCharCode(c);
    }
  }
  return { ok: true, value: text.trim() };
}

// ---- INQUIRY ----

export interface StandardInquiry {
  readonly qualifier: number;
  readonly deviceType: number;
  readonly removable: boolean;
  readonly version: number;
  readonly responseDataFormat: number;
  readonly hisup: boolean;
  readonly additionalLength: number;
  readonly commandQueueing: boolean;
  readonly vendor: string;
  readonly product: string;
  readonly revision: string;
  /** Non-zero version descriptors present in the data. */
  readonly versionDescriptors: readonly number[];
}

export function parseStandardInquiry(bytes: Uint8Array): Result<StandardInquiry> {
  if (bytes.length < 36) return fail(`standard INQUIRY data: need 36 bytes, have ${bytes.length}`);
  const vendor = asciiField(bytes, 8, 16, 'INQUIRY vendor identification');
  if (!vendor.ok) return vendor;
  const product = asciiField(bytes, 16, 32, 'INQUIRY product identification');
  if (!product.ok) return product;
  const revision = asciiField(bytes, 32, 36, 'INQUIRY product revision level');
  if (!revision.ok) return revision;
  const additionalLength = bytes[4] ?? 0;
  const end = Math.min(bytes.length, additionalLength + 5);
  const versionDescriptors: number[] = [];
  for (let at = 58; at + 2 <= Math.min(end, 74); at += 2) {
    const v = be16(bytes, at);
    if (v !== 0) versionDescriptors.push(v);
  }
  const b0 = bytes[0] ?? 0;
  return {
    ok: true,
    value: {
      qualifier: b0 >> 5,
      deviceType: b0 & 0x1f,
      removable: ((bytes[1] ?? 0) & 0x80) !== 0,
      version: bytes[2] ?? 0,
      responseDataFormat: (bytes[3] ?? 0) & 0x0f,
      hisup: ((bytes[3] ?? 0) & 0x10) !== 0,
      additionalLength,
      commandQueueing: ((bytes[7] ?? 0) & 0x02) !== 0,
      vendor: vendor.value,
      product: product.value,
      revision: revision.value,
      versionDescriptors,
    },
  };
}

export interface VpdPageData {
  readonly qualifier: number;
  readonly deviceType: number;
  readonly pageCode: number;
  /** The page after its 4-byte header (a view into the input). */
  readonly body: Uint8Array;
}

/** The total bytes a VPD page needs (4 + PAGE LENGTH), or undefined when even the header is missing. */
export function vpdPageSize(bytes: Uint8Array): number | undefined {
  return bytes.length < 4 ? undefined : 4 + be16(bytes, 2);
}

/** A VPD page's header and body; the page must be the one asked for and complete. */
export function parseVpdPage(bytes: Uint8Array, expectedPage: number): Result<VpdPageData> {
  const what = `VPD page ${hexByte(expectedPage)}`;
  if (bytes.length < 4) return fail(`${what}: need the 4-byte header, have ${bytes.length} bytes`);
  const pageCode = bytes[1] ?? 0;
  if (pageCode !== expectedPage) return fail(`${what}: the data is page ${hexByte(pageCode)}`);
  const length = be16(bytes, 2);
  if (4 + length > bytes.length) {
    return fail(
      `${what}: page length ${length} needs ${4 + length} bytes, have ${bytes.length} (raise the allocation length)`,
    );
  }
  const b0 = bytes[0] ?? 0;
  return {
    ok: true,
    value: {
      qualifier: b0 >> 5,
      deviceType: b0 & 0x1f,
      pageCode,
      body: bytes.subarray(4, 4 + length),
    },
  };
}

export function parseSupportedVpdPages(bytes: Uint8Array): Result<number[]> {
  const page = parseVpdPage(bytes, 0x00);
  if (!page.ok) return page;
  return { ok: true, value: Array.from(page.value.body) };
}

export function parseUnitSerialNumber(bytes: Uint8Array): Result<string> {
  const page = parseVpdPage(bytes, 0x80);
  if (!page.ok) return page;
  return asciiField(page.value.body, 0, page.value.body.length, 'VPD page 0x80 serial number');
}

export interface Designator {
  readonly protocolIdentifier: number;
  readonly codeSet: number;
  readonly piv: boolean;
  readonly association: number;
  readonly type: number;
  /** A copy of the designator bytes. */
  readonly designator: Uint8Array;
}

export function parseDeviceIdentification(bytes: Uint8Array): Result<Designator[]> {
  const page = parseVpdPage(bytes, 0x83);
  if (!page.ok) return page;
  const body = page.value.body;
  const out: Designator[] = [];
  let at = 0;
  while (at < body.length) {
    if (at + 4 > body.length) {
      return fail(
        `VPD page 0x83: designation descriptor at offset ${4 + at} needs 4 header bytes, ${body.length - at} remain`,
      );
    }
    const length = body[at + 3] ?? 0;
    if (at + 4 + length > body.length) {
      return fail(
        `VPD page 0x83: designation descriptor at offset ${4 + at} claims ${length} bytes, ${body.length - at - 4} remain`,
      );
    }
    const b0 = body[at] ?? 0;
    const b1 = body[at + 1] ?? 0;
    out.push({
      protocolIdentifier: b0 >> 4,
      codeSet: b0 & 0x0f,
      piv: (b1 & 0x80) !== 0,
      association: (b1 >> 4) & 0x03,
      type: b1 & 0x0f,
      designator: body.slice(at + 4, at + 4 + length),
    });
    at += 4 + length;
  }
  return { ok: true, value: out };
}

export interface BlockLimits {
  readonly wsnz: boolean;
  readonly maxCompareAndWriteLength: number;
  readonly optimalTransferLengthGranularity: number;
  readonly maxTransferLength: number;
  readonly optimalTransferLength: number;
  readonly maxPrefetchLength: number;
  readonly maxUnmapLbaCount: number;
  readonly maxUnmapBlockDescriptorCount: number;
  readonly optimalUnmapGranularity: number;
  readonly unmapGranularityAlignmentValid: boolean;
  readonly unmapGranularityAlignment: number;
  readonly maxWriteSameLength: bigint;
}

/**
 * Block Limits (SBC-3 6.5.3). Early versions of the page are 0x0C bytes long;
 * fields beyond the page read as 0, which SBC-3 defines as "not reported".
 */
export function parseBlockLimits(bytes: Uint8Array): Result<BlockLimits> {
  const page = parseVpdPage(bytes, 0xb0);
  if (!page.ok) return page;
  const body = page.value.body;
  if (body.length < 0x0c)
    return fail(`VPD page 0xb0: page length ${body.length} is below the minimum 12`);
  // Offsets are into the body, which starts at page byte 4 (SBC-3 table: byte N of the page is body N-4).
  const u32 = (at: number) => (at + 4 <= body.length ? be32(body, at) : 0);
  const alignment = u32(28);
  return {
    ok: true,
    value: {
      wsnz: ((body[0] ?? 0) & 0x01) !== 0,
      maxCompareAndWriteLength: body[1] ?? 0,
      optimalTransferLengthGranularity: be16(body, 2),
      maxTransferLength: u32(4),
      optimalTransferLength: u32(8),
      maxPrefetchLength: u32(12),
      maxUnmapLbaCount: u32(16),
      maxUnmapBlockDescriptorCount: u32(20),
      optimalUnmapGranularity: u32(24),
      unmapGranularityAlignmentValid: (alignment & 0x8000_0000) !== 0,
      unmapGranularityAlignment: alignment & 0x7fff_ffff,
      maxWriteSameLength: 32 + 8 <= body.length ? be64(body, 32) : 0n,
    },
  };
}

export interface BlockDeviceCharacteristics {
  /** 0 not reported, 1 non-rotating, else RPM. */
  readonly rotationRate: number;
  readonly productType: number;
  readonly nominalFormFactor: number;
}

export function parseBlockDeviceCharacteristics(
  bytes: Uint8Array,
): Result<BlockDeviceCharacteristics> {
  const page = parseVpdPage(bytes, 0xb1);
  if (!page.ok) return page;
  const body = page.value.body;
  if (body.length < 2) {
    return fail(`VPD page 0xb1: page length ${body.length} has no rotation rate`);
  }
  return {
    ok: true,
    value: {
      rotationRate: be16(body, 0),
      productType: body[2] ?? 0,
      nominalFormFactor: (body[3] ?? 0) & 0x0f,
    },
  };
}

export interface LogicalBlockProvisioning {
  readonly thresholdExponent: number;
  readonly lbpu: boolean;
  readonly lbpws: boolean;
  readonly lbpws10: boolean;
  readonly lbprz: boolean;
  readonly anchorSupported: boolean;
  readonly provisioningType: number;
}

export function parseLogicalBlockProvisioning(bytes: Uint8Array): Result<LogicalBlockProvisioning> {
  const page = parseVpdPage(bytes, 0xb2);
  if (!page.ok) return page;
  const body = page.value.body;
  if (body.length < 4) {
    return fail(`VPD page 0xb2: page length ${body.length} is below the minimum 4`);
  }
  const flags = body[1] ?? 0;
  return {
    ok: true,
    value: {
      thresholdExponent: body[0] ?? 0,
      lbpu: (flags & 0x80) !== 0,
      lbpws: (flags & 0x40) !== 0,
      lbpws10: (flags & 0x20) !== 0,
      lbprz: (flags & 0x04) !== 0,
      anchorSupported: (flags & 0x02) !== 0,
      provisioningType: (body[2] ?? 0) & 0x07,
    },
  };
}

// ---- READ CAPACITY ----

export interface Capacity10 {
  readonly lastLba: number;
  readonly blockLength: number;
  /** LAST LBA is 0xFFFFFFFF: the capacity needs READ CAPACITY(16). */
  readonly needs16: boolean;
}

export function parseReadCapacity10(bytes: Uint8Array): Result<Capacity10> {
  const data = readCapacity10Data.tryRead(bytes);
  if (!data.ok) return fail(`READ CAPACITY(10) data: need 8 bytes, have ${bytes.length}`);
  if (data.value.blockLength === 0) return fail('READ CAPACITY(10) data: logical block length 0');
  return { ok: true, value: { ...data.value, needs16: data.value.lastLba === 0xffffffff } };
}

export interface Capacity16 {
  readonly lastLba: bigint;
  readonly blockLength: number;
  readonly protectionEnabled: boolean;
  readonly protectionType: number;
  readonly logicalBlocksPerPhysicalExponent: number;
  readonly lbpme: boolean;
  readonly lbprz: boolean;
  readonly lowestAlignedLba: number;
}

/** READ CAPACITY(16) data; the first 16 bytes carry every defined field. */
export function parseReadCapacity16(bytes: Uint8Array): Result<Capacity16> {
  if (bytes.length < 16) return fail(`READ CAPACITY(16) data: need 16 bytes, have ${bytes.length}`);
  const padded = new Uint8Array(readCapacity16Data.size);
  padded.set(bytes.subarray(0, 32));
  const d = readCapacity16Data.read(padded);
  if (d.blockLength === 0) return fail('READ CAPACITY(16) data: logical block length 0');
  return {
    ok: true,
    value: {
      lastLba: d.lastLba,
      blockLength: d.blockLength,
      protectionEnabled: d.protEn === 1,
      protectionType: d.pType,
      logicalBlocksPerPhysicalExponent: d.physicalExponent,
      lbpme: d.lbpme === 1,
      lbprz: d.lbprz === 1,
      lowestAlignedLba: (d.lowestAlignedHigh << 8) | d.lowestAlignedLow,
    },
  };
}

// ---- REPORT LUNS ----

export interface ReportedLun {
  /** The LUN number for single-level peripheral (bus 0) or flat space addressing. */
  readonly lun?: number;
  readonly addressMethod: number;
  /** The 8-byte LUN structure (a copy). */
  readonly raw: Uint8Array;
}

export interface LunList {
  readonly luns: readonly ReportedLun[];
  /** LUN LIST LENGTH from the header, in bytes. */
  readonly listLength: number;
  /** The allocation length cut the list short; resend with 8 + listLength. */
  readonly truncated: boolean;
}

/** Decodes a single-level LUN structure (SAM-5 4.7); other forms keep only the raw bytes. */
export function decodeLun(raw: Uint8Array): ReportedLun {
  const copy = raw.slice(0, 8);
  const b0 = copy[0] ?? 0;
  const method = b0 >> 6;
  const lowerLevelsZero = copy.subarray(2).every((b) => b === 0);
  let lun: number | undefined;
  if (lowerLevelsZero && method === 0 && (b0 & 0x3f) === 0) lun = copy[1] ?? 0;
  else if (lowerLevelsZero && method === 1) lun = ((b0 & 0x3f) << 8) | (copy[1] ?? 0);
  return lun === undefined
    ? { addressMethod: method, raw: copy }
    : { lun, addressMethod: method, raw: copy };
}

export function parseReportLuns(bytes: Uint8Array): Result<LunList> {
  if (bytes.length < 8)
    return fail(`REPORT LUNS data: need the 8-byte header, have ${bytes.length}`);
  const listLength = be32(bytes, 0);
  if (listLength % 8 !== 0)
    return fail(`REPORT LUNS data: LUN list length ${listLength} is not a multiple of 8`);
  const present = Math.floor((bytes.length - 8) / 8);
  const count = Math.min(listLength / 8, present);
  const luns: ReportedLun[] = [];
  for (let i = 0; i < count; i++) luns.push(decodeLun(bytes.subarray(8 + i * 8, 16 + i * 8)));
  return { ok: true, value: { luns, listLength, truncated: listLength / 8 > present } };
}

// ---- MODE SENSE ----

export interface ModePageData {
  readonly code: number;
  /** 0 for page_0 format pages. */
  readonly subpage: number;
  readonly parametersSavable: boolean;
  /** The whole page, header included (a copy). */
  readonly bytes: Uint8Array;
}

export interface ModeSenseData {
  readonly mediumType: number;
  readonly writeProtected: boolean;
  readonly dpoFua: boolean;
  readonly blockDescriptors: readonly { readonly blocks: bigint; readonly blockLength: number }[];
  readonly pages: readonly ModePageData[];
  /** From the caching page, when it was returned. */
  readonly caching?: { readonly writeCacheEnabled: boolean; readonly readCacheDisabled: boolean };
  /** The allocation length cut the data short; the complete pages are listed. */
  readonly truncated: boolean;
}

/** MODE SENSE(6) (`ten` false) or MODE SENSE(10) parameter data (SPC-4 7.5.4). */
export function parseModeSense(bytes: Uint8Array, ten: boolean): Result<ModeSenseData> {
  const what = ten ? 'MODE SENSE(10) data' : 'MODE SENSE(6) data';
  const headerSize = ten ? 8 : 4;
  if (bytes.length < headerSize)
    return fail(`${what}: need the ${headerSize}-byte header, have ${bytes.length}`);
  const declaredEnd = ten ? be16(bytes, 0) + 2 : (bytes[0] ?? 0) + 1;
  if (declaredEnd < headerSize)
    return fail(
      `${what}: mode data length ${declaredEnd - (ten ? 2 : 1)} is shorter than the header`,
    );
  const end = Math.min(bytes.length, declaredEnd);
  let truncated = bytes.length < declaredEnd;
  const dsp = bytes[ten ? 3 : 2] ?? 0;
  const longLba = ten && ((bytes[4] ?? 0) & 0x01) !== 0;
  const bdl = ten ? be16(bytes, 6) : (bytes[3] ?? 0);
  const descriptorSize = longLba ? 16 : 8;
  if (headerSize + bdl > declaredEnd) {
    return fail(
      `${what}: block descriptor length ${bdl} runs past the mode data length (${declaredEnd} bytes in all)`,
    );
  }
  if (bdl % descriptorSize !== 0)
    return fail(`${what}: block descriptor length ${bdl} is not a multiple of ${descriptorSize}`);
  const blockDescriptors: { blocks: bigint; blockLength: number }[] = [];
  for (
    let at = headerSize;
    at + descriptorSize <= Math.min(end, headerSize + bdl);
    at += descriptorSize
  ) {
    blockDescriptors.push(
      longLba
        ? { blocks: be64(bytes, at), blockLength: be32(bytes, at + 12) }
        : { blocks: BigInt(be32(bytes, at)), blockLength: be32(bytes, at + 4) & 0xffffff },
    );
  }
  const pages: ModePageData[] = [];
  let at = headerSize + bdl;
  while (at < end) {
    const b0 = bytes[at] ?? 0;
    const spf = (b0 & 0x40) !== 0;
    const headerLength = spf ? 4 : 2;
    if (at + headerLength > end) {
      if (end === declaredEnd) return fail(`${what}: ${end - at} stray bytes at offset ${at}`);
      truncated = true;
      break;
    }
    const length = spf ? be16(bytes, at + 2) : (bytes[at + 1] ?? 0);
    const next = at + headerLength + length;
    if (next > declaredEnd) {
      return fail(
        `${what}: mode page ${hexByte(b0 & 0x3f)} at offset ${at} (length ${length}) runs past the mode data length`,
      );
    }
    if (next > end) {
      truncated = true;
      break;
    }
    pages.push({
      code: b0 & 0x3f,
      subpage: spf ? (bytes[at + 1] ?? 0) : 0,
      parametersSavable: (b0 & 0x80) !== 0,
      bytes: bytes.slice(at, next),
    });
    at = next;
  }
  const cachingPage = pages.find(
    (p) => p.code === ModePage.CACHING && p.subpage === 0 && p.bytes.length >= 3,
  );
  const cacheFlags = cachingPage?.bytes[2] ?? 0;
  return {
    ok: true,
    value: {
      mediumType: bytes[ten ? 2 : 1] ?? 0,
      writeProtected: (dsp & 0x80) !== 0,
      dpoFua: (dsp & 0x10) !== 0,
      blockDescriptors,
      pages,
      ...(cachingPage
        ? {
            caching: {
              writeCacheEnabled: (cacheFlags & 0x04) !== 0,
              readCacheDisabled: (cacheFlags & 0x01) !== 0,
            },
          }
        : {}),
      truncated,
    },
  };
}
