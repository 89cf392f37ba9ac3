import { be16 } from '../cdb.ts';
import { Asc, ScsiOp, SenseKey, VpdPage } from '../codes.ts';
import { encodeDescriptorSense, encodeFixedSense, senseCondition } from '../sense.ts';
import type { ScsiCommand, ScsiResult } from './command.ts';
import { respondDataIn } from './data-phase.ts';
import type { ScsiDisk } from './disk.ts';
import { absentLunInquiry, absentLunSupportedPages } from './inquiry-data.ts';
import { executeReportLuns, MAX_LUN } from './report-luns.ts';
import { cdbField, checkCondition, illegalRequest } from './result.ts';

/**
 * One SCSI target (a storvsp path/target) holding disk logical units.
 *
 * - REPORT LUNS is answered by the target for any LUN, present or not.
 * - A LUN with no logical unit answers INQUIRY with peripheral qualifier 3,
 *   device type 0x1f; REQUEST SENSE with parameter data saying LOGICAL UNIT
 *   NOT SUPPORTED (SPC-4 6.39: REQUEST SENSE itself succeeds); everything else
 *   with CHECK CONDITION, ILLEGAL REQUEST, 0x25/0x00 LOGICAL UNIT NOT SUPPORTED.
 * - attach and detach queue REPORTED LUNS DATA HAS CHANGED (0x3f/0x0e) on
 *   every other LUN; a REPORT LUNS addressed to a LUN clears it there.
 * - detach answers every command of that LUN still in flight with LOGICAL UNIT
 *   NOT SUPPORTED, but only once the backend has finished with it, so no data
 *   moves in the initiator's buffers after its completion was reported. The
 *   returned promise resolves when the last of them has completed.
 */

interface LunSlot {
  readonly disk: ScsiDisk;
  readonly inFlight: Set<Promise<ScsiResult>>;
  detached: boolean;
}

function lunNotSupported(): ScsiResult {
  return checkCondition(senseCondition(SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_UNIT_NOT_SUPPORTED));
}

export class ScsiTarget {
  private readonly slots = new Map<number, LunSlot>();

  /** Hot-adds a disk at `lun` (0..16383). */
  attach(lun: number, disk: ScsiDisk): void {
    if (!Number.isInteger(lun) || lun < 0 || lun > MAX_LUN) {
      throw new RangeError(`SCSI target: LUN ${lun} is not an integer in 0..${MAX_LUN}`);
    }
    if (this.slots.has(lun)) throw new Error(`SCSI target: LUN ${lun} is already attached`);
    for (const slot of this.slots.values())
      slot.disk.postUnitAttention(Asc.REPORTED_LUNS_DATA_HAS_CHANGED);
    this.slots.set(lun, { disk, inFlight: new Set(), detached: false });
  }

  /** Hot-removes the disk at `lun`; resolves when its in-flight commands have completed. */
  async detach(lun: number): Promise<void> {
    const slot = this.slots.get(lun);
    if (!slot) throw new Error(`SCSI target: no disk is attached at LUN ${lun}`);
    slot.detached = true;
    this.slots.delete(lun);
    for (const other of this.slots.values())
      other.disk.postUnitAttention(Asc.REPORTED_LUNS_DATA_HAS_CHANGED);
    await Promise.allSettled([...slot.inFlight]);
  }

  luns(): number[] {
    return [...this.slots.keys()].sort((a, b) => a - b);
  }

  disk(lun: number): ScsiDisk | undefined {
    return this.slots.get(lun)?.disk;
  }

  /** Executes a command on a LUN. Never throws, never rejects. */
  async execute(lun: number, cmd: ScsiCommand): Promise<ScsiResult> {
    try {
      const op = cmd.cdb.length > 0 ? cmd.cdb[0] : undefined;
      const slot = this.slots.get(lun);
      if (op === ScsiOp.REPORT_LUNS) {
        const result = executeReportLuns(cmd, this.luns());
        if (slot && result.status === 0)
          slot.disk.clearUnitAttention(Asc.REPORTED_LUNS_DATA_HAS_CHANGED);
        return result;
      }
      if (!slot) return this.absentLun(cmd);
      const pending = slot.disk.execute(cmd);
      slot.inFlight.add(pending);
      try {
        const result = await pending;
        return slot.detached ? lunNotSupported() : result;
      } finally {
        slot.inFlight.delete(pending);
      }
    } catch {
      return checkCondition(senseCondition(SenseKey.HARDWARE_ERROR, Asc.INTERNAL_TARGET_FAILURE));
    }
  }

  private absentLun(cmd: ScsiCommand): ScsiResult {
    const cdb = cmd.cdb;
    const op = cdb[0];
    if (op === ScsiOp.INQUIRY && cdb.length >= 6) {
      const flags = cdb[1] ?? 0;
      if (flags & 0x02) return illegalRequest(Asc.INVALID_FIELD_IN_CDB, cdbField(1, 1));
      const page = cdb[2] ?? 0;
      const allocation = be16(cdb, 3);
      if (flags & 0x01) {
        if (page !== VpdPage.SUPPORTED_PAGES)
          return illegalRequest(Asc.INVALID_FIELD_IN_CDB, cdbField(2));
        return respondDataIn(cmd, absentLunSupportedPages(), allocation);
      }
      if (page !== 0) return illegalRequest(Asc.INVALID_FIELD_IN_CDB, cdbField(2));
      return respondDataIn(cmd, absentLunInquiry(), allocation);
    }
    if (op === ScsiOp.REQUEST_SENSE && cdb.length >= 6) {
      const condition = senseCondition(SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_UNIT_NOT_SUPPORTED);
      const data =
        (cdb[1] ?? 0) & 0x01 ? encodeDescriptorSense(condition) : encodeFixedSense(condition);
      return respondDataIn(cmd, data, cdb[4] ?? 0);
    }
    return lunNotSupported();
  }
}
