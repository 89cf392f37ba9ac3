/**
 * One channel of the guest's netvsc (the primary or a sub-channel): it sends
 * RNDIS_PKT requests (a send-buffer section, or a page list) and frees what
 * they used when the host completes them; it takes the host's transfer-page
 * packets, copies each range out of the receive buffer and completes the
 * packet (Linux netvsc_receive, send_recv_completions).
 *
 * The host is hostile: a transfer-page packet must name the receive buffer
 * (pageset 0xCAFE) and carry an RNDIS_PKT; every range must lie inside the
 * buffer and inside one section; what fails is completed NVSP_STAT_FAIL (so
 * a host that plays by the rules never loses a section) and counted.
 */
import {
  type GpaRange,
  type IncomingPacket,
  PacketType,
  type Queue,
  type RequestTable,
} from '../../../vmbus/queue.ts';
import { NvspReader } from '../nvsp-message.ts';
import {
  NETVSC_INVALID_INDEX,
  NETVSC_RECEIVE_BUFFER_ID,
  NvspMessageType,
  NvspStatus,
  type RndisChannelType,
} from '../protocol.ts';
import { CoalescedFrame } from './coalesced-frame.ts';
import type { SharedPages } from './guest-buffers.ts';

/** Requests one channel keeps outstanding (sends and control). */
export const MAX_OUTSTANDING = 1024;

/** What a request left waiting for its completion. */
export type Outstanding =
  | {
      readonly kind: 'control';
      readonly resolve: (answer: Uint8Array) => void;
      readonly reject: (e: Error) => void;
    }
  | { readonly kind: 'send'; readonly section: number; readonly bounce: number };

export interface GuestChannelCounters {
  readonly index: number;
  sent: number;
  /** Transfer-page packets from the host and the RNDIS messages in them. */
  received: number;
  receivedMessages: number;
  /** Host packets refused (wrong pageset, ranges outside the buffer, bad NVSP). */
  refused: number;
}

/** What a channel needs from its NIC. */
export interface GuestChannelOwner {
  readonly receiveBuffer: SharedPages | undefined;
  readonly receiveSectionSize: number;
  /** One RNDIS message from the host (a private copy); returns the NVSP status for it. */
  received(channel: NetvscChannel, message: Uint8Array): NvspStatus;
  /** The host's send indirection table (16 channel numbers). */
  sendTableArrived(table: readonly number[]): void;
  /** A send finished: its section or bounce buffer is free. */
  sendDone(section: number, bounce: number): void;
  /** NVSP version, for the table-offset quirk. */
  readonly version: number;
}

/** The send contexts, one per section and bounce buffer, made once (no object per frame). */
const sectionContexts: Outstanding[] = [];
const bounceContexts: Outstanding[] = [];

function sendContext(section: number, bounce: number): Outstanding {
  const list = section >= 0 ? sectionContexts : bounceContexts;
  const at = section >= 0 ? section : bounce;
  let c = list[at];
  if (!c) {
    c = { kind: 'send', section, bounce };
    list[at] = c;
  }
  return c;
}

export class NetvscChannel {
  readonly counters: GuestChannelCounters;
  /** The frame the host is sending coalesced on this channel, fragment by fragment. */
  readonly coalesced = new CoalescedFrame();
  readonly requests: RequestTable<Outstanding>;
  private readonly nvsp = new NvspReader();
  private copy: Uint8Array;
  private readonly nvspOut = new Uint8Array(40);
  private readonly nvspOutView = new DataView(this.nvspOut.buffer);
  private readonly completion = new Uint8Array(8);
  private readonly completionView = new DataView(this.completion.buffer);
  closed = false;

  constructor(
    private readonly owner: GuestChannelOwner,
    readonly queue: Queue,
    readonly index: number,
  ) {
    this.counters = { index, sent: 0, received: 0, receivedMessages: 0, refused: 0 };
    this.copy = new Uint8Array(4096);
    queue.configure({ batching: 'turn' });
    this.requests = queue.trackRequests<Outstanding>({
      capacity: MAX_OUTSTANDING,
      onCompletion: (done, packet) => this.completed(done, packet),
      onTimeout: (done) => {
        if (done.kind === 'control')
          done.reject(new Error('the host did not answer an NVSP request in time'));
      },
      onAbandon: (done, reason) => {
        if (done.kind === 'control') done.reject(new Error(reason));
        else owner.sendDone(done.section, done.bounce);
      },
    });
    queue.onPacket = (packet) => this.receive(packet);
  }

  get inFlight(): number {
    return this.requests.inFlight;
  }

  get hasRoom(): boolean {
    return this.requests.hasRoom && this.queue.open;
  }

  /** An NVSP request that expects a completion; resolves with the completion's payload (a copy). */
  request(message: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      const id = this.requests.allocate({ kind: 'control', resolve, reject }, timeoutMs);
      if (id === 0) {
        reject(new Error('too many NVSP requests outstanding'));
        return;
      }
      if (this.queue.sendInband(message, id, 0, true) === 'closed') {
        this.requests.cancel(id);
        reject(new Error(`channel ${this.index} is ${this.queue.state}: ${this.queue.error}`));
      }
    });
  }

  /** An NVSP message the host does not answer (Linux: VMBUS_RQST_ID_NO_RESPONSE, flags 0). */
  post(message: Uint8Array): boolean {
    return this.queue.sendInband(message, 0xffff_fffe, 0xffff_ffff, false) !== 'closed';
  }

  /** Sends a frame (or RNDIS control message) already written into a send section. */
  sendSection(type: RndisChannelType, section: number, size: number): boolean {
    const id = this.requests.allocate(sendContext(section, -1));
    if (id === 0) return false;
    const nvsp = this.rndisPkt(type, section, size);
    if (this.queue.sendInband(nvsp, id, 0, true) === 'closed') {
      this.requests.cancel(id);
      return false;
    }
    this.counters.sent++;
    return true;
  }

  /** Sends an RNDIS message held in a page-aligned buffer, as a GPA-direct page list. */
  sendPages(type: RndisChannelType, bounce: number, range: GpaRange): boolean {
    const id = this.requests.allocate(sendContext(-1, bounce));
    if (id === 0) return false;
    const nvsp = this.rndisPkt(type, NETVSC_INVALID_INDEX, 0);
    if (this.queue.sendGpaDirect([range], nvsp, id, 0, true) === 'closed') {
      this.requests.cancel(id);
      return false;
    }
    this.counters.sent++;
    return true;
  }

  /** An RNDIS_PKT message in a scratch buffer (the queue copies what it sends). */
  private rndisPkt(type: RndisChannelType, section: number, size: number): Uint8Array {
    const v = this.nvspOutView;
    v.setUint32(0, NvspMessageType.SendRndisPacket, true);
    v.setUint32(4, type, true);
    v.setUint32(8, section >>> 0, true);
    v.setUint32(12, size >>> 0, true);
    return this.nvspOut;
  }

  private completed(done: Outstanding, packet: IncomingPacket): void {
    if (done.kind === 'control') {
      done.resolve(packet.payload().slice(0, packet.payloadLength));
      return;
    }
    // SEND_RNDIS_PKT_COMPLETE: the status only says whether the host took it.
    this.owner.sendDone(done.section, done.bounce);
  }

  private receive(packet: IncomingPacket): void {
    if (packet.type === PacketType.DataUsingTransferPages) {
      this.transferPages(packet);
      return;
    }
    if (packet.type === PacketType.DataInband) {
      const payload = packet.payload().slice(0, packet.payloadLength);
      if (this.nvsp.load(payload) && this.nvsp.type === NvspMessageType.SendIndirectionTable) {
        this.indirectionTable(payload);
        return;
      }
      // VF association and the like: nothing this guest uses.
      if (this.nvsp.type === NvspMessageType.SendVfAssociation) return;
    }
    this.counters.refused++;
    this.queue.drop(`packet type ${packet.type} (${packet.payloadLength} bytes) from the host`);
  }

  /**
   * The host's send table (netvsc_send_table): 16 entries. Up to NVSP 6 the
   * host may give a wrong offset, so the table is read after the NVSP 6
   * union (byte 40) when the message is long enough, as Linux does.
   */
  private indirectionTable(payload: Uint8Array): void {
    if (!this.nvsp.has(8) || this.nvsp.u32(0) !== 16) {
      this.queue.drop('an indirection table that is not 16 entries');
      return;
    }
    let offset = this.nvsp.u32(4);
    if (this.owner.version <= 0x60000 && payload.length >= 40 + 64) offset = 40;
    if (payload.length < 64 || offset > payload.length - 64) {
      this.queue.drop(
        `an indirection table at ${offset}, past the message's ${payload.length} bytes`,
      );
      return;
    }
    const table: number[] = [];
    for (let i = 0; i < 16; i++) table.push(this.nvsp.word(offset + 4 * i)!);
    this.owner.sendTableArrived(table);
  }

  private transferPages(packet: IncomingPacket): void {
    let status = NvspStatus.Success;
    const buffer = this.owner.receiveBuffer;
    const ranges = this.queue.transferPages(packet);
    const nvspOk = this.nvsp.load(packet.payload().subarray(0, packet.payloadLength));
    if (
      !buffer ||
      typeof ranges === 'string' ||
      !nvspOk ||
      this.nvsp.type !== NvspMessageType.SendRndisPacket
    ) {
      status = NvspStatus.Failure;
      this.counters.refused++;
      this.queue.drop(
        typeof ranges === 'string'
          ? ranges
          : 'a transfer-page packet that is not an RNDIS_PKT for the receive buffer',
      );
    } else if (ranges.pageSetId !== NETVSC_RECEIVE_BUFFER_ID) {
      status = NvspStatus.Failure;
      this.counters.refused++;
      this.queue.drop(`transfer pages of pageset 0x${ranges.pageSetId.toString(16)}, not 0xcafe`);
    } else {
      this.counters.received++;
      const size = buffer.bytes.length;
      const section = this.owner.receiveSectionSize;
      if (this.copy.length < section) this.copy = new Uint8Array(section);
      for (let i = 0; i < ranges.count; i++) {
        const offset = ranges.byteOffset[i]!;
        const length = ranges.byteCount[i]!;
        if (offset > size || length > size - offset || length > section) {
          status = NvspStatus.Failure;
          this.counters.refused++;
          this.queue.warn(
            `a range ${offset}+${length} outside the receive buffer or its ${section}-byte sections`,
          );
          continue;
        }
        // A private copy: the host may rewrite the buffer while we parse.
        this.copy.set(buffer.bytes.subarray(offset, offset + length));
        this.counters.receivedMessages++;
        if (this.owner.received(this, this.copy.subarray(0, length)) !== NvspStatus.Success) {
          status = NvspStatus.Failure;
        }
      }
    }
    if (packet.completionRequested || packet.transLo !== 0 || packet.transHi !== 0) {
      // recv_comp_msg: 8 bytes.
      // recv_comp_msg, reused: the queue copies what it sends.
      const done = this.completion;
      const v = this.completionView;
      v.setUint32(0, NvspMessageType.SendRndisPacketComplete, true);
      v.setUint32(4, status, true);
      this.queue.sendCompletion(packet.transLo, packet.transHi, done);
    }
  }

  close(reason: string): void {
    this.closed = true;
    this.queue.onPacket = undefined;
    for (const done of this.requests.drain()) {
      if (done.kind === 'control') done.reject(new Error(reason));
      else this.owner.sendDone(done.section, done.bounce);
    }
  }
}
