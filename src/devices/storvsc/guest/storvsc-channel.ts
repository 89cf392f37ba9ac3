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
import type { GuestChannel } from '../../../vmbus/device.ts';
import type { PacketView } from '../../../vmbus/packet.ts';
import { Requestor } from '../../../vmbus/requestor.ts';
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

const CHECK_CONDITION = 0x02;

export type SrbDirection = 'in' | 'out' | 'none';

export interface SrbCommand {
  readonly lun: number;
  readonly cdb: Uint8Array;
  readonly direction: SrbDirection;
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
  /** Sends that found the ring full and waited. */
  ringFull: number;
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
  readonly counters: ChannelCounters;
  private readonly requests = new Requestor<Pending>(STORVSC_MAX_OUTSTANDING_PER_CHANNEL);
  private readonly spare: Pending[] = [];
  private init:
    | { resolve: (reply: Uint8Array) => void; reject: (error: Error) => void }
    | undefined;
  private failure: string | undefined;
  /** Requests waiting to be written to the ring (sent together, see flushOutbox). */
  private readonly outbox: Pending[] = [];
  private flushScheduled = false;
  private waitingForRoom = false;

  constructor(
    readonly channel: GuestChannel,
    readonly index: number,
    private readonly owner: ChannelOwner,
  ) {
    this.counters = {
      index,
      requests: 0,
      completions: 0,
      bytesRead: 0,
      bytesWritten: 0,
      errors: 0,
      badPackets: 0,
      inFlight: 0,
      maxInFlight: 0,
      ringFull: 0,
    };
    channel.endpoint.onPacket = (packet) => this.receive(packet);
  }

  get inFlight(): number {
    return this.requests.inFlight;
  }

  get hasRoom(): boolean {
    return this.failure === undefined && this.requests.inFlight < this.requests.capacity;
  }

  get usable(): boolean {
    return this.failure === undefined && this.channel.endpoint.state === 'open';
  }

  /** Unknown or repeated transaction ids the requestor refused. */
  get unknownCompletions(): number {
    return this.requests.unknownCompletions;
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
    if (this.init) return Promise.reject(new StorvscError('a control request is already pending'));
    const packet = new Uint8Array(this.owner.packetSize);
    const view = new DataView(packet.buffer);
    view.setUint32(Offsets.operation, operation, true);
    view.setUint32(Offsets.flags, REQUEST_COMPLETION_FLAG, true);
    fill(view);
    return new Promise<Uint8Array>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.init = undefined;
        reject(
          new StorvscError(
            `the host did not answer ${VstorOperation[operation]} within ${timeoutMs / 1000}s`,
          ),
        );
      }, timeoutMs);
      this.init = {
        resolve: (reply) => {
          clearTimeout(timer);
          resolve(reply);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      void this.sendRaw(packet, undefined, VMBUS_RQST_INIT.lo, VMBUS_RQST_INIT.hi).then((error) => {
        if (error) this.init?.reject(error);
        if (error) this.init = undefined;
      });
    });
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
    this.counters.requests++;
    const inFlight = this.requests.inFlight;
    this.counters.inFlight = inFlight;
    if (inFlight > this.counters.maxInFlight) this.counters.maxInFlight = inFlight;
    const promise = new Promise<SrbResult>((resolve, reject) => {
      pending.resolve = resolve;
      pending.reject = reject;
    });
    pending.id = id;
    pending.bytes = size === VSTOR_PACKET_SIZE ? p : p.subarray(0, size);
    pending.ranges[0] = length > 0 ? command.buffer : undefined;
    this.outbox.push(pending);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushOutbox);
    }
    return promise;
  }

  /**
   * Sends what execute() queued, all in one batch: the ring's write index is
   * published once and the host signalled at most once for every request
   * started in this turn of the event loop. When the ring is full the rest
   * waits for the host to free room.
   */
  private readonly flushOutbox = (): void => {
    this.flushScheduled = false;
    if (this.waitingForRoom) return;
    const endpoint = this.channel.endpoint;
    let full: Pending | undefined;
    endpoint.batch(() => {
      while (this.outbox.length > 0) {
        const pending = this.outbox[0]!;
        const buffer = pending.ranges[0];
        const result = this.failure
          ? 'corrupt'
          : buffer
            ? endpoint.sendGpaDirect(
                pending.ranges as GuestBuffer[],
                pending.bytes,
                pending.id,
                0,
                true,
              )
            : endpoint.sendInband(pending.bytes, pending.id, 0, true);
        if (result === 'full') {
          full = pending;
          return;
        }
        this.outbox.shift();
        if (result === 'corrupt') {
          this.unsent(
            pending,
            new StorvscError(
              this.failure ?? `channel ${this.index} is ${endpoint.state}: ${endpoint.error}`,
            ),
          );
        }
      }
    });
    if (!full) return;
    this.counters.ringFull++;
    const head: Pending = full;
    const buffer = head.ranges[0];
    const packetBytes = buffer
      ? 24 + 8 + 8 * buffer.pfns.length + ((head.bytes.length + 7) & ~7)
      : 16 + ((head.bytes.length + 7) & ~7);
    this.waitingForRoom = true;
    void endpoint.waitForSpace(packetBytes).then((ok) => {
      this.waitingForRoom = false;
      if (!ok) {
        const error = new StorvscError(`channel ${this.index} closed while waiting for ring space`);
        for (const p of this.outbox.splice(0)) this.unsent(p, error);
        return;
      }
      this.flushOutbox();
    });
  };

  /** A request that never reached the ring: its slot comes back and it fails. */
  private unsent(pending: Pending, error: Error): void {
    const reject = pending.reject;
    // Unless a hostile host already "completed" the id (the slot may belong to another request now).
    if (this.requests.get(pending.id) === pending) {
      this.requests.complete(pending.id, 0);
      this.finish(pending);
    }
    reject(error);
  }

  /** Sends, waiting for ring space as needed; resolves with an error, or undefined when sent. */
  private async sendRaw(
    bytes: Uint8Array,
    buffer: GuestBuffer | undefined,
    lo: number,
    hi: number,
  ): Promise<StorvscError | undefined> {
    const endpoint = this.channel.endpoint;
    for (;;) {
      if (this.failure) return new StorvscError(this.failure);
      const result = buffer
        ? endpoint.sendGpaDirect([buffer], bytes, lo, hi, true)
        : endpoint.sendInband(bytes, lo, hi, true);
      if (result === 'ok') return undefined;
      if (result === 'corrupt') {
        return new StorvscError(`channel ${this.index} is ${endpoint.state}: ${endpoint.error}`);
      }
      this.counters.ringFull++;
      const packetBytes = buffer
        ? 24 + 8 + 8 * buffer.pfns.length + ((bytes.length + 7) & ~7)
        : 16 + ((bytes.length + 7) & ~7);
      if (!(await endpoint.waitForSpace(packetBytes))) {
        return new StorvscError(`channel ${this.index} closed while waiting for ring space`);
      }
    }
  }

  private receive(packet: PacketView): boolean {
    try {
      this.completion(packet);
    } catch {
      this.counters.badPackets++;
    }
    return true;
  }

  private completion(packet: PacketView): void {
    const lo = packet.transLo;
    const hi = packet.transHi;
    const length = packet.payloadLength;
    const base = packet.payloadOffset;
    const dv = packet.view;
    if (lo === 0 && hi === 0) {
      // Unsolicited: only the operation code needs to be there.
      if (length < 4) {
        this.counters.badPackets++;
        return;
      }
      const operation = dv.getUint32(base + Offsets.operation, true);
      if (operation === VstorOperation.EnumerateBus || operation === VstorOperation.RemoveDevice) {
        this.owner.rescanRequested();
      } else {
        // COMPLETE_IO / FCHBA_DATA without an id name nothing; others are ignored.
        this.counters.badPackets++;
      }
      return;
    }
    const minimum = this.owner.packetSize;
    if (lo === VMBUS_RQST_INIT.lo && hi === VMBUS_RQST_INIT.hi) {
      const init = this.init;
      if (!init || length < minimum) {
        this.counters.badPackets++;
        return;
      }
      this.init = undefined;
      init.resolve(packet.payload().slice(0, Math.min(length, VSTOR_PACKET_SIZE)));
      return;
    }
    const pending = this.requests.complete(lo, hi);
    if (!pending) {
      this.counters.badPackets++;
      return;
    }
    const { resolve, reject } = pending;
    const requested = pending.length;
    const room = pending.view.getUint8(Offsets.senseInfoLength);
    const direction = pending.view.getUint8(Offsets.dataIn);
    this.finish(pending);
    this.counters.completions++;
    if (length < minimum) {
      this.counters.badPackets++;
      reject(
        new StorvscError(
          `host completion of ${length} bytes is shorter than the ${minimum}-byte packet`,
        ),
      );
      return;
    }
    const operation = dv.getUint32(base + Offsets.operation, true);
    if (operation !== VstorOperation.CompleteIo) {
      this.counters.badPackets++;
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
    if (scsiStatus === CHECK_CONDITION && srbStatus & SRB_STATUS_AUTOSENSE_VALID) {
      const n = Math.min(
        dv.getUint8(base + Offsets.senseInfoLength),
        room,
        length - Offsets.senseData,
      );
      if (n > 0)
        sense = packet.buffer.slice(base + Offsets.senseData, base + Offsets.senseData + n);
    }
    if (!ok) this.counters.errors++;
    if (direction === StorvscDataDirection.Read) this.counters.bytesRead += transferred;
    else if (direction === StorvscDataDirection.Write) this.counters.bytesWritten += transferred;
    resolve({
      srbStatus,
      scsiStatus,
      ntStatus: dv.getUint32(base + Offsets.status, true),
      transferred,
      sense,
    });
  }

  /** Returns a finished request's slot and context. */
  private finish(pending: Pending): void {
    this.counters.inFlight = this.requests.inFlight;
    this.spare.push(pending);
    this.owner.slotFreed();
  }

  /** Fails every request in flight (the channel closed or the controller went away). */
  fail(reason: string): void {
    this.failure ??= reason;
    const error = new StorvscError(reason);
    // Queued requests are in the requestor too: they fail with the rest.
    this.outbox.length = 0;
    for (const pending of this.requests.drain()) {
      const reject = pending.reject;
      this.finish(pending);
      reject(error);
    }
    this.counters.inFlight = 0;
    const init = this.init;
    this.init = undefined;
    init?.reject(error);
  }
}

const EMPTY = new Uint8Array(0);

function newPending(): Pending {
  const packet = new Uint8Array(VSTOR_PACKET_SIZE);
  return {
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
