/**
 * One channel of the host's storvsp (the primary or a sub-channel): reads
 * the guest's packets, starts each EXECUTE_SRB on the SCSI target, hands
 * control packets to the controller, and sends the completions. The guest is
 * hostile: a packet that is not an in-band or GPA-direct request asking for
 * a completion, or is shorter than the 12-byte header, is counted and
 * dropped; a malformed request block is answered with INVALID_REQUEST.
 *
 * The channel's queue batches the completions of one turn of the event loop
 * (one publish, at most one signal), holds those that find the ring full in
 * order (and stops reading new requests until they went out), and keeps the
 * guest's signals masked while requests run: their completions bring this
 * channel back to poll the ring anyway, as OpenVMM's storvsp does when busy.
 */
import { ScsiStatus } from '../../../scsi/codes.ts';
import type { ScsiResult } from '../../../scsi/target/command.ts';
import type { GuestMemoryAccess } from '../../../vmbus/device.ts';
import { type IncomingPacket, PacketType, type Queue } from '../../../vmbus/queue.ts';
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

/** What a channel needs from its controller. */
export interface ChannelOwner {
  readonly memory: GuestMemoryAccess;
  readonly maxTransfer: number;
  /** The handshake has ended: request blocks may run. */
  readonly ready: boolean;
  execute(request: SrbRequest): void;
  /** A packet other than a runnable EXECUTE_SRB (handshake, resets, sub-channels, ...). */
  control(
    channel: StorvspChannel,
    operation: number,
    payload: Uint8Array,
    lo: number,
    hi: number,
  ): void;
}

export class StorvspChannel {
  private readonly counts: Omit<QueueCounters, 'backlogged'>;
  private readonly pool: SrbRequest[] = [];
  closed = false;

  constructor(
    readonly owner: ChannelOwner,
    readonly queue: Queue,
    readonly index: number,
  ) {
    this.counts = {
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
    };
    queue.configure({
      pauseWhileBacklogged: true,
      pollWhile: () => this.counts.inFlight > 0,
    });
    queue.onPacket = (packet) => this.receive(packet);
  }

  get counters(): QueueCounters {
    return { ...this.counts, backlogged: this.queue.stats.backlogged };
  }

  private receive(packet: IncomingPacket): void {
    const type = packet.type;
    if (
      (type !== PacketType.DataInband && type !== PacketType.DataUsingGpaDirect) ||
      !packet.completionRequested ||
      packet.payloadLength < VSTOR_HEADER_SIZE
    ) {
      this.counts.badPackets++;
      this.queue.drop(
        `type ${type} (${packet.payloadLength} bytes${packet.completionRequested ? '' : ', no completion asked'})`,
      );
      return;
    }
    const payload = packet.payload();
    const operation = packet.view.getUint32(packet.payloadOffset + Offsets.operation, true);
    if (operation === VstorOperation.ExecuteSrb && this.owner.ready) {
      this.start(packet, payload);
    } else {
      this.owner.control(this, operation, payload, packet.transLo, packet.transHi);
    }
  }

  private start(packet: IncomingPacket, payload: Uint8Array): void {
    const request = this.pool.pop() ?? this.newRequest();
    request.load(payload, packet.transLo, packet.transHi);
    this.counts.requests++;
    if (this.counts.inFlight >= MAX_REQUESTS_PER_CHANNEL) {
      this.counts.busy++;
      request.reject(SrbStatus.Busy, NtStatus.DeviceBusy, ScsiStatus.TASK_SET_FULL);
      this.finish(request);
      return;
    }
    const ranges =
      packet.type === PacketType.DataUsingGpaDirect ? this.queue.gpaRanges(packet) : undefined;
    const rejection = request.prepare(
      typeof ranges === 'string' ? undefined : ranges,
      typeof ranges === 'string' ? ranges : undefined,
      this.owner.memory,
      this.owner.maxTransfer,
    );
    if (rejection !== undefined) {
      this.counts.rejected++;
      this.queue.warn(`refused a request block: ${rejection}`);
      request.reject(SrbStatus.InvalidRequest, NtStatus.InvalidParameter);
      this.finish(request);
      return;
    }
    this.counts.inFlight++;
    if (this.counts.inFlight > this.counts.maxInFlight)
      this.counts.maxInFlight = this.counts.inFlight;
    this.owner.execute(request);
  }

  private newRequest(): SrbRequest {
    const request = new SrbRequest();
    request.onResult = (result: ScsiResult) => {
      this.counts.inFlight--;
      request.complete(result);
      const length = request.view.getUint32(Offsets.dataTransferLength, true);
      if (request.kind === 'read') {
        this.counts.reads++;
        this.counts.bytesRead += length;
      } else if (request.kind === 'write') {
        this.counts.writes++;
        this.counts.bytesWritten += length;
      }
      this.finish(request);
    };
    return request;
  }

  private finish(request: SrbRequest): void {
    this.counts.completions++;
    const srb = srbStatusCode(request.view.getUint8(Offsets.srbStatus));
    if (srb !== SrbStatus.Success && srb !== SrbStatus.DataOverrun) this.counts.errors++;
    this.send(request.reply(), request.transLo, request.transHi);
    // The queue copied the reply if it had to hold it: the request is free again.
    this.pool.push(request);
  }

  /** Sends a completion (batched with the turn's others; in order behind any that wait for room). */
  send(bytes: Uint8Array, lo: number, hi: number): void {
    if (!this.closed) this.queue.sendCompletion(lo, hi, bytes);
  }

  /** Sends an unsolicited packet (transaction id 0, no completion asked); false when the channel is gone. */
  notify(bytes: Uint8Array): boolean {
    return !this.closed && this.queue.sendInband(bytes) !== 'closed';
  }

  close(): void {
    this.closed = true;
    this.queue.onPacket = undefined;
  }
}
