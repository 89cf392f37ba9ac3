import { array, bits, bytes, reserved, struct, u8, u16be, u32be, u64be } from '../wire/index.ts';

/**
 * Wire layouts of the SCSI parameter data both ends exchange (SPC-4, SBC-3).
 * SCSI is big-endian; bitfields inside one byte are declared from bit 0 up.
 * These are anonymous `struct`s, not registered declarations: they have no
 * counterpart in the Linux oracle (the kernel builds and parses them by hand).
 *
 * CDBs themselves are decoded in place (cdb.ts) because READ/WRITE decoding is
 * on the data path.
 */

/** Fixed-format sense data (SPC-4 4.5.3), 18 bytes. */
export const fixedSense = struct({
  $code: bits(1, { responseCode: 7, valid: 1 }),
  obsolete: reserved(1),
  $key: bits(1, { senseKey: 4, reserved4: 1, ili: 1, eom: 1, filemark: 1 }),
  information: u32be,
  additionalLength: u8,
  commandSpecific: u32be,
  asc: u8,
  ascq: u8,
  fru: u8,
  senseKeySpecific: bytes(3),
});

/** Descriptor-format sense data header (SPC-4 4.5.2), 8 bytes. */
export const descriptorSenseHeader = struct({
  $code: bits(1, { responseCode: 7, reserved7: 1 }),
  $key: bits(1, { senseKey: 4, reserved4: 4 }),
  asc: u8,
  ascq: u8,
  $sdat: bits(1, { reserved0: 7, sdatOvfl: 1 }),
  reserved5: reserved(2),
  additionalLength: u8,
});

/** Information sense data descriptor, type 0x00 (SPC-4 4.5.2.2), 12 bytes. */
export const informationDescriptor = struct({
  type: u8,
  length: u8,
  $valid: bits(1, { reserved0: 7, valid: 1 }),
  reserved3: reserved(1),
  information: u64be,
});

/** Sense key specific sense data descriptor, type 0x02 (SPC-4 4.5.2.4), 8 bytes. */
export const senseKeySpecificDescriptor = struct({
  type: u8,
  length: u8,
  reserved2: reserved(2),
  senseKeySpecific: bytes(3),
  reserved7: reserved(1),
});

/** READ CAPACITY(10) parameter data (SBC-3 5.15.2), 8 bytes. */
export const readCapacity10Data = struct({
  lastLba: u32be,
  blockLength: u32be,
});

/** READ CAPACITY(16) parameter data (SBC-3 5.16.2), 32 bytes. */
export const readCapacity16Data = struct({
  lastLba: u64be,
  blockLength: u32be,
  $prot: bits(1, { protEn: 1, pType: 3, reserved4: 4 }),
  $exp: bits(1, { physicalExponent: 4, piExponent: 4 }),
  $lbp: bits(1, { lowestAlignedHigh: 6, lbprz: 1, lbpme: 1 }),
  lowestAlignedLow: u8,
  reserved16: reserved(16),
});

/** Standard INQUIRY data (SPC-4 6.4.2), the 96-byte form with version descriptors. */
export const standardInquiryData = struct({
  $peripheral: bits(1, { deviceType: 5, qualifier: 3 }),
  $rmb: bits(1, { reserved0: 6, luCong: 1, rmb: 1 }),
  version: u8,
  $format: bits(1, { responseDataFormat: 4, hisup: 1, normaca: 1, obsolete6: 2 }),
  additionalLength: u8,
  flags5: u8,
  flags6: u8,
  /** Bit 1 is CMDQUE. */
  flags7: u8,
  vendor: bytes(8),
  product: bytes(16),
  revision: bytes(4),
  vendorSpecific: bytes(20),
  flags56: u8,
  reserved57: reserved(1),
  versionDescriptors: array(u16be, 8),
  reserved74: reserved(22),
});

/** The 36 bytes every standard INQUIRY response must have. */
export const STANDARD_INQUIRY_MIN = 36;

/** VPD page header (SPC-4 7.8.1), 4 bytes. */
export const vpdHeader = struct({
  $peripheral: bits(1, { deviceType: 5, qualifier: 3 }),
  pageCode: u8,
  pageLength: u16be,
});

/** Block Limits VPD page 0xB0 (SBC-3 6.5.3), 64 bytes. */
export const blockLimitsPage = struct({
  header: vpdHeader,
  $wsnz: bits(1, { wsnz: 1, reserved1: 7 }),
  maxCompareAndWriteLength: u8,
  optimalTransferLengthGranularity: u16be,
  maxTransferLength: u32be,
  optimalTransferLength: u32be,
  maxPrefetchLength: u32be,
  maxUnmapLbaCount: u32be,
  maxUnmapBlockDescriptorCount: u32be,
  optimalUnmapGranularity: u32be,
  /** Bit 31 is UGAVALID, bits 30..0 the alignment. */
  unmapGranularityAlignment: u32be,
  maxWriteSameLength: u64be,
  reserved44: reserved(20),
});

/** Block Device Characteristics VPD page 0xB1 (SBC-3 6.5.2), 64 bytes. */
export const blockDeviceCharacteristicsPage = struct({
  header: vpdHeader,
  mediumRotationRate: u16be,
  productType: u8,
  $formFactor: bits(1, { nominalFormFactor: 4, wacereq: 2, wabereq: 2 }),
  $b8: bits(1, { vbuls: 1, fuab: 1, reserved2: 6 }),
  reserved9: reserved(55),
});

/** Logical Block Provisioning VPD page 0xB2 (SBC-3 6.5.4), 8 bytes (no provisioning group). */
export const logicalBlockProvisioningPage = struct({
  header: vpdHeader,
  thresholdExponent: u8,
  $flags: bits(1, {
    dp: 1,
    ancSup: 1,
    lbprz: 1,
    reserved3: 2,
    lbpws10: 1,
    lbpws: 1,
    lbpu: 1,
  }),
  $type: bits(1, { provisioningType: 3, reserved6: 5 }),
  reserved7: reserved(1),
});

/** Designation descriptor header inside VPD page 0x83 (SPC-4 7.8.6.1), 4 bytes. */
export const designatorHeader = struct({
  $codeSet: bits(1, { codeSet: 4, protocolIdentifier: 4 }),
  $type: bits(1, { designatorType: 4, association: 2, reserved6: 1, piv: 1 }),
  reserved2: reserved(1),
  length: u8,
});

/** Mode parameter header for MODE SENSE(6)/MODE SELECT(6) (SPC-4 7.5.5), 4 bytes. */
export const modeHeader6 = struct({
  modeDataLength: u8,
  mediumType: u8,
  /** For disks (SBC-3 6.4.1): bit 7 WP, bit 4 DPOFUA. */
  deviceSpecific: u8,
  blockDescriptorLength: u8,
});

/** Mode parameter header for MODE SENSE(10)/MODE SELECT(10), 8 bytes. */
export const modeHeader10 = struct({
  modeDataLength: u16be,
  mediumType: u8,
  deviceSpecific: u8,
  $longLba: bits(1, { longLba: 1, reserved1: 7 }),
  reserved5: reserved(1),
  blockDescriptorLength: u16be,
});

/** Short LBA mode parameter block descriptor (SBC-3 6.4.2.2), 8 bytes. */
export const shortBlockDescriptor = struct({
  blocks: u32be,
  reserved4: reserved(1),
  blockLengthHigh: u8,
  blockLengthLow: u16be,
});

/** Long LBA mode parameter block descriptor (SBC-3 6.4.2.3), 16 bytes. */
export const longBlockDescriptor = struct({
  blocks: u64be,
  reserved8: reserved(4),
  blockLength: u32be,
});

/** Device-specific parameter bits of a disk's mode parameter header. */
export const MODE_DSP_WP = 0x80;
export const MODE_DSP_DPOFUA = 0x10;

/** Caching mode page 0x08 (SBC-3 6.4.5), 20 bytes. Byte 2 bit 2 is WCE, bit 0 RCD. */
export const cachingModePage = struct({
  $code: bits(1, { pageCode: 6, spf: 1, ps: 1 }),
  pageLength: u8,
  $b2: bits(1, { rcd: 1, mf: 1, wce: 1, size: 1, disc: 1, cap: 1, abpf: 1, ic: 1 }),
  $b3: bits(1, { writeRetentionPriority: 4, demandReadRetentionPriority: 4 }),
  disablePrefetchTransferLength: u16be,
  minimumPrefetch: u16be,
  maximumPrefetch: u16be,
  maximumPrefetchCeiling: u16be,
  flags12: u8,
  cacheSegments: u8,
  cacheSegmentSize: u16be,
  reserved16: reserved(1),
  obsolete17: reserved(3),
});

/** Control mode page 0x0A (SPC-4 7.5.7), 12 bytes. */
export const controlModePage = struct({
  $code: bits(1, { pageCode: 6, spf: 1, ps: 1 }),
  pageLength: u8,
  /** TST 7..5, TMF_ONLY 4, DPICZ 3, D_SENSE 2, GLTSD 1, RLEC 0. */
  flags2: u8,
  /** QUEUE ALGORITHM MODIFIER 7..4, NUAR 3, QERR 2..1. */
  flags3: u8,
  /** VS 7, RAC 6, UA_INTLCK_CTRL 5..4, SWP 3. */
  flags4: u8,
  /** ATO 7, TAS 6, ATMPE 5, RWWP 4, AUTOLOAD MODE 2..0. */
  flags5: u8,
  obsolete6: u16be,
  busyTimeoutPeriod: u16be,
  extendedSelfTestCompletionTime: u16be,
});

/** UNMAP parameter list header (SBC-3 5.28.2), 8 bytes. */
export const unmapParameterHeader = struct({
  unmapDataLength: u16be,
  blockDescriptorDataLength: u16be,
  reserved4: reserved(4),
});

/** UNMAP block descriptor (SBC-3 5.28.2), 16 bytes. */
export const unmapBlockDescriptor = struct({
  lba: u64be,
  blocks: u32be,
  reserved12: reserved(4),
});

/** REPORT LUNS parameter data header (SPC-4 6.33); 8-byte LUN entries follow. */
export const reportLunsHeader = struct({
  lunListLength: u32be,
  reserved4: reserved(4),
});
