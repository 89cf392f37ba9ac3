import type { BlockDevice } from '../../block/block-device.ts';
import { be16, be32, cdbLengthForOpcode } from '../cdb.ts';
import { Asc, type AscPair, SAI_READ_CAPACITY_16, ScsiOp, SenseKey } from '../codes.ts';
import { readCapacity10Data, readCapacity16Data } from '../protocol.ts';
import {
  encodeDescriptorSense,
  encodeFixedSense,
  type SenseCondition,
  senseCondition,
} from '../sense.ts';
import { type BackendOperation, senseForBackendError } from './backend-errors.ts';
import { readWrite, synchronizeCache, unmap, verify, writeSame } from './block-commands.ts';
import type { ScsiCommand, ScsiResult } from './command.ts';
import { respondDataIn, takeDataOut } from './data-phase.ts';
import { type DiskIdentity, type DiskLimits, standardInquiry, vpdPage } from './inquiry-data.ts';
import { type ModeState, modeSelect, modeSense } from './mode-pages.ts';
import { executeReportLuns } from './report-luns.ts';
import { cdbField, checkCondition, good, illegalRequest } from './result.ts';

/**
 * A SCSI direct-access logical unit (SBC-3) over a BlockDevice: the device
 * model the host's storvsp executes guest commands against.
 *
 * `execute` never throws or rejects; every failure is CHECK CONDITION with
 * fixed-format sense data. READ and WRITE move data straight between the
 * initiator's scatter/gather views and the backend (readv/writev on
 * subarrays), with no intermediate copy. Any number of commands may be in
 * flight at once.
 *
 * Order of checks for every command: empty CDB; pending unit attention
 * (except INQUIRY, REPORT LUNS, REQUEST SENSE, per SAM-5 5.14); opcode; CDB
 * length for the opcode's group; NACA in the control byte; the command's own
 * CDB fields; LBA range; transfer-length limits; data direction and buffer
 * size (data-phase.ts); write protection; then the backend.
 */

export interface ScsiDiskOptions {
  /** INQUIRY vendor identification, up to 8 ASCII characters (default "Msft"). */
  readonly vendor?: string;
  /** Up to 16 ASCII characters (default "Virtual Disk"). */
  readonly product?: string;
  /** Up to 4 ASCII characters (default "1.0"). */
  readonly revision?: string;
  /** VPD page 0x80; default: the backend identifier in hex. */
  readonly serial?: string;
  /** VPD page 0xB1 medium rotation rate: 1 = non-rotating (default), else RPM. */
  readonly rotationRate?: number;
  /** Initial WCE bit of the caching mode page (default true). */
  readonly writeCacheEnabled?: boolean;
  /** Largest READ/WRITE/VERIFY transfer in bytes (default 8 MiB). */
  readonly maxTransferBytes?: number;
  /** Largest WRITE SAME range in bytes (default 64 MiB). */
  readonly maxWriteSameBytes?: number;
  /** Most UNMAP block descriptors per command (default 4095, all a 16-bit list holds). */
  readonly maxUnmapDescriptors?: number;
  /** Most blocks one UNMAP command may unmap (default 0xFFFFFFFF). */
  readonly maxUnmapBlocks?: number;
  /** Optimal unmap granularity in blocks (default: one physical block). */
  readonly optimalUnmapGranularity?: number;
}

const MiB = 1024 * 1024;
const MAX_UNMAP_DESCRIPTORS = Math.floor((0xffff - 8) / 16);

/** Commands a pending unit attention does not interrupt (SAM-5 5.14). */
const UNIT_ATTENTION_EXEMPT = new Set<number>([
  ScsiOp.INQUIRY,
  ScsiOp.REPORT_LUNS,
  ScsiOp.REQUEST_SENSE,
]);

/** Commands refused while the unit is stopped by START STOP UNIT. */
const MEDIUM_ACCESS = new Set<number>([
  ScsiOp.READ_6,
  ScsiOp.READ_10,
  ScsiOp.READ_12,
  ScsiOp.READ_16,
  ScsiOp.WRITE_6,
  ScsiOp.WRITE_10,
  ScsiOp.WRITE_12,
  ScsiOp.WRITE_16,
  ScsiOp.VERIFY_10,
  ScsiOp.VERIFY_12,
  ScsiOp.VERIFY_16,
  ScsiOp.WRITE_SAME_10,
  ScsiOp.WRITE_SAME_16,
  ScsiOp.UNMAP,
  ScsiOp.SYNCHRONIZE_CACHE_10,
  ScsiOp.SYNCHRONIZE_CACHE_16,
]);

const SUPPORTED_OPS = new Set<number>(Object.values(ScsiOp));

function asciiOption(name: string, value: string | undefined, fallback: string, max: number) {
  const text = value ?? fallback;
  if (text.length > max || !/^[\x20-\x7e]*$/.test(text)) {
    throw new RangeError(
      `SCSI disk option ${name}: ${JSON.stringify(text)} must be at most ${max} printable ASCII characters`,
    );
  }
  return text;
}

function integerOption(
  name: string,
  value: number | undefined,
  fallback: number,
  min: number,
  max: number,
) {
  const n = value ?? fallback;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new RangeError(`SCSI disk option ${name}: ${n} is not an integer in ${min}..${max}`);
  }
  return n;
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

export class ScsiDisk {
  readonly device: BlockDevice;
  readonly blockSize: number;
  readonly identity: DiskIdentity;
  readonly limits: DiskLimits;
  private writeCacheEnabled: boolean;
  private readonly defaultWriteCacheEnabled: boolean;
  private knownBlocks: number;
  private readonly attentions: AscPair[] = [];
  private stopped = false;
  private readonly pages = new Map<number, Uint8Array | undefined>();
  private inquiryData: Uint8Array | undefined;

  constructor(device: BlockDevice, options: ScsiDiskOptions = {}) {
    const blockSize = device.logicalSectorSize;
    if (
      !Number.isSafeInteger(blockSize) ||
      blockSize < 512 ||
      blockSize > 65536 ||
      blockSize & (blockSize - 1)
    ) {
      throw new RangeError(
        `SCSI disk: logical sector size ${blockSize} is not a power of two in 512..65536`,
      );
    }
    this.device = device;
    this.blockSize = blockSize;
    const physical = device.physicalSectorSize;
    const ratio = physical / blockSize;
    const blocksPerPhysical =
      Number.isInteger(ratio) && ratio >= 1 && ratio <= 2 ** 15 && (ratio & (ratio - 1)) === 0
        ? ratio
        : 1;
    const identifier = new Uint8Array(16);
    identifier.set(device.identifier.subarray(0, 16));
    this.identity = {
      vendor: asciiOption('vendor', options.vendor, 'Msft', 8),
      product: asciiOption('product', options.product, 'Virtual Disk', 16),
      revision: asciiOption('revision', options.revision, '1.0', 4),
      serial: asciiOption('serial', options.serial, hex(identifier), 252),
      identifier,
    };
    const maxTransferBytes = integerOption(
      'maxTransferBytes',
      options.maxTransferBytes,
      8 * MiB,
      blockSize,
      2 ** 40,
    );
    const maxWriteSameBytes = integerOption(
      'maxWriteSameBytes',
      options.maxWriteSameBytes,
      64 * MiB,
      blockSize,
      2 ** 50,
    );
    this.limits = {
      blockSize,
      blocksPerPhysical,
      maxTransferBlocks: Math.min(Math.floor(maxTransferBytes / blockSize), 0xffffffff),
      maxWriteSameBlocks: Math.floor(maxWriteSameBytes / blockSize),
      maxUnmapBlocks: integerOption(
        'maxUnmapBlocks',
        options.maxUnmapBlocks,
        0xffffffff,
        1,
        0xffffffff,
      ),
      maxUnmapDescriptors: integerOption(
        'maxUnmapDescriptors',
        options.maxUnmapDescriptors,
        MAX_UNMAP_DESCRIPTORS,
        1,
        MAX_UNMAP_DESCRIPTORS,
      ),
      optimalUnmapGranularity: integerOption(
        'optimalUnmapGranularity',
        options.optimalUnmapGranularity,
        blocksPerPhysical,
        1,
        0xffffffff,
      ),
      canDiscard: device.canDiscard,
      rotationRate: integerOption('rotationRate', options.rotationRate, 1, 0, 0xfffe),
    };
    this.defaultWriteCacheEnabled = options.writeCacheEnabled ?? true;
    this.writeCacheEnabled = this.defaultWriteCacheEnabled;
    this.knownBlocks = this.blocks;
  }

  /** The capacity in logical blocks, as the backend reports it now. */
  get blocks(): number {
    return Math.floor(this.device.size / this.blockSize);
  }

  /** Whether the caching mode page's WCE bit is set (MODE SELECT can change it). */
  get writeCache(): boolean {
    return this.writeCacheEnabled;
  }

  /** Queues a unit attention condition for the next command (duplicates collapse). */
  postUnitAttention(code: AscPair): void {
    if (!this.attentions.some((a) => a.asc === code.asc && a.ascq === code.ascq)) {
      this.attentions.push(code);
    }
  }

  /** Drops a pending unit attention (REPORT LUNS clears REPORTED LUNS DATA HAS CHANGED). */
  clearUnitAttention(code: AscPair): void {
    const i = this.attentions.findIndex((a) => a.asc === code.asc && a.ascq === code.ascq);
    if (i >= 0) this.attentions.splice(i, 1);
  }

  pendingUnitAttentions(): readonly AscPair[] {
    return [...this.attentions];
  }

  async execute(cmd: ScsiCommand): Promise<ScsiResult> {
    try {
      return await this.dispatch(cmd);
    } catch {
      return checkCondition(senseCondition(SenseKey.HARDWARE_ERROR, Asc.INTERNAL_TARGET_FAILURE));
    }
  }

  private dispatch(cmd: ScsiCommand): Promise<ScsiResult> | ScsiResult {
    const cdb = cmd.cdb;
    if (cdb.length === 0) return illegalRequest(Asc.INVALID_COMMAND_OPERATION_CODE);
    const op = cdb[0] ?? 0;
    this.noticeCapacityChange();
    if (!UNIT_ATTENTION_EXEMPT.has(op)) {
      const attention = this.attentions.shift();
      if (attention) return checkCondition(senseCondition(SenseKey.UNIT_ATTENTION, attention));
    }
    const length = cdbLengthForOpcode(op);
    if (!SUPPORTED_OPS.has(op) || length === undefined) {
      return illegalRequest(Asc.INVALID_COMMAND_OPERATION_CODE);
    }
    if (cdb.length < length) return illegalRequest(Asc.INVALID_FIELD_IN_CDB);
    // NACA (control byte bit 2) is not supported (SAM-5 5.9.2).
    if ((cdb[length - 1] ?? 0) & 0x04)
      return illegalRequest(Asc.INVALID_FIELD_IN_CDB, cdbField(length - 1, 2));
    if (this.stopped && MEDIUM_ACCESS.has(op)) {
      return checkCondition(
        senseCondition(SenseKey.NOT_READY, Asc.NOT_READY_INITIALIZING_COMMAND_REQUIRED),
      );
    }

    switch (op) {
      case ScsiOp.TEST_UNIT_READY:
        return this.stopped
          ? checkCondition(
              senseCondition(SenseKey.NOT_READY, Asc.NOT_READY_INITIALIZING_COMMAND_REQUIRED),
            )
          : good(0);
      case ScsiOp.REQUEST_SENSE:
        return this.requestSense(cmd);
      case ScsiOp.INQUIRY:
        return this.inquiry(cmd);
      case ScsiOp.MODE_SENSE_6:
      case ScsiOp.MODE_SENSE_10:
        return this.modeSense(cmd, op === ScsiOp.MODE_SENSE_10);
      case ScsiOp.MODE_SELECT_6:
      case ScsiOp.MODE_SELECT_10:
        return this.modeSelect(cmd, op === ScsiOp.MODE_SELECT_10);
      case ScsiOp.START_STOP_UNIT:
        return this.startStop(cmd);
      case ScsiOp.READ_CAPACITY_10:
        return this.readCapacity10(cmd);
      case ScsiOp.SERVICE_ACTION_IN_16:
        return this.serviceActionIn(cmd);
      case ScsiOp.REPORT_LUNS:
        // A disk on its own is a target with one logical unit at LUN 0; ScsiTarget
        // answers REPORT LUNS itself with its whole inventory.
        return executeReportLuns(cmd, [0]);
      case ScsiOp.VERIFY_10:
      case ScsiOp.VERIFY_12:
      case ScsiOp.VERIFY_16:
        return verify(this, cmd);
      case ScsiOp.SYNCHRONIZE_CACHE_10:
      case ScsiOp.SYNCHRONIZE_CACHE_16:
        return synchronizeCache(this, cmd);
      case ScsiOp.WRITE_SAME_10:
      case ScsiOp.WRITE_SAME_16:
        return writeSame(this, cmd, op === ScsiOp.WRITE_SAME_16);
      case ScsiOp.UNMAP:
        return unmap(this, cmd);
      default:
        return readWrite(this, cmd, op);
    }
  }

  private noticeCapacityChange(): void {
    const blocks = this.blocks;
    if (blocks !== this.knownBlocks) {
      this.knownBlocks = blocks;
      this.postUnitAttention(Asc.CAPACITY_DATA_HAS_CHANGED);
    }
  }

  private modeState(): ModeState {
    return {
      writeCacheEnabled: this.writeCacheEnabled,
      defaultWriteCacheEnabled: this.defaultWriteCacheEnabled,
      readOnly: this.device.readOnly,
      blocks: this.blocks,
      blockSize: this.blockSize,
    };
  }

  private backendFailure(error: unknown, operation: BackendOperation): ScsiResult {
    return checkCondition(senseForBackendError(error, operation, this.blockSize));
  }

  // ---- SPC commands ----

  private requestSense(cmd: ScsiCommand): ScsiResult {
    const descriptor = ((cmd.cdb[1] ?? 0) & 0x01) !== 0;
    const allocation = cmd.cdb[4] ?? 0;
    // SPC-4 5.12: REQUEST SENSE reports (and clears) a pending unit attention.
    const attention = this.attentions[0];
    let condition: SenseCondition;
    if (attention) condition = senseCondition(SenseKey.UNIT_ATTENTION, attention);
    else if (this.stopped)
      condition = senseCondition(SenseKey.NOT_READY, Asc.NOT_READY_INITIALIZING_COMMAND_REQUIRED);
    else condition = senseCondition(SenseKey.NO_SENSE, Asc.NO_ADDITIONAL_SENSE);
    const data = descriptor ? encodeDescriptorSense(condition) : encodeFixedSense(condition);
    const result = respondDataIn(cmd, data, allocation);
    if (attention && result.status === 0) this.attentions.shift();
    return result;
  }

  private inquiry(cmd: ScsiCommand): ScsiResult {
    const cdb = cmd.cdb;
    const flags = cdb[1] ?? 0;
    if (flags & 0x02) return illegalRequest(Asc.INVALID_FIELD_IN_CDB, cdbField(1, 1));
    const evpd = (flags & 0x01) !== 0;
    const page = cdb[2] ?? 0;
    const allocation = be16(cdb, 3);
    if (!evpd) {
      if (page !== 0) return illegalRequest(Asc.INVALID_FIELD_IN_CDB, cdbField(2));
      this.inquiryData ??= standardInquiry(this.identity);
      return respondDataIn(cmd, this.inquiryData, allocation);
    }
    if (!this.pages.has(page)) this.pages.set(page, vpdPage(page, this.identity, this.limits));
    const data = this.pages.get(page);
    if (!data) return illegalRequest(Asc.INVALID_FIELD_IN_CDB, cdbField(2));
    return respondDataIn(cmd, data, allocation);
  }

  private modeSense(cmd: ScsiCommand, ten: boolean): ScsiResult {
    const cdb = cmd.cdb;
    const outcome = modeSense(
      {
        ten,
        dbd: ((cdb[1] ?? 0) & 0x08) !== 0,
        llbaa: ten && ((cdb[1] ?? 0) & 0x10) !== 0,
        pc: (cdb[2] ?? 0) >> 6,
        pageCode: (cdb[2] ?? 0) & 0x3f,
        subpage: cdb[3] ?? 0,
      },
      this.modeState(),
    );
    if (!outcome.ok) return illegalRequest(outcome.code, outcome.pointer);
    return respondDataIn(cmd, outcome.data, ten ? be16(cdb, 7) : (cdb[4] ?? 0));
  }

  private async modeSelect(cmd: ScsiCommand, ten: boolean): Promise<ScsiResult> {
    const cdb = cmd.cdb;
    // SP=1 asks to save pages, which this unit cannot do.
    if ((cdb[1] ?? 0) & 0x01) return illegalRequest(Asc.INVALID_FIELD_IN_CDB, cdbField(1, 0));
    const lengthAt = ten ? 7 : 4;
    const length = ten ? be16(cdb, 7) : (cdb[4] ?? 0);
    if (length === 0) return good(0);
    const params = takeDataOut(cmd, length, cdbField(lengthAt));
    if (!(params instanceof Uint8Array)) return params;
    const outcome = modeSelect(params, ten, this.modeState());
    if (!outcome.ok) {
      return checkCondition(
        senseCondition(
          SenseKey.ILLEGAL_REQUEST,
          outcome.code,
          outcome.pointer ? { fieldPointer: outcome.pointer } : {},
        ),
      );
    }
    const turningOff = this.writeCacheEnabled && !outcome.writeCacheEnabled;
    this.writeCacheEnabled = outcome.writeCacheEnabled;
    if (turningOff && this.device.canFlush) {
      // Data the cache already holds becomes durable before write-through starts.
      try {
        await this.device.flush();
      } catch (error) {
        return this.backendFailure(error, 'write');
      }
    }
    return good(length);
  }

  private async startStop(cmd: ScsiCommand): Promise<ScsiResult> {
    const byte4 = cmd.cdb[4] ?? 0;
    const powerCondition = byte4 >> 4;
    // SBC-3 5.25: START_VALID (0), ACTIVE, IDLE, STANDBY, LU_CONTROL, FORCE_IDLE_0, FORCE_STANDBY_0.
    if (![0x0, 0x1, 0x2, 0x3, 0x7, 0xa, 0xb].includes(powerCondition)) {
      return illegalRequest(Asc.INVALID_FIELD_IN_CDB, cdbField(4, 7));
    }
    // Power conditions other than START_VALID leave the START bit unprocessed; a
    // virtual disk has no power states, so they are accepted and change nothing.
    if (powerCondition !== 0) return good(0);
    if (byte4 & 0x01) {
      this.stopped = false;
      return good(0);
    }
    const noFlush = (byte4 & 0x04) !== 0;
    if (!noFlush && this.device.canFlush) {
      try {
        await this.device.flush();
      } catch (error) {
        return this.backendFailure(error, 'write');
      }
    }
    this.stopped = true;
    return good(0);
  }

  // ---- capacity ----

  private readCapacity10(cmd: ScsiCommand): ScsiResult {
    const cdb = cmd.cdb;
    // SBC-3 5.15: with PMI clear the LBA field must be zero.
    if (((cdb[8] ?? 0) & 0x01) === 0 && be32(cdb, 2) !== 0) {
      return illegalRequest(Asc.INVALID_FIELD_IN_CDB, cdbField(2));
    }
    const total = this.blocks;
    if (total === 0)
      return checkCondition(senseCondition(SenseKey.NOT_READY, Asc.MEDIUM_NOT_PRESENT));
    const data = readCapacity10Data.write({
      // 0xFFFFFFFF tells the initiator to use READ CAPACITY(16).
      lastLba: Math.min(total - 1, 0xffffffff),
      blockLength: this.blockSize,
    });
    return respondDataIn(cmd, data, data.length);
  }

  private serviceActionIn(cmd: ScsiCommand): ScsiResult {
    const cdb = cmd.cdb;
    if (((cdb[1] ?? 0) & 0x1f) !== SAI_READ_CAPACITY_16) {
      return illegalRequest(Asc.INVALID_FIELD_IN_CDB, cdbField(1, 4));
    }
    if (((cdb[14] ?? 0) & 0x01) === 0 && (be32(cdb, 2) !== 0 || be32(cdb, 6) !== 0)) {
      return illegalRequest(Asc.INVALID_FIELD_IN_CDB, cdbField(2));
    }
    const total = this.blocks;
    if (total === 0)
      return checkCondition(senseCondition(SenseKey.NOT_READY, Asc.MEDIUM_NOT_PRESENT));
    const lbp = this.device.canDiscard ? 1 : 0;
    const data = readCapacity16Data.write({
      lastLba: total - 1,
      blockLength: this.blockSize,
      protEn: 0,
      pType: 0,
      physicalExponent: Math.log2(this.limits.blocksPerPhysical),
      piExponent: 0,
      lowestAlignedHigh: 0,
      lbprz: lbp,
      lbpme: lbp,
      lowestAlignedLow: 0,
    });
    return respondDataIn(cmd, data, be32(cdb, 10));
  }
}
