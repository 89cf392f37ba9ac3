/**
 * Probing one LUN of the guest's storvsc into a GuestScsiDisk, as Linux's
 * SCSI scan and sd probe do (drivers/scsi/scsi_scan.c, drivers/scsi/sd.c).
 */

import { VpdPage } from '../../../scsi/codes.ts';
import * as cdbs from '../../../scsi/initiator/cdb-builders.ts';
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
} from '../../../scsi/initiator/response-parsers.ts';
import { GuestScsiDisk, type ScsiTransport } from './disk.ts';
import { MAX_ATTEMPTS, withRetries } from './retry.ts';
import { hex, ScsiCommandError } from './scsi-errors.ts';

/** A data-in command during the probe (retried as any command is); the bytes it returned. */
async function dataIn(
  transport: ScsiTransport,
  lun: number,
  what: string,
  cdb: Uint8Array,
  allocation: number,
): Promise<Uint8Array> {
  let data: Uint8Array = new Uint8Array(0);
  const { verdict, result } = await withRetries(async () => {
    const answer = await transport.command(lun, cdb, allocation);
    data = answer.data;
    return answer.result;
  });
  if (verdict === 'ok') return data;
  if (verdict === 'retry' || verdict === 'wait') {
    throw new Error(`${what} on LUN ${lun}: still failing after ${MAX_ATTEMPTS} attempts`);
  }
  throw new ScsiCommandError(what, result);
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
  const ready = await withRetries(
    async () => (await transport.command(lun, cdbs.testUnitReady(), 0)).result,
  );
  if (ready.verdict === 'gone' || ready.verdict === 'fail') {
    throw new ScsiCommandError('TEST UNIT READY', ready.result);
  }
  if (ready.verdict !== 'ok') throw new Error(`LUN ${lun} did not become ready`);
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
