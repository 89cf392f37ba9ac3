/**
 * One EXECUTE_SRB on the host: the guest's request block copied out of the
 * ring, validated, turned into a SCSI command whose data buffers are views
 * of the guest pages the GPA-direct packet names, and, once the target has
 * answered, rewritten in place into the COMPLETE_IO packet (as Hyper-V and
 * OpenVMM's storvsp answer: the request block comes back with the statuses,
 * the sense data in the CDB's place, and the bytes moved).
 *
 * Requests are pooled objects: the data path allocates no packet buffers.
 */

import { isReadOp, isWriteOp } from '../../../scsi/cdb.ts';
import { Asc, ScsiStatus, SenseKey } from '../../../scsi/codes.ts';
import type { DataDirection, ScsiResult } from '../../../scsi/target/command.ts';
import { type GuestMemoryAccess, PAGE_SIZE } from '../../../vmbus/device.ts';
import type { GpaRangeList } from '../../../vmbus/queue.ts';
import {
  NtStatus,
  Offsets,
  SRB_STATUS_AUTOSENSE_VALID,
  SrbFlags,
  SrbStatus,
  STORVSC_MAX_CMD_LEN,
  STORVSC_SENSE_BUFFER_SIZE,
  StorvscDataDirection,
  VSTOR_HEADER_SIZE,
  VSTOR_PACKET_SIZE,
  VstorOperation,
  vmscsiRequest,
} from '../protocol.ts';

/** Why a request block was refused before reaching the target. */
export type SrbRejection = string;

export class SrbRequest {
  /** The received packet (zero-padded to 64 bytes), rewritten into the completion. */
  readonly packet = new Uint8Array(VSTOR_PACKET_SIZE);
  readonly view = new DataView(this.packet.buffer);
  /** Bytes of request block the guest sent (the completion has as many). */
  requestSize = 0;
  transLo = 0;
  transHi = 0;
  lun = 0;
  /** True when path_id/target_id name the controller's only target (0/0). */
  onTarget0 = true;
  dataTransferLength = 0;
  direction: DataDirection = 'none';
  /** 'read' | 'write' | 'other', for the counters. */
  kind: 'read' | 'write' | 'other' = 'other';
  readonly buffers: Uint8Array[] = [];
  readonly command: { cdb: Uint8Array; direction: DataDirection; buffers: Uint8Array[] };
  /** Set by the owner: called with the target's result. */
  onResult: (result: ScsiResult) => void = () => {};
  private readonly cdbViews: Uint8Array[] = [];

  constructor() {
    for (let n = 0; n <= STORVSC_MAX_CMD_LEN; n++) {
      this.cdbViews.push(this.packet.subarray(Offsets.cdb, Offsets.cdb + n));
    }
    this.command = { cdb: this.cdbViews[0]!, direction: 'none', buffers: this.buffers };
  }

  /** Copies the packet's payload in (zero-filling what the guest did not send). */
  load(payload: Uint8Array, transLo: number, transHi: number): void {
    const n = Math.min(payload.length, VSTOR_PACKET_SIZE);
    this.packet.set(payload.subarray(0, n));
    this.packet.fill(0, n);
    this.requestSize = Math.min(payload.length - VSTOR_HEADER_SIZE, vmscsiRequest.size);
    this.transLo = transLo;
    this.transHi = transHi;
    this.buffers.length = 0;
  }

  /**
   * Validates the request block and builds the command. With a GPA-direct
   * packet, `ranges` holds its parsed page list (or `rangeError` the reason
   * it did not parse). Returns undefined when the command can run.
   */
  prepare(
    ranges: GpaRangeList | undefined,
    rangeError: string | undefined,
    memory: GuestMemoryAccess,
    maxTransfer: number,
  ): SrbRejection | undefined {
    const v = this.view;
    const cdbLength = v.getUint8(Offsets.cdbLength);
    if (cdbLength === 0 || cdbLength > STORVSC_MAX_CMD_LEN) {
      return `cdb_length ${cdbLength} is outside 1..${STORVSC_MAX_CMD_LEN}`;
    }
    const dataIn = v.getUint8(Offsets.dataIn);
    if (dataIn === StorvscDataDirection.Write) this.direction = 'out';
    else if (dataIn === StorvscDataDirection.Read) this.direction = 'in';
    else if (dataIn === StorvscDataDirection.None) this.direction = 'none';
    else return `data_in ${dataIn} is not WRITE_TYPE (0), READ_TYPE (1) or UNKNOWN_TYPE (2)`;
    this.command.cdb = this.cdbViews[cdbLength]!;
    this.command.direction = this.direction;
    this.lun = v.getUint8(Offsets.lun);
    this.onTarget0 = v.getUint8(Offsets.pathId) === 0 && v.getUint8(Offsets.targetId) === 0;
    const length = v.getUint32(Offsets.dataTransferLength, true);
    this.dataTransferLength = length;
    if (length > maxTransfer) {
      return `data_transfer_length ${length} exceeds the maximum transfer of ${maxTransfer} bytes`;
    }
    const op = this.packet[Offsets.cdb] ?? 0;
    this.kind = isReadOp(op) ? 'read' : isWriteOp(op) ? 'write' : 'other';
    if (length === 0) return undefined;
    if (!ranges) {
      if (rangeError) return rangeError;
      return `data_transfer_length ${length} without a GPA-direct page list`;
    }
    if (ranges.totalBytes() < length) {
      return `data_transfer_length ${length} exceeds the ${ranges.totalBytes()} bytes the page list describes`;
    }
    return this.mapBuffers(ranges, memory, length);
  }

  /**
   * Views of the first `length` bytes the ranges describe, adjacent pages
   * merged into one view (a contiguous guest buffer becomes one iovec).
   */
  private mapBuffers(
    ranges: GpaRangeList,
    memory: GuestMemoryAccess,
    length: number,
  ): SrbRejection | undefined {
    let left = length;
    let runStart = -1;
    let runLength = 0;
    for (let r = 0; r < ranges.count && left > 0; r++) {
      let offset = ranges.byteOffset[r]!;
      let inRange = ranges.byteCount[r]!;
      const first = ranges.pfnStart[r]!;
      const pfnCount = ranges.pfnCount[r]!;
      for (let p = 0; p < pfnCount && left > 0 && inRange > 0; p++) {
        const gpa = ranges.pfns[first + p]! * PAGE_SIZE + offset;
        const n = Math.min(PAGE_SIZE - offset, inRange, left);
        if (runLength > 0 && runStart + runLength === gpa) {
          runLength += n;
        } else {
          const error = this.mapRun(memory, runStart, runLength);
          if (error) return error;
          runStart = gpa;
          runLength = n;
        }
        left -= n;
        inRange -= n;
        offset = 0;
      }
    }
    return this.mapRun(memory, runStart, runLength);
  }

  /** Adds a view of one contiguous run of guest bytes. */
  private mapRun(
    memory: GuestMemoryAccess,
    start: number,
    length: number,
  ): SrbRejection | undefined {
    if (length === 0) return undefined;
    if (!memory.contains(start, length)) {
      return `page list names guest bytes [0x${start.toString(16)}, +${length}) outside guest memory`;
    }
    this.buffers.push(memory.bytes(start, length));
    return undefined;
  }

  /** Rewrites the packet into a COMPLETE_IO for the target's result. */
  complete(result: ScsiResult): void {
    const v = this.view;
    const status = result.status;
    let srb: number;
    let nt: NtStatus;
    let transferred = 0;
    const sense = result.sense;
    let senseBytes = 0;
    if (status === ScsiStatus.GOOD) {
      transferred = Math.min(result.transferred, this.dataTransferLength);
      // A short transfer is reported as Windows does: DATA_OVERRUN with the count.
      if (transferred < this.dataTransferLength) {
        srb = SrbStatus.DataOverrun;
        nt = NtStatus.BufferOverflow;
      } else {
        srb = SrbStatus.Success;
        nt = NtStatus.Success;
      }
    } else if (status === ScsiStatus.CHECK_CONDITION && sense) {
      const lunGone =
        ((sense[2] ?? 0) & 0x0f) === SenseKey.ILLEGAL_REQUEST &&
        sense[12] === Asc.LOGICAL_UNIT_NOT_SUPPORTED.asc &&
        sense[13] === Asc.LOGICAL_UNIT_NOT_SUPPORTED.ascq;
      srb = lunGone ? SrbStatus.InvalidLun : SrbStatus.Error;
      nt = lunGone ? NtStatus.DeviceDoesNotExist : NtStatus.IoDeviceError;
      const flags = v.getUint32(Offsets.srbFlags, true);
      const room = Math.min(v.getUint8(Offsets.senseInfoLength), STORVSC_SENSE_BUFFER_SIZE);
      if ((flags & SrbFlags.DISABLE_AUTOSENSE) === 0 && room > 0) {
        senseBytes = Math.min(room, sense.length);
        srb |= SRB_STATUS_AUTOSENSE_VALID;
      }
    } else if (status === ScsiStatus.BUSY || status === ScsiStatus.TASK_SET_FULL) {
      srb = SrbStatus.Busy;
      nt = NtStatus.DeviceBusy;
    } else {
      srb = SrbStatus.Error;
      nt = NtStatus.IoDeviceError;
    }
    v.setUint32(Offsets.operation, VstorOperation.CompleteIo, true);
    v.setUint32(Offsets.flags, 0, true);
    v.setUint32(Offsets.status, nt, true);
    v.setUint8(Offsets.srbStatus, srb);
    v.setUint8(Offsets.scsiStatus, status & 0xff);
    v.setUint8(Offsets.senseInfoLength, senseBytes);
    v.setUint32(Offsets.dataTransferLength, transferred, true);
    // The union carries the sense data now; what is left of the CDB is cleared.
    this.packet.fill(0, Offsets.senseData, Offsets.senseData + STORVSC_SENSE_BUFFER_SIZE);
    if (sense && senseBytes > 0) this.packet.set(sense.subarray(0, senseBytes), Offsets.senseData);
  }

  /** Rewrites the packet into a completion that refuses the request block. */
  reject(srb: SrbStatus, nt: NtStatus, scsiStatus = 0): void {
    const v = this.view;
    v.setUint32(Offsets.operation, VstorOperation.CompleteIo, true);
    v.setUint32(Offsets.flags, 0, true);
    v.setUint32(Offsets.status, nt, true);
    v.setUint8(Offsets.srbStatus, srb);
    v.setUint8(Offsets.scsiStatus, scsiStatus);
    v.setUint8(Offsets.senseInfoLength, 0);
    v.setUint32(Offsets.dataTransferLength, 0, true);
    this.packet.fill(0, Offsets.senseData, Offsets.senseData + STORVSC_SENSE_BUFFER_SIZE);
  }

  /** The completion's bytes: as many as the guest sent (12 + request size). */
  reply(): Uint8Array {
    return this.packet.subarray(0, VSTOR_HEADER_SIZE + Math.max(0, this.requestSize));
  }
}
