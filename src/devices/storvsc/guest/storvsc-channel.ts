/**
 * One channel of the guest's storvsc (the primary or a sub-channel): sends
 * EXECUTE_SRB packets — in-band, or GPA-direct with the page list of the
 * request's buffer — and matches the host's completions to them by
 * transaction id (Linux storvsc_on_channel_callback).
 *
 * The host is hostile. A completion must carry an id we handed out and not
 * yet saw answered, be at least one packet long and say COMPLETE_IO; its
 * sense length is clipped to the buffer we offered and its byte count to the
 * request's length. Transaction id 0 is an unsolicited message: only
 * ENUMERATE_BUS and REMOVE_DEVICE mean anything (a rescan); a COMPLETE_IO
 * or FCHBA_DATA with id 0 is refused, as Linux refuses it.
 */
import { type DataDirection, ScsiStatus } from '../../../scsi/codes.ts';
import type { GuestChannel } from '../../../vmbus/device.ts';
import type { IncomingPacket, RequestTable } from '../../../vmbus/queue.ts';
import {
  Offsets,
  PRE_WIN8_SENSE_BUFFER_SIZE,
  REQUEST_COMPLETION_FLAG,
  SP_UNTAGGED,
  SRB_SIMPLE_TAG_REQUEST,
  SRB_STATUS_AUTOSENSE_VALID,
  SrbFlags,
  SrbStatus,
  STORVSC_MAX_CMD_LEN,
  STORVSC_SENSE_BUFFER_SIZE,
  STORVSC_SRB_TIME_OUT_VALUE,
  StorvscDataDirection,
  srbStatusCode,
  VMBUS_RQST_INIT,
  VMSCSI_SIZE_DELTA,
  VSTOR_PACKET_SIZE,
  VstorOperation,
  vmscsiRequest,
} from '../protocol.ts';
import type { GuestBuffer } from './buffers.ts';

/** Requests one channel keeps in flight (Linux's default for a 128 KiB ring). */
export const STORVSC_MAX_OUTSTANDING_PER_CHANNEL = 352;

export interface SrbCommand {
  readonly lun: number;
  readonly cdb: Uint8Array;
  readonly direction: DataDirection;
  /** The data buffer (its length is the transfer length); none for no data. */
  readonly buffer?: GuestBuffer;
}

export interface SrbResult {
  readonly srbStatus: number;
  readonly scsiStatus: number;
  /** vstor_packet.status (an NT status). */
  readonly ntStatus: number;
  /** Bytes the host says it moved (0 unless SUCCESS or DATA_OVERRUN). */
  readonly transferred: number;
  /** Valid sense bytes (a copy; empty without autosense). */
  readonly sense: Uint8Array;
}

export class StorvscError extends Error {
  override readonly name = 'StorvscError';
}

interface Pending {
  readonly kind: 'srb';
  readonly packet: Uint8Array;
  readonly view: DataView;
  /** The bytes to send (the packet, or its first 48 bytes before Windows 8). */
  bytes: Uint8Array;
  /** The one GPA range (the request's buffer), or none. */
  readonly ranges: (GuestBuffer | undefined)[];
  id: number;
  length: number;
  resolve: (result: SrbResult) => void;
  reject: (error: Error) => void;
}

export interface ChannelCounters {
  readonly index: number;
  requests: number;
  completions: number;
  bytesRead: number;
  bytesWritten: number;
  /** Completions with an SRB status other than SUCCESS / DATA_OVERRUN. */
  errors: number;
  /** Host packets dropped: unknown or repeated ids, short or wrong packets. */
  badPackets: number;
  inFlight: number;
  maxInFlight: number;
  /** Requests that found the ring full and waited in the queue's backlog. */
  ringFull: number;
}

/** A handshake request: it goes out with the fixed id VMBUS_RQST_INIT. */
interface ControlRequest {
  readonly kind: 'control';
  readonly operation: VstorOperation;
  readonly timeoutMs: number;
  readonly resolve: (reply: Uint8Array) => void;
  readonly reject: (error: Error) => void;
}

/** What a channel needs from its controller. */
export interface ChannelOwner {
  /** Bytes of a packet at the negotiated (or, during the handshake, proposed) version. */
  readonly packetSize: number;
  /** An unsolicited ENUMERATE_BUS / REMOVE_DEVICE arrived. */
  rescanRequested(): void;
  /** A request finished: a slot is free. */
  slotFreed(): void;
}

export class StorvscChannel {
  private readonly counts: Omit<ChannelCounters, 'ringFull' | 'inFlight'>;
  private readonly requests: RequestTable<Pending | ControlRequest>;
  private readonly spare: Pending[] = [];
  private failure: string | undefined;

  constructor(
    readonly channel: GuestChannel,
    readonly index: number,
    private readonly owner: ChannelOwner,
  ) {
    this.counts = {
      index,
      requests: 0,
      completions: 0,
      bytesRead: 0,
      bytesWritten: 0,
      errors: 0,
      badPackets: 0,
      maxInFlight: 0,
    };
    const queue = channel.queue;
    // Every request of one turn goes out in one batch: one publish, at most one signal.
    queue.configure({ batching: 'turn' });
    this.requests = queue.trackRequests<Pending | ControlRequest>({
      capacity: STORVSC_MAX_OUTSTANDING_PER_CHANNEL,
      // Linux's storvsc takes any packet with a request's id as its completion.
      match: 'any-type',
      onCompletion: (request, packet) =>
        request.kind === 'control'
          ? this.controlAnswer(request, packet)
          : this.completion(request, packet),
      onTimeout: (request) => {
        if (request.kind !== 'control') return;
        request.reject(
          new StorvscError(
            `the host did not answer ${VstorOperation[request.operation]} within ${request.timeoutMs / 1000}s`,
          ),
        );
      },
      onAbandon: (request, reason) => this.abandon(request, new StorvscError(reason)),
    });
    queue.onPacket = (packet) => this.unsolicited(packet);
  }

  get counters(): ChannelCounters {
    return {
      ...this.counts,
      badPackets: this.counts.badPackets + this.channel.queue.stats.unknownCompletions,
      inFlight: this.requests.inFlight,
      ringFull: this.channel.queue.stats.backlogged,
    };
  }

  get inFlight(): number {
    return this.requests.inFlight;
  }

  get hasRoom(): boolean {
    return this.failure === undefined && this.requests.hasRoom;
  }

  get usable(): boolean {
    return this.failure === undefined && this.channel.queue.open;
  }

  /** Unknown or repeated transaction ids the queue refused. */
  get unknownCompletions(): number {
    return this.channel.queue.stats.unknownCompletions;
  }

  // --- handshake -------------------------------------------------------------

  /**
   * Sends one control packet with the handshake's transaction id
   * (VMBUS_RQST_INIT) and resolves with the host's answer (a copy).
   */
  control(
    operation: VstorOperation,
    fill: (view: DataView) => void,
    timeoutMs: number,
  ): Promise<Uint8Array> {
    if (this.failure) return Promise.reject(new StorvscError(this.failure));
    const packet = new Uint8Array(this.owner.packetSize);
    const view = new DataView(packet.buffer);
    view.setUint32(Offsets.operation, operation, true);
    view.setUint32(Offsets.flags, REQUEST_COMPLETION_FLAG, true);
    fill(view);
    return new Promise<Uint8Array>((resolve, reject) => {
      const request: ControlRequest = { kind: 'control', operation, timeoutMs, resolve, reject };
      const { lo, hi } = VMBUS_RQST_INIT;
      if (!this.requests.allocateFixed(lo, hi, request, timeoutMs)) {
        reject(new StorvscError('a control request is already pending'));
        return;
      }
      if (this.channel.queue.sendInband(packet, lo, hi, true) === 'closed') {
        this.requests.cancel(lo, hi);
        reject(new StorvscError(this.closedReason()));
      }
    });
  }

  private controlAnswer(request: ControlRequest, packet: IncomingPacket): void {
    const length = packet.payloadLength;
    if (length < this.owner.packetSize) {
      this.counts.badPackets++;
      request.reject(
        new StorvscError(
          `the host answered ${VstorOperation[request.operation]} with ${length} bytes, less than the ${this.owner.packetSize}-byte packet`,
        ),
      );
      return;
    }
    request.resolve(packet.payload().slice(0, Math.min(length, VSTOR_PACKET_SIZE)));
  }

  // --- I/O ---------------------------------------------------------------------

  /** Sends one SCSI request; resolves with the host's (validated) completion. */
  execute(command: SrbCommand): Promise<SrbResult> {
    if (this.failure) return Promise.reject(new StorvscError(this.failure));
    const cdbLength = command.cdb.length;
    if (cdbLength === 0 || cdbLength > STORVSC_MAX_CMD_LEN) {
      return Promise.reject(new RangeError(`CDB of ${cdbLength} bytes is outside 1..16`));
    }
    const pending = this.spare.pop() ?? newPending();
    const id = this.requests.allocate(pending);
    if (id === 0) {
      this.spare.push(pending);
      return Promise.reject(new StorvscError(`channel ${this.index} has no free request slot`));
    }
    const size = this.owner.packetSize;
    const legacy = size < VSTOR_PACKET_SIZE;
    const length = command.buffer?.length ?? 0;
    pending.length = length;
    const p = pending.packet;
    const v = pending.view;
    p.fill(0);
    v.setUint32(Offsets.operation, VstorOperation.ExecuteSrb, true);
    v.setUint32(Offsets.flags, REQUEST_COMPLETION_FLAG, true);
    v.setUint16(
      Offsets.srbLength,
      legacy ? vmscsiRequest.size - VMSCSI_SIZE_DELTA : vmscsiRequest.size,
      true,
    );
    v.setUint8(Offsets.lun, command.lun);
    v.setUint8(Offsets.cdbLength, cdbLength);
    v.setUint8(
      Offsets.senseInfoLength,
      legacy ? PRE_WIN8_SENSE_BUFFER_SIZE : STORVSC_SENSE_BUFFER_SIZE,
    );
    let flags = SrbFlags.DISABLE_SYNCH_TRANSFER;
    if (command.direction === 'in') {
      v.setUint8(Offsets.dataIn, StorvscDataDirection.Read);
      flags |= SrbFlags.DATA_IN;
    } else if (command.direction === 'out') {
      v.setUint8(Offsets.dataIn, StorvscDataDirection.Write);
      flags |= SrbFlags.DATA_OUT;
    } else {
      v.setUint8(Offsets.dataIn, StorvscDataDirection.None);
    }
    v.setUint32(Offsets.dataTransferLength, length, true);
    p.set(command.cdb, Offsets.cdb);
    if (!legacy) {
      flags |= SrbFlags.QUEUE_ACTION_ENABLE | SrbFlags.NO_QUEUE_FREEZE;
      v.setUint8(Offsets.queueTag, SP_UNTAGGED);
      v.setUint8(Offsets.queueAction, SRB_SIMPLE_TAG_REQUEST);
      v.setUint32(Offsets.srbFlags, flags, true);
      v.setUint32(Offsets.timeOutValue, STORVSC_SRB_TIME_OUT_VALUE, true);
    }
    this.counts.requests++;
    const inFlight = this.requests.inFlight;
    if (inFlight > this.counts.maxInFlight) this.counts.maxInFlight = inFlight;
    const promise = new Promise<SrbResult>((resolve, reject) => {
      pending.resolve = resolve;
      pending.reject = reject;
    });
    pending.id = id;
    const bytes = size === VSTOR_PACKET_SIZE ? p : p.subarray(0, size);
    const queue = this.channel.queue;
    const buffer = length > 0 ? command.buffer : undefined;
    if (buffer) pending.ranges[0] = buffer;
    const status = buffer
      ? queue.sendGpaDirect(pending.ranges as GuestBuffer[], bytes, id, 0, true)
      : queue.sendInband(bytes, id, 0, true);
    if (status === 'closed') {
      this.requests.cancel(id);
      this.finish(pending);
      pending.reject(new StorvscError(this.closedReason()));
    }
    return promise;
  }

  private closedReason(): string {
    const queue = this.channel.queue;
    return this.failure ?? `channel ${this.index} is ${queue.state}: ${queue.error}`;
  }

  /** Transaction id 0: only ENUMERATE_BUS and REMOVE_DEVICE mean anything (a rescan). */
  private unsolicited(packet: IncomingPacket): void {
    if (packet.payloadLength < 4) {
      this.counts.badPackets++;
      this.channel.queue.drop(`an unsolicited packet of ${packet.payloadLength} bytes`);
      return;
    }
    const operation = packet.view.getUint32(packet.payloadOffset + Offsets.operation, true);
    if (operation === VstorOperation.EnumerateBus || operation === VstorOperation.RemoveDevice) {
      this.owner.rescanRequested();
      return;
    }
    // COMPLETE_IO / FCHBA_DATA without an id name nothing; others are ignored.
    this.counts.badPackets++;
    this.channel.queue.drop(`an unsolicited operation ${operation}`);
  }

  private completion(pending: Pending, packet: IncomingPacket): void {
    const length = packet.payloadLength;
    const base = packet.payloadOffset;
    const dv = packet.view;
    const minimum = this.owner.packetSize;
    const { resolve, reject } = pending;
    const requested = pending.length;
    const room = pending.view.getUint8(Offsets.senseInfoLength);
    const direction = pending.view.getUint8(Offsets.dataIn);
    this.finish(pending);
    this.counts.completions++;
    if (length < minimum) {
      this.counts.badPackets++;
      reject(
        new StorvscError(
          `host completion of ${length} bytes is shorter than the ${minimum}-byte packet`,
        ),
      );
      return;
    }
    const operation = dv.getUint32(base + Offsets.operation, true);
    if (operation !== VstorOperation.CompleteIo) {
      this.counts.badPackets++;
      reject(
        new StorvscError(`host answered a request with operation ${operation}, not COMPLETE_IO`),
      );
      return;
    }
    const srbStatus = dv.getUint8(base + Offsets.srbStatus);
    const scsiStatus = dv.getUint8(base + Offsets.scsiStatus);
    const code = srbStatusCode(srbStatus);
    const ok = code === SrbStatus.Success || code === SrbStatus.DataOverrun;
    let transferred = ok ? dv.getUint32(base + Offsets.dataTransferLength, true) : 0;
    if (transferred > requested) transferred = requested;
    let sense: Uint8Array = EMPTY;
    if (scsiStatus === ScsiStatus.CHECK_CONDITION && srbStatus & SRB_STATUS_AUTOSENSE_VALID) {
      const n = Math.min(
        dv.getUint8(base + Offsets.senseInfoLength),
        room,
        length - Offsets.senseData,
      );
      if (n > 0)
        sense = packet.buffer.slice(base + Offsets.senseData, base + Offsets.senseData + n);
    }
    if (!ok) this.counts.errors++;
    if (direction === StorvscDataDirection.Read) this.counts.bytesRead += transferred;
    else if (direction === StorvscDataDirection.Write) this.counts.bytesWritten += transferred;
    resolve({
      srbStatus,
      scsiStatus,
      ntStatus: dv.getUint32(base + Offsets.status, true),
      transferred,
      sense,
    });
  }

  /** Returns a finished request's context to the spares and wakes a waiting submitter. */
  private finish(pending: Pending): void {
    pending.ranges[0] = undefined;
    this.spare.push(pending);
    this.owner.slotFreed();
  }

  private abandon(request: Pending | ControlRequest, error: Error): void {
    if (request.kind === 'srb') this.finish(request);
    request.reject(error);
  }

  /** Fails every request in flight (the channel closed or the controller went away). */
  fail(reason: string): void {
    this.failure ??= reason;
    const error = new StorvscError(reason);
    for (const request of this.requests.drain()) this.abandon(request, error);
  }
}

const EMPTY = new Uint8Array(0);

function newPending(): Pending {
  const packet = new Uint8Array(VSTOR_PACKET_SIZE);
  return {
    kind: 'srb',
    packet,
    view: new DataView(packet.buffer),
    bytes: packet,
    ranges: [undefined],
    id: 0,
    length: 0,
    resolve: () => {},
    reject: () => {},
  };
}
