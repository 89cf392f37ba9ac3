import { DEVICE_TYPE_DISK, VpdPage } from '../codes.ts';
import {
  blockDeviceCharacteristicsPage,
  blockLimitsPage,
  designatorHeader,
  logicalBlockProvisioningPage,
  standardInquiryData,
  vpdHeader,
} from '../protocol.ts';

/**
 * The INQUIRY data a disk LUN reports: standard data (SPC-4 6.4.2) and the
 * VPD pages 0x00, 0x80, 0x83 (SPC-4 7.8) and 0xB0, 0xB1, 0xB2 (SBC-3 6.5).
 * Identity and designators follow what Hyper-V's storvsp reports for a
 * virtual disk (vendor "Msft", product "Virtual Disk", a T10 vendor-id
 * designator followed by an NAA IEEE Registered Extended one).
 */

export interface DiskIdentity {
  readonly vendor: string;
  readonly product: string;
  readonly revision: string;
  readonly serial: string;
  /** The backend's 16-byte unique id. */
  readonly identifier: Uint8Array;
}

export interface DiskLimits {
  readonly blockSize: number;
  /** Logical blocks per physical block (a power of two). */
  readonly blocksPerPhysical: number;
  readonly maxTransferBlocks: number;
  readonly maxWriteSameBlocks: number;
  /** 0 when the backend cannot discard (no UNMAP). */
  readonly maxUnmapBlocks: number;
  readonly maxUnmapDescriptors: number;
  readonly optimalUnmapGranularity: number;
  readonly canDiscard: boolean;
  readonly rotationRate: number;
}

const VERSION_SPC4 = 0x06;
const RESPONSE_DATA_FORMAT = 2;
const CMDQUE = 0x02;
/** Version descriptors: SAM-5, SPC-4, SBC-3 (no version claimed). */
const VERSION_DESCRIPTORS = [0x00a0, 0x0460, 0x04c0];

/** Designator fields (SPC-4 7.8.6.1). */
const CODE_SET_BINARY = 1;
const DESIGNATOR_T10_VENDOR_ID = 1;
const DESIGNATOR_NAA = 3;
/** NAA 6 (IEEE Registered Extended) with Microsoft's IEEE company id 00-22-48. */
const NAA_MSFT_PREFIX = [0x60, 0x02, 0x24, 0x80];

const PROVISIONING_FULL = 0;
const PROVISIONING_THIN = 2;

/** The text fields of INQUIRY: ASCII, left-aligned, padded with spaces. */
export function padAscii(text: string, width: number): Uint8Array {
  const out = new Uint8Array(width).fill(0x20);
  for (let i = 0; i < Math.min(width, text.length); i++) out[i] = text.charCodeAt(i) & 0x7f;
  return out;
}

export function standardInquiry(identity: DiskIdentity): Uint8Array {
  return standardInquiryData.write({
    deviceType: DEVICE_TYPE_DISK,
    qualifier: 0,
    luCong: 0,
    rmb: 0,
    version: VERSION_SPC4,
    responseDataFormat: RESPONSE_DATA_FORMAT,
    hisup: 0,
    normaca: 0,
    additionalLength: standardInquiryData.size - 5,
    flags5: 0,
    flags6: 0,
    flags7: CMDQUE,
    vendor: padAscii(identity.vendor, 8),
    product: padAscii(identity.product, 16),
    revision: padAscii(identity.revision, 4),
    vendorSpecific: new Uint8Array(20),
    flags56: 0,
    versionDescriptors: VERSION_DESCRIPTORS,
  });
}

/**
 * Standard INQUIRY data for a LUN with no logical unit behind it: peripheral
 * qualifier 3, device type 0x1f (SPC-4 6.4.2), in the 36-byte form.
 */
export function absentLunInquiry(): Uint8Array {
  const out = new Uint8Array(36);
  out[0] = 0x7f;
  out[2] = VERSION_SPC4;
  out[3] = RESPONSE_DATA_FORMAT;
  out[4] = 36 - 5;
  out.fill(0x20, 8, 36);
  return out;
}

/** The VPD pages a disk supports, ascending (SPC-4 7.8.13). */
export const SUPPORTED_VPD_PAGES: readonly number[] = [
  VpdPage.SUPPORTED_PAGES,
  VpdPage.UNIT_SERIAL_NUMBER,
  VpdPage.DEVICE_IDENTIFICATION,
  VpdPage.BLOCK_LIMITS,
  VpdPage.BLOCK_DEVICE_CHARACTERISTICS,
  VpdPage.LOGICAL_BLOCK_PROVISIONING,
];

function simplePage(pageCode: number, body: Uint8Array, peripheral = DEVICE_TYPE_DISK): Uint8Array {
  const out = new Uint8Array(vpdHeader.size + body.length);
  vpdHeader.writeInto(out, 0, {
    deviceType: peripheral & 0x1f,
    qualifier: peripheral >> 5,
    pageCode,
    pageLength: body.length,
  });
  out.set(body, vpdHeader.size);
  return out;
}

/** Supported pages for a LUN with no logical unit: only page 0x00 itself. */
export function absentLunSupportedPages(): Uint8Array {
  return simplePage(VpdPage.SUPPORTED_PAGES, Uint8Array.of(VpdPage.SUPPORTED_PAGES), 0x7f);
}

function deviceIdentification(identity: DiskIdentity): Uint8Array {
  const id = identity.identifier;
  // T10 vendor ID designator: vendor (8 bytes) + the 16-byte identifier.
  const t10 = new Uint8Array(designatorHeader.size + 24);
  designatorHeader.writeInto(t10, 0, {
    codeSet: CODE_SET_BINARY,
    protocolIdentifier: 0,
    designatorType: DESIGNATOR_T10_VENDOR_ID,
    association: 0,
    piv: 0,
    length: 24,
  });
  t10.set(padAscii(identity.vendor, 8), 4);
  t10.set(id.subarray(0, 16), 12);
  // NAA designator: 6h + company id, then the identifier's first and last 6 bytes.
  const naa = new Uint8Array(designatorHeader.size + 16);
  designatorHeader.writeInto(naa, 0, {
    codeSet: CODE_SET_BINARY,
    protocolIdentifier: 0,
    designatorType: DESIGNATOR_NAA,
    association: 0,
    piv: 0,
    length: 16,
  });
  naa.set(NAA_MSFT_PREFIX, 4);
  naa.set(id.subarray(0, 6), 8);
  naa.set(id.subarray(10, 16), 14);
  const body = new Uint8Array(t10.length + naa.length);
  body.set(t10, 0);
  body.set(naa, t10.length);
  return simplePage(VpdPage.DEVICE_IDENTIFICATION, body);
}

function blockLimits(limits: DiskLimits): Uint8Array {
  return blockLimitsPage.write({
    header: {
      deviceType: DEVICE_TYPE_DISK,
      qualifier: 0,
      pageCode: VpdPage.BLOCK_LIMITS,
      pageLength: blockLimitsPage.size - vpdHeader.size,
    },
    // WSNZ=1: a WRITE SAME of zero blocks is refused rather than meaning "to the end".
    wsnz: 1,
    maxCompareAndWriteLength: 0,
    optimalTransferLengthGranularity: limits.blocksPerPhysical,
    maxTransferLength: limits.maxTransferBlocks,
    optimalTransferLength: 0,
    maxPrefetchLength: 0,
    maxUnmapLbaCount: limits.canDiscard ? limits.maxUnmapBlocks : 0,
    maxUnmapBlockDescriptorCount: limits.canDiscard ? limits.maxUnmapDescriptors : 0,
    optimalUnmapGranularity: limits.canDiscard ? limits.optimalUnmapGranularity : 0,
    // UGAVALID with alignment 0: unmap granules start at LBA 0.
    unmapGranularityAlignment: limits.canDiscard ? 0x8000_0000 : 0,
    maxWriteSameLength: limits.maxWriteSameBlocks,
  });
}

function blockDeviceCharacteristics(limits: DiskLimits): Uint8Array {
  return blockDeviceCharacteristicsPage.write({
    header: {
      deviceType: DEVICE_TYPE_DISK,
      qualifier: 0,
      pageCode: VpdPage.BLOCK_DEVICE_CHARACTERISTICS,
      pageLength: blockDeviceCharacteristicsPage.size - vpdHeader.size,
    },
    mediumRotationRate: limits.rotationRate,
    productType: 0,
  });
}

function logicalBlockProvisioning(limits: DiskLimits): Uint8Array {
  const lbp = limits.canDiscard ? 1 : 0;
  return logicalBlockProvisioningPage.write({
    header: {
      deviceType: DEVICE_TYPE_DISK,
      qualifier: 0,
      pageCode: VpdPage.LOGICAL_BLOCK_PROVISIONING,
      pageLength: logicalBlockProvisioningPage.size - vpdHeader.size,
    },
    // No provisioning thresholds.
    thresholdExponent: 0,
    dp: 0,
    ancSup: 0,
    // The BlockDevice contract: discarded ranges read back as zeros.
    lbprz: lbp,
    lbpws10: lbp,
    lbpws: lbp,
    lbpu: lbp,
    provisioningType: limits.canDiscard ? PROVISIONING_THIN : PROVISIONING_FULL,
  });
}

/** The VPD page with that code, or undefined if the disk does not support it. */
export function vpdPage(
  pageCode: number,
  identity: DiskIdentity,
  limits: DiskLimits,
): Uint8Array | undefined {
  switch (pageCode) {
    case VpdPage.SUPPORTED_PAGES:
      return simplePage(pageCode, Uint8Array.from(SUPPORTED_VPD_PAGES));
    case VpdPage.UNIT_SERIAL_NUMBER:
      return simplePage(pageCode, padAscii(identity.serial, identity.serial.length));
    case VpdPage.DEVICE_IDENTIFICATION:
      return deviceIdentification(identity);
    case VpdPage.BLOCK_LIMITS:
      return blockLimits(limits);
    case VpdPage.BLOCK_DEVICE_CHARACTERISTICS:
      return blockDeviceCharacteristics(limits);
    case VpdPage.LOGICAL_BLOCK_PROVISIONING:
      return logicalBlockProvisioning(limits);
    default:
      return undefined;
  }
}
