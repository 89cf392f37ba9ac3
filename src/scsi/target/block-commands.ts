import type { BlockDevice } from '../../block/block-device.ts';
import { be16, be32, be64, blockFields, isWriteOp } from '../cdb.ts';
import { Asc, ScsiOp, SenseKey } from '../codes.ts';
import { unmapBlockDescriptor, unmapParameterHeader } from '../protocol.ts';
import { senseCondition } from '../sense.ts';
import { type BackendOperation, senseForBackendError } from './backend-errors.ts';
import type { ScsiCommand, ScsiResult } from './command.ts';
import { checkTransfer, takeDataOut } from './data-phase.ts';
import type { DiskLimits } from './inquiry-data.ts';
import { cdbField, checkCondition, good, illegalRequest, parameterField } from './result.ts';
import { sgPrefix } from './scatter-gather.ts';

/**
 * The SBC-3 commands that touch the medium: READ/WRITE (6/10/12/16), VERIFY
 * (10/12/16), SYNCHRONIZE CACHE (10/16), WRITE SAME (10/16) and UNMAP. The
 * disk (disk.ts) has already checked the opcode, CDB length, control byte,
 * unit attentions and the stopped state; these check the command's own fields,
 * the LBA range, transfer limits, the data phase, write protection, and then
 * call the backend.
 */

/** What the medium commands need from the logical unit. */
export interface BlockUnit {
  readonly device: BlockDevice;
  readonly blockSize: number;
  readonly limits: DiskLimits;
  /** Capacity in logical blocks now. */
  readonly blocks: number;
  /** The caching page's WCE bit: when clear, every write is FUA. */
  readonly writeCache: boolean;
}

/** Chunk size for medium verification and WRITE SAME patterns. */
const CHUNK_BYTES = 1024 * 1024;

/** LBA + length must lie inside the medium; an LBA past the end is out of range even for 0 blocks. */
function outOfRange(unit: BlockUnit, lba: number, blocks: number): ScsiResult | undefined {
  const total = unit.blocks;
  if (lba >= total || blocks > total - lba) return illegalRequest(Asc.LBA_OUT_OF_RANGE);
  return undefined;
}

function writeProtected(unit: BlockUnit): ScsiResult | undefined {
  return unit.device.readOnly
    ? checkCondition(senseCondition(SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED))
    : undefined;
}

function backendFailure(unit: BlockUnit, error: unknown, operation: BackendOperation): ScsiResult {
  return checkCondition(senseForBackendError(error, operation, unit.blockSize));
}

export async function readWrite(
  unit: BlockUnit,
  cmd: ScsiCommand,
  op: number,
): Promise<ScsiResult> {
  const cdb = cmd.cdb;
  const write = isWriteOp(op);
  const six = op === ScsiOp.READ_6 || op === ScsiOp.WRITE_6;
  const flags = six ? 0 : (cdb[1] ?? 0);
  // RDPROTECT/WRPROTECT: this unit has no protection information.
  if (flags & 0xe0) return illegalRequest(Asc.INVALID_FIELD_IN_CDB, cdbField(1, 7));
  const f = blockFields(cdb);
  const range = outOfRange(unit, f.lba, f.blocks);
  if (range) return range;
  if (f.blocks > unit.limits.maxTransferBlocks) {
    return illegalRequest(Asc.INVALID_FIELD_IN_CDB, cdbField(f.lengthAt));
  }
  const bytes = f.blocks * unit.blockSize;
  const bad = checkTransfer(cmd, write ? 'out' : 'in', bytes, cdbField(f.lengthAt));
  if (bad) return bad;
  if (write) {
    const protectedResult = writeProtected(unit);
    if (protectedResult) return protectedResult;
  }
  if (bytes === 0) return good(0);
  const offset = f.lba * unit.blockSize;
  const views = sgPrefix(cmd.buffers, bytes);
  try {
    if (write) {
      const fua = (flags & 0x08) !== 0 || !unit.writeCache;
      await unit.device.writev(offset, views, { fua });
    } else {
      await unit.device.readv(offset, views);
    }
  } catch (error) {
    return backendFailure(unit, error, write ? 'write' : 'read');
  }
  return good(bytes);
}

export async function verify(unit: BlockUnit, cmd: ScsiCommand): Promise<ScsiResult> {
  const cdb = cmd.cdb;
  const flags = cdb[1] ?? 0;
  if (flags & 0xe0) return illegalRequest(Asc.INVALID_FIELD_IN_CDB, cdbField(1, 7));
  // BYTCHK (SBC-3 5.30): 00b medium verification, 01b compare; 11b (one block
  // against every block) is optional and not supported, 10b is reserved.
  const bytchk = (flags >> 1) & 0x03;
  if (bytchk >= 2) return illegalRequest(Asc.INVALID_FIELD_IN_CDB, cdbField(1, 2));
  const f = blockFields(cdb);
  const range = outOfRange(unit, f.lba, f.blocks);
  if (range) return range;
  if (f.blocks === 0) return good(0);
  const offset = f.lba * unit.blockSize;
  const bytes = f.blocks * unit.blockSize;
  if (bytchk === 0) {
    const scratch = new Uint8Array(Math.min(bytes, CHUNK_BYTES));
    for (let done = 0; done < bytes; done += scratch.length) {
      const n = Math.min(scratch.length, bytes - done);
      try {
        await unit.device.read(offset + done, scratch.subarray(0, n));
      } catch (error) {
        return backendFailure(unit, error, 'read');
      }
    }
    return good(0);
  }
  if (f.blocks > unit.limits.maxTransferBlocks) {
    return illegalRequest(Asc.INVALID_FIELD_IN_CDB, cdbField(f.lengthAt));
  }
  const data = takeDataOut(cmd, bytes, cdbField(f.lengthAt));
  if (!(data instanceof Uint8Array)) return data;
  const medium = new Uint8Array(bytes);
  try {
    await unit.device.read(offset, medium);
  } catch (error) {
    return backendFailure(unit, error, 'read');
  }
  for (let i = 0; i < bytes; i++) {
    if (data[i] !== medium[i]) {
      // The INFORMATION field holds the offset of the first differing byte in the data-out buffer.
      return checkCondition(
        senseCondition(SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY, { information: i }),
      );
    }
  }
  return good(bytes);
}

export async function synchronizeCache(unit: BlockUnit, cmd: ScsiCommand): Promise<ScsiResult> {
  const f = blockFields(cmd.cdb);
  // NUMBER OF LOGICAL BLOCKS 0 means "to the end of the medium".
  const total = unit.blocks;
  const range = outOfRange(unit, f.lba, f.blocks === 0 ? total - f.lba : f.blocks);
  if (range) return range;
  if (unit.device.canFlush) {
    try {
      await unit.device.flush();
    } catch (error) {
      return backendFailure(unit, error, 'write');
    }
  }
  return good(0);
}

export async function writeSame(
  unit: BlockUnit,
  cmd: ScsiCommand,
  sixteen: boolean,
): Promise<ScsiResult> {
  const cdb = cmd.cdb;
  const flags = cdb[1] ?? 0;
  if (flags & 0xe0) return illegalRequest(Asc.INVALID_FIELD_IN_CDB, cdbField(1, 7));
  // ANCHOR (bit 4) is not supported (ANC_SUP=0); bits 2..1 are the obsolete PBDATA/LBDATA.
  if (flags & 0x10) return illegalRequest(Asc.INVALID_FIELD_IN_CDB, cdbField(1, 4));
  if (flags & 0x06) return illegalRequest(Asc.INVALID_FIELD_IN_CDB, cdbField(1, 2));
  if (!sixteen && flags & 0x01) return illegalRequest(Asc.INVALID_FIELD_IN_CDB, cdbField(1, 0));
  const unmap = (flags & 0x08) !== 0;
  const ndob = sixteen && (flags & 0x01) !== 0;
  const f = blockFields(cdb);
  // WSNZ=1 in the Block Limits page: zero blocks is refused.
  if (f.blocks === 0) return illegalRequest(Asc.INVALID_FIELD_IN_CDB, cdbField(f.lengthAt));
  const range = outOfRange(unit, f.lba, f.blocks);
  if (range) return range;
  if (f.blocks > unit.limits.maxWriteSameBlocks) {
    return illegalRequest(Asc.INVALID_FIELD_IN_CDB, cdbField(f.lengthAt));
  }
  let block: Uint8Array;
  if (ndob) {
    block = new Uint8Array(unit.blockSize);
  } else {
    const taken = takeDataOut(cmd, unit.blockSize);
    if (!(taken instanceof Uint8Array)) return taken;
    block = taken;
  }
  const protectedResult = writeProtected(unit);
  if (protectedResult) return protectedResult;
  const offset = f.lba * unit.blockSize;
  const bytes = f.blocks * unit.blockSize;
  const fua = !unit.writeCache;
  try {
    if (block.every((b) => b === 0)) {
      if (unmap && unit.device.canDiscard) {
        // Discarded blocks read back as zeros (LBPRZ=1), so unmapping satisfies the write.
        if (unit.device.canWriteZeroes)
          await unit.device.writeZeroes(offset, bytes, { mayUnmap: true, fua });
        else await unit.device.discard(offset, bytes);
      } else if (unit.device.canWriteZeroes) {
        await unit.device.writeZeroes(offset, bytes, { mayUnmap: false, fua });
      } else {
        await writePattern(unit, offset, bytes, block, fua);
      }
    } else {
      await writePattern(unit, offset, bytes, block, fua);
    }
  } catch (error) {
    return backendFailure(unit, error, 'write');
  }
  return good(ndob ? 0 : unit.blockSize);
}

async function writePattern(
  unit: BlockUnit,
  offset: number,
  bytes: number,
  block: Uint8Array,
  fua: boolean,
): Promise<void> {
  const chunk = new Uint8Array(
    Math.min(bytes, Math.max(block.length, CHUNK_BYTES - (CHUNK_BYTES % block.length))),
  );
  for (let at = 0; at < chunk.length; at += block.length) chunk.set(block, at);
  for (let done = 0; done < bytes; done += chunk.length) {
    const n = Math.min(chunk.length, bytes - done);
    await unit.device.write(offset + done, chunk.subarray(0, n), { fua });
  }
}

export async function unmap(unit: BlockUnit, cmd: ScsiCommand): Promise<ScsiResult> {
  const cdb = cmd.cdb;
  // Without discard the unit reports LBPU=0, and UNMAP is not a supported command (SBC-3 5.28).
  if (!unit.device.canDiscard) return illegalRequest(Asc.INVALID_COMMAND_OPERATION_CODE);
  if ((cdb[1] ?? 0) & 0x01) return illegalRequest(Asc.INVALID_FIELD_IN_CDB, cdbField(1, 0));
  const length = be16(cdb, 7);
  if (length === 0) return good(0);
  if (length < 8) return illegalRequest(Asc.PARAMETER_LIST_LENGTH_ERROR);
  const params = takeDataOut(cmd, length, cdbField(7));
  if (!(params instanceof Uint8Array)) return params;
  const protectedResult = writeProtected(unit);
  if (protectedResult) return protectedResult;
  const plan = planUnmap(params, unit.blocks, unit.limits);
  if (!Array.isArray(plan)) return plan;
  try {
    for (const [lba, blocks] of plan) {
      await unit.device.discard(lba * unit.blockSize, blocks * unit.blockSize);
    }
  } catch (error) {
    return backendFailure(unit, error, 'write');
  }
  return good(length);
}

/**
 * Validates an UNMAP parameter list (SBC-3 5.28.2) completely before anything
 * is unmapped: descriptors must lie inside the list, their number and their
 * total blocks within the Block Limits page, each range inside the medium.
 * A trailing partial descriptor is ignored, as SBC-3 says. Returns the
 * [lba, blocks] pairs to discard (zero-block descriptors dropped).
 */
function planUnmap(
  params: Uint8Array,
  total: number,
  limits: DiskLimits,
): Array<[number, number]> | ScsiResult {
  const header = unmapParameterHeader.read(params);
  const descriptorBytes = header.blockDescriptorDataLength;
  if (descriptorBytes > params.length - unmapParameterHeader.size) {
    return checkCondition(
      senseCondition(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST, {
        fieldPointer: parameterField(2),
      }),
    );
  }
  const count = Math.floor(descriptorBytes / unmapBlockDescriptor.size);
  if (count > limits.maxUnmapDescriptors) {
    return checkCondition(
      senseCondition(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST, {
        fieldPointer: parameterField(2),
      }),
    );
  }
  const plan: Array<[number, number]> = [];
  let sum = 0;
  for (let i = 0; i < count; i++) {
    const at = unmapParameterHeader.size + i * unmapBlockDescriptor.size;
    const lba = be64(params, at);
    const blocks = be32(params, at + 8);
    if (blocks === 0) continue;
    if (lba >= total || blocks > total - lba) return illegalRequest(Asc.LBA_OUT_OF_RANGE);
    sum += blocks;
    if (sum > limits.maxUnmapBlocks) {
      return checkCondition(
        senseCondition(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST, {
          fieldPointer: parameterField(at + 8),
        }),
      );
    }
    plan.push([lba, blocks]);
  }
  return plan;
}
