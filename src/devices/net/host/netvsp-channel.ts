/**
 * One channel of the host's NIC (the primary or a sub-channel): RNDIS
 * messages from the guest — in a send-buffer section or as a GPA-direct page
 * list — and RNDIS messages to the guest, each in a receive-buffer section,
 * named by the ranges of transfer-page packets (Linux netvsc.c's two
 * directions, seen from the host). The sections of a transfer-page packet
 * are free again once the guest completes it.
 *
 * The guest is hostile: a SEND_RNDIS_PKT naming a section that does not
 * exist, a size past its section, page lists past guest memory or longer
 * than a frame can be, and RNDIS messages that do not parse are refused with
 * NVSP_STAT_FAIL (still completed, so nothing hangs); completions naming no
 * packet of ours are dropped and counted by the queue.
 */
import type { BufferRegion, GuestMemoryAccess } from '../../../vmbus/device.ts';
import {
  type IncomingPacket,
  PacketType,
  type Queue,
  type RequestTable,
  type TransferPageRange,
} from '../../../vmbus/queue.ts';
import { NvspReader, nvspMessage } from '../nvsp-message.ts';
import {
  NETVSC_INVALID_INDEX,
  NETVSC_RECEIVE_BUFFER_ID,
  NvspMessageType,
  NvspStatus,
  RndisChannelType,
} from '../protocol.ts';
import { RNDIS_HEADER_SIZE } from '../rndis-protocol.ts';
import type { ReceiveBuffer } from './receive-buffer.ts';

/** Ranges in one transfer-page packet (Linux takes up to 562; Hyper-V sends far fewer). */
const MAX_RANGES = 64;
/** Transfer-page packets outstanding per channel (each holds its sections until completed). */
const MAX_OUTSTANDING = 2048;
/** Largest RNDIS message a guest may hand over as a page list (a 64 KiB send plus headers). */
export const MAX_GUEST_MESSAGE = 66 * 1024;

export interface ChannelCounters {
  readonly index: number;
  /** RNDIS_PKT messages from the guest. */
  guestPackets: number;
  /** Transfer-page packets to the guest, and the RNDIS messages they carried. */
  hostPackets: number;
  hostMessages: number;
  /** RNDIS_PKT refused (bad section, page list or RNDIS message). */
  refused: number;
  /** Frames for the guest dropped for lack of a free receive section. */
  noSection: number;
}

/** What a channel needs from its NIC. */
export interface ChannelOwner {
  readonly memory: GuestMemoryAccess;
  readonly receiveBuffer: ReceiveBuffer | undefined;
  /** The send buffer's region and section size, once the guest gave it. */
  readonly sendBuffer: SendBuffer | undefined;
  /** A control message (NVSP on the primary channel). */
  control(channel: NetvspChannel, nvsp: NvspReader, packet: IncomingPacket): void;
  /** RNDIS messages from the guest: `messages` holds `length` bytes of one or more. */
  rndisMessages(
    channel: NetvspChannel,
    type: RndisChannelType,
    messages: Uint8Array,
    length: number,
  ): number;
  /** A transfer-page packet was completed: its sections are free (the NIC may resume its backend). */
  sectionsFreed(): void;
}

/** The guest's send buffer as the host reads it: fixed-size sections. */
export interface SendBuffer {
  readonly region: BufferRegion;
  readonly sectionSize: number;
  readonly count: number;
}

interface Outstanding {
  readonly sections: Int32Array;
  count: number;
}

export class NetvspChannel {
  readonly counters: ChannelCounters;
  private readonly nvsp = new NvspReader();
  private readonly requests: RequestTable<Outstanding>;
  private readonly spare: Outstanding[] = [];
  /** Sections written this turn, sent together as one transfer-page packet per channel type. */
  private readonly pending: { section: number; length: number }[] = [];
  private pendingType: RndisChannelType = RndisChannelType.Data;
  private flushScheduled = false;
  private readonly ranges: TransferPageRange[] = [];
  private readonly message = new Uint8Array(MAX_GUEST_MESSAGE);
  closed = false;

  constructor(
    private readonly owner: ChannelOwner,
    readonly queue: Queue,
    readonly index: number,
  ) {
    this.counters = {
      index,
      guestPackets: 0,
      hostPackets: 0,
      hostMessages: 0,
      refused: 0,
      noSection: 0,
    };
    queue.configure({ batching: 'turn' });
    this.requests = queue.trackRequests<Outstanding>({
      capacity: MAX_OUTSTANDING,
      onCompletion: (done) => this.completed(done),
      onAbandon: (done) => this.completed(done),
    });
    queue.onPacket = (packet) => this.receive(packet);
  }

  get outstanding(): number {
    return this.requests.inFlight;
  }

  private receive(packet: IncomingPacket): void {
    const payload = packet.payload();
    if (!this.nvsp.load(payload.subarray(0, packet.payloadLength))) {
      this.queue.drop(`an NVSP message of ${packet.payloadLength} bytes`);
      return;
    }
    if (
      packet.type === PacketType.DataInband &&
      this.nvsp.type !== NvspMessageType.SendRndisPacket
    ) {
      this.owner.control(this, this.nvsp, packet);
      return;
    }
    if (this.nvsp.type !== NvspMessageType.SendRndisPacket) {
      this.queue.drop(`NVSP ${this.nvsp.type} in a packet of type ${packet.type}`);
      return;
    }
    if (packet.type !== PacketType.DataInband && packet.type !== PacketType.DataUsingGpaDirect) {
      this.queue.drop(`RNDIS_PKT in a packet of type ${packet.type}`);
      return;
    }
    this.counters.guestPackets++;
    const status = this.guestRndis(packet);
    if (status !== NvspStatus.Success) this.counters.refused++;
    if (packet.completionRequested) {
      this.queue.sendCompletion(
        packet.transLo,
        packet.transHi,
        nvspMessage(NvspMessageType.SendRndisPacketComplete, status),
      );
    }
  }

  /** Copies the guest's RNDIS message(s) out of the send buffer or its pages and hands them on. */
  private guestRndis(packet: IncomingPacket): NvspStatus {
    if (!this.nvsp.has(12)) return NvspStatus.Failure;
    const type = this.nvsp.u32(0) as RndisChannelType;
    const section = this.nvsp.u32(4);
    const size = this.nvsp.u32(8);
    if (type !== RndisChannelType.Data && type !== RndisChannelType.Control) {
      return NvspStatus.Failure;
    }
    let length: number;
    if (section !== NETVSC_INVALID_INDEX) {
      const send = this.owner.sendBuffer;
      if (!send || section >= send.count || size > send.sectionSize || size < RNDIS_HEADER_SIZE) {
        this.queue.warn(`RNDIS_PKT names section ${section} of ${size} bytes, which it may not`);
        return NvspStatus.Failure;
      }
      send.region.read(section * send.sectionSize, this.message, 0, size);
      length = size;
    } else {
      if (packet.type !== PacketType.DataUsingGpaDirect) return NvspStatus.Failure;
      const ranges = this.queue.gpaRanges(packet);
      if (typeof ranges === 'string') {
        this.queue.warn(`RNDIS_PKT page list: ${ranges}`);
        return NvspStatus.Failure;
      }
      length = 0;
      const memory = this.owner.memory;
      for (let r = 0; r < ranges.count; r++) {
        let left = ranges.byteCount[r]!;
        let offset = ranges.byteOffset[r]!;
        const first = ranges.pfnStart[r]!;
        for (let p = 0; p < ranges.pfnCount[r]! && left > 0; p++) {
          const n = Math.min(4096 - offset, left);
          const gpa = ranges.pfns[first + p]! * 4096 + offset;
          if (length + n > this.message.length || !memory.contains(gpa, n)) {
            this.queue.warn('RNDIS_PKT page list runs outside guest memory or past 66 KiB');
            return NvspStatus.Failure;
          }
          this.message.set(memory.bytes(gpa, n), length);
          length += n;
          left -= n;
          offset = 0;
        }
      }
    }
    return this.owner.rndisMessages(this, type, this.message, length) as NvspStatus;
  }

  // --- host to guest ----------------------------------------------------------------

  /**
   * Writes one RNDIS message into a free receive section: `write` fills the
   * section (it gets the section's start) and returns the bytes used. Goes
   * out at the end of the turn. False when no section is free.
   */
  deliver(
    type: RndisChannelType,
    write: (buffer: ReceiveBuffer, section: number) => number,
  ): boolean {
    const buffer = this.owner.receiveBuffer;
    if (!buffer || this.closed) return false;
    if (
      this.pending.length > 0 &&
      (this.pendingType !== type || this.pending.length >= MAX_RANGES)
    ) {
      this.flush();
    }
    const section = buffer.allocate();
    if (section < 0) {
      this.counters.noSection++;
      return false;
    }
    const length = write(buffer, section);
    this.pending.push({ section, length });
    this.pendingType = type;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushTurn);
    }
    return true;
  }

  private readonly flushTurn = (): void => {
    this.flushScheduled = false;
    this.flush();
  };

  /** Sends what was written as one transfer-page packet. */
  private flush(): void {
    const pending = this.pending;
    if (pending.length === 0) return;
    const buffer = this.owner.receiveBuffer;
    const done = this.spare.pop() ?? { sections: new Int32Array(MAX_RANGES), count: 0 };
    done.count = pending.length;
    this.ranges.length = pending.length;
    for (let i = 0; i < pending.length; i++) {
      const p = pending[i]!;
      done.sections[i] = p.section;
      this.ranges[i] = { byteCount: p.length, byteOffset: buffer ? buffer.offsetOf(p.section) : 0 };
    }
    pending.length = 0;
    const id = this.requests.allocate(done);
    if (id === 0 || !buffer) {
      this.completed(done);
      return;
    }
    const nvsp = nvspMessage(
      NvspMessageType.SendRndisPacket,
      this.pendingType,
      NETVSC_INVALID_INDEX,
      0,
    );
    const status = this.queue.sendTransferPages(
      NETVSC_RECEIVE_BUFFER_ID,
      this.ranges,
      nvsp,
      id,
      0,
      true,
    );
    if (status === 'closed') {
      this.requests.cancel(id);
      this.completed(done);
      return;
    }
    this.counters.hostPackets++;
    this.counters.hostMessages += done.count;
  }

  /** The guest completed a transfer-page packet (or the channel went): its sections are free. */
  private completed(done: Outstanding): void {
    const buffer = this.owner.receiveBuffer;
    for (let i = 0; i < done.count; i++) buffer?.release(done.sections[i]!);
    done.count = 0;
    this.spare.push(done);
    this.owner.sectionsFreed();
  }

  /** Sends an in-band NVSP message (indirection table) or a completion for a control request. */
  sendControl(bytes: Uint8Array, lo = 0, hi = 0, completion = false): void {
    if (completion) this.queue.sendCompletion(lo, hi, bytes);
    else this.queue.sendInband(bytes, lo, hi, false);
  }

  close(): void {
    this.closed = true;
    this.pending.length = 0;
    this.queue.onPacket = undefined;
    for (const done of this.requests.drain()) this.completed(done);
  }
}
