/**
 * One channel of the host's storvsp (the primary or a sub-channel): reads
 * the guest's packets, starts each EXECUTE_SRB on the SCSI target, hands
 * control packets to the controller, and sends the completions. The guest is
 * hostile: a packet that is not an in-band or GPA-direct request asking for
 * a completion, or is shorter than the 12-byte header, is counted and
 * dropped; a malformed request block is answered with INVALID_REQUEST.
 *
 * Completions that find the ring full wait in a backlog (in order) until the
 * guest frees room, so no completion is ever lost or sent twice.
 */

import { ScsiStatus } from '../../../scsi/codes.ts';
import type { ScsiResult } from '../../../scsi/target/command.ts';
import type { ChannelEndpoint } from '../../../vmbus/channel.ts';
import type { GuestMemoryAccess } from '../../../vmbus/device.ts';
import type { PacketView } from '../../../vmbus/packet.ts';
import { PacketType } from '../../../vmbus/ring-protocol.ts';
import {
  NtStatus,
  Offsets,
  SrbStatus,
  srbStatusCode,
  VSTOR_HEADER_SIZE,
  VstorOperation,
} from '../protocol.ts';
import { SrbRequest } from './srb-request.ts';

/** Requests one channel runs at once before answering BUSY (a hostile guest cannot queue unbounded work). */
export const MAX_REQUESTS_PER_CHANNEL = 1024;

export interface QueueCounters {
  readonly index: number;
  requests: number;
  completions: number;
  reads: number;
  writes: number;
  bytesRead: number;
  bytesWritten: number;
  /** Completions whose SRB status was not SUCCESS / DATA_OVERRUN. */
  errors: number;
  /** Request blocks refused as malformed (INVALID_REQUEST). */
  rejected: number;
  /** Packets dropped without an answer (wrong type, no completion asked, too short). */
  badPackets: number;
  /** Requests answered BUSY because too many were running. */
  busy: number;
  inFlight: number;
  maxInFlight: number;
  /** Completions that had to wait for ring space. */
  backlogged: number;
}

/** What a queue needs from its controller. */
export interface QueueOwner {
  readonly memory: GuestMemoryAccess;
  readonly maxTransfer: number;
  /** The handshake has ended: request blocks may run. */
  readonly ready: boolean;
  execute(request: SrbRequest): void;
  /** A rate-limited log line about something the guest got wrong. */
  warn(message: string): void;
  /** A packet other than a runnable EXECUTE_SRB (handshake, resets, sub-channels, ...). */
  control(
    queue: StorvspQueue,
    operation: number,
    payload: Uint8Array,
    lo: number,
    hi: number,
  ): void;
}

interface Pending {
  readonly bytes: Uint8Array;
  readonly lo: number;
  readonly hi: number;
  readonly request: SrbRequest | undefined;
}

export class StorvspQueue {
  readonly counters: QueueCounters;
  private readonly pool: SrbRequest[] = [];
  private readonly backlog: Pending[] = [];
  /** Completions to send at the end of this turn of the event loop. */
  private readonly outbox: Pending[] = [];
  private flushScheduled = false;
  private pumping = false;
  closed = false;

  constructor(
    readonly owner: QueueOwner,
    readonly endpoint: ChannelEndpoint,
    readonly index: number,
  ) {
    this.counters = {
      index,
      requests: 0,
      completions: 0,
      reads: 0,
      writes: 0,
      bytesRead: 0,
      bytesWritten: 0,
      errors: 0,
      rejected: 0,
      badPackets: 0,
      busy: 0,
      inFlight: 0,
      maxInFlight: 0,
      backlogged: 0,
    };
    endpoint.onPacket = (packet) => this.receive(packet);
  }

  private receive(packet: PacketView): boolean {
    try {
      const type = packet.type;
      if (
        (type !== PacketType.DataInband && type !== PacketType.DataUsingGpaDirect) ||
        !packet.completionRequested ||
        packet.payloadLength < VSTOR_HEADER_SIZE
      ) {
        this.counters.badPackets++;
        this.owner.warn(
          `channel ${this.index}: dropped a packet of type ${type} (${packet.payloadLength} bytes${packet.completionRequested ? '' : ', no completion asked'})`,
        );
        return true;
      }
      const payload = packet.payload();
      const operation = packet.view.getUint32(packet.payloadOffset + Offsets.operation, true);
      if (operation === VstorOperation.ExecuteSrb && this.owner.ready) {
        this.start(packet, payload);
      } else {
        this.owner.control(this, operation, payload, packet.transLo, packet.transHi);
      }
    } catch {
      // Nothing the guest sends may stop the channel; count it and go on.
      this.counters.badPackets++;
    }
    return true;
  }

  private start(packet: PacketView, payload: Uint8Array): void {
    const request = this.pool.pop() ?? this.newRequest();
    request.load(payload, packet.transLo, packet.transHi);
    this.counters.requests++;
    if (this.counters.inFlight >= MAX_REQUESTS_PER_CHANNEL) {
      this.counters.busy++;
      request.reject(SrbStatus.Busy, NtStatus.DeviceBusy, ScsiStatus.TASK_SET_FULL);
      this.finish(request);
      return;
    }
    let rangeError: string | undefined;
    let ranges: typeof this.endpoint.gpaRanges | undefined;
    if (packet.type === PacketType.DataUsingGpaDirect) {
      rangeError = this.endpoint.gpaRanges.parse(packet);
      if (!rangeError) ranges = this.endpoint.gpaRanges;
    }
    const rejection = request.prepare(
      ranges,
      rangeError,
      this.owner.memory,
      this.owner.maxTransfer,
    );
    if (rejection !== undefined) {
      this.counters.rejected++;
      this.owner.warn(`channel ${this.index}: refused a request block: ${rejection}`);
      request.reject(SrbStatus.InvalidRequest, NtStatus.InvalidParameter);
      this.finish(request);
      return;
    }
    this.counters.inFlight++;
    if (this.counters.inFlight > this.counters.maxInFlight)
      this.counters.maxInFlight = this.counters.inFlight;
    this.owner.execute(request);
  }

  private newRequest(): SrbRequest {
    const request = new SrbRequest();
    request.onResult = (result: ScsiResult) => {
      this.counters.inFlight--;
      request.complete(result);
      const length = request.view.getUint32(Offsets.dataTransferLength, true);
      if (request.kind === 'read') {
        this.counters.reads++;
        this.counters.bytesRead += length;
      } else if (request.kind === 'write') {
        this.counters.writes++;
        this.counters.bytesWritten += length;
      }
      this.finish(request);
    };
    return request;
  }

  private finish(request: SrbRequest): void {
    this.counters.completions++;
    const srb = srbStatusCode(request.view.getUint8(Offsets.srbStatus));
    if (srb !== SrbStatus.Success && srb !== SrbStatus.DataOverrun) this.counters.errors++;
    this.send(request.reply(), request.transLo, request.transHi, request);
  }

  /**
   * Sends a completion. Completions that finish in the same turn of the event
   * loop go out together (one publish of the write index, at most one signal
   * to the guest); those that find the ring full wait, in order, for room.
   */
  send(bytes: Uint8Array, lo: number, hi: number, request?: SrbRequest): void {
    if (this.closed) {
      if (request) this.pool.push(request);
      return;
    }
    this.outbox.push({ bytes, lo, hi, request });
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushOutbox);
    }
  }

  private readonly flushOutbox = (): void => {
    this.flushScheduled = false;
    if (this.backlog.length > 0 || this.closed) {
      // Behind completions that wait for room (or nowhere to go): keep the order.
      for (const p of this.outbox.splice(0)) this.backlog.push(p);
      if (this.closed) this.dropBacklog();
      else void this.pump();
      return;
    }
    const outbox = this.outbox;
    const endpoint = this.endpoint;
    let sent = 0;
    endpoint.batch(() => {
      for (; sent < outbox.length; sent++) {
        const next = outbox[sent]!;
        if (endpoint.sendCompletion(next.lo, next.hi, next.bytes) === 'full') return;
        if (next.request) this.pool.push(next.request);
      }
    });
    if (sent === outbox.length) {
      outbox.length = 0;
      this.pollRing();
      return;
    }
    this.counters.backlogged += outbox.length - sent;
    for (const p of outbox.splice(0).slice(sent)) this.backlog.push(p);
    void this.pump();
  };

  /**
   * While requests run, their completions bring this queue back anyway: the
   * inbound ring then stays masked (the guest need not signal) and is polled
   * after each batch of completions; once nothing runs it is unmasked and
   * checked again. (OpenVMM's storvsp keeps interrupts masked and polls the
   * same way while it is busy.) A request that arrives while masked waits at
   * most until the next completion.
   */
  private pollRing(): void {
    if (this.closed || this.endpoint.state !== 'open') return;
    // drain() masks while it reads, then unmasks and re-checks.
    this.endpoint.drain();
    if (this.counters.inFlight > 0) this.endpoint.reader.mask();
  }

  private dropBacklog(): void {
    for (const p of this.backlog.splice(0)) if (p.request) this.pool.push(p.request);
  }

  /** Sends an unsolicited packet (transaction id 0, no completion asked). */
  async notify(bytes: Uint8Array): Promise<boolean> {
    for (;;) {
      if (this.closed) return false;
      const result = this.endpoint.sendInband(bytes, 0, 0, false);
      if (result === 'ok') return true;
      if (result === 'corrupt') return false;
      if (!(await this.endpoint.waitForSpace(16 + ((bytes.length + 7) & ~7)))) return false;
    }
  }

  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.backlog.length > 0) {
        const next = this.backlog[0]!;
        const result = this.closed
          ? 'corrupt'
          : this.endpoint.sendCompletion(next.lo, next.hi, next.bytes);
        if (result === 'ok') {
          this.backlog.shift();
          if (next.request) this.pool.push(next.request);
          continue;
        }
        // 16-byte descriptor + payload padded to 8.
        const packetBytes = 16 + ((next.bytes.length + 7) & ~7);
        if (result === 'full' && (await this.endpoint.waitForSpace(packetBytes))) continue;
        // The channel is gone: nothing more can be sent on it.
        this.dropBacklog();
        return;
      }
    } finally {
      this.pumping = false;
    }
  }

  close(): void {
    this.closed = true;
    this.endpoint.onPacket = undefined;
  }
}
