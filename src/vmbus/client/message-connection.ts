/**
 * The guest VMBus driver's message plumbing (Linux drivers/hv/connection.c,
 * vmbus_drv.c): SynIC setup on each VP, posting channel messages with
 * HvPostMessage (retrying INSUFFICIENT_BUFFERS like vmbus_post_msg), taking
 * host messages from SIMP slot 2, and dispatching channel interrupts from
 * the event flags. Host messages are validated (size, type, minimum length)
 * before anything looks at them; bad ones are counted and dropped.
 */

import { setTimeout as sleep } from 'node:timers/promises';
import { takeFlagBits } from '../../hv/flag-bits.ts';
import type { PageAllocator } from '../../hv/page-allocator.ts';
import type { GuestPartition } from '../../hv/partition.ts';
import {
  HV_HYPERCALL_FAST_BIT,
  HV_MESSAGE_SIZE,
  HV_SYNIC_SIEFP_ENABLE,
  HV_SYNIC_SIMP_ENABLE,
  HvCallCode,
  HvMsr,
  HvStatus,
  hvInputPostMessage,
  PAGE_SIZE,
} from '../../hv/protocol.ts';
import { checkMessageFrame } from '../message-frame.ts';
import {
  ChannelMessageType,
  channelMessageHeader,
  MAX_CHANNEL_RELIDS,
  MAX_SIZE_CHANNEL_MESSAGE,
  VMBUS_MESSAGE_SINT,
  VmbusVersion,
} from '../protocol.ts';
import type { RateLimitedLog } from '../rate-limited-log.ts';

/** vmbus_post_msg() retries up to 100 times with a growing delay. */
const POST_RETRIES = 100;
const VMBUS_HV_MESSAGE_TYPE = 1;

export class PostMessageError extends Error {
  override readonly name = 'PostMessageError';
  constructor(
    readonly status: HvStatus,
    message: string,
  ) {
    super(message);
  }
}

export interface ClientStats {
  messagesIn: number;
  messagesOut: number;
  dropped: number;
  postRetries: number;
  interrupts: number;
  lastDropReasons: string[];
}

type Waiter = {
  readonly type: ChannelMessageType;
  readonly relid: number | undefined;
  readonly match: (payload: Uint8Array) => boolean;
  readonly resolve: (payload: Uint8Array) => void;
  readonly reject: (error: Error) => void;
  readonly timer: ReturnType<typeof setTimeout>;
};

export class MessageConnection {
  readonly stats: ClientStats = {
    messagesIn: 0,
    messagesOut: 0,
    dropped: 0,
    postRetries: 0,
    interrupts: 0,
    lastDropReasons: [],
  };
  /** Connection id guest messages go to (1, or what VERSION_RESPONSE named from 5.0). */
  messageConnectionId = 1;
  /** Negotiated version (0 while disconnected): decides how channel interrupts arrive. */
  version = 0;
  /** Below 5.0: the interrupt page (receive half, then send half at +2048). */
  readonly interruptPageGpa: number;
  readonly monitorPage1Gpa: number;
  readonly monitorPage2Gpa: number;
  /** Unsolicited messages (offers, rescinds) go here. */
  onMessage: ((type: ChannelMessageType, payload: Uint8Array) => void) | undefined;
  /** A channel's interrupt arrived. */
  onChannelInterrupt: ((relid: number) => void) | undefined;

  private readonly inputGpa: number;
  private readonly slot = new Uint8Array(HV_MESSAGE_SIZE);
  private readonly waiters: Waiter[] = [];
  private readonly pages: number[] = [];
  private started = false;

  constructor(
    readonly partition: GuestPartition,
    private readonly allocator: PageAllocator,
  ) {
    const memory = partition.memory;
    const take = (): number => {
      const pfn = allocator.allocate(1);
      this.pages.push(pfn);
      memory.fill(pfn * PAGE_SIZE, PAGE_SIZE);
      return pfn * PAGE_SIZE;
    };
    // Per-VP SynIC pages, as hv_synic_enable_regs() programs them.
    for (const vp of partition.vps) {
      vp.writeMsr(HvMsr.Simp, BigInt(take()) | HV_SYNIC_SIMP_ENABLE);
      vp.writeMsr(HvMsr.Siefp, BigInt(take()) | HV_SYNIC_SIEFP_ENABLE);
      vp.writeMsr(HvMsr.Sint0 + VMBUS_MESSAGE_SINT, 0x20n); // vector, unmasked
      vp.writeMsr(HvMsr.Scontrol, 1n);
    }
    this.inputGpa = take();
    this.interruptPageGpa = take();
    this.monitorPage1Gpa = take();
    this.monitorPage2Gpa = take();
  }

  /** Starts taking interrupts on every VP. */
  start(): void {
    if (this.started) return;
    this.started = true;
    for (const vp of this.partition.vps)
      vp.startInterrupts((sints) => this.interrupt(vp.index, sints));
  }

  stop(): void {
    if (!this.started) return;
    this.started = false;
    for (const vp of this.partition.vps) vp.stopInterrupts();
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(new Error('VMBus connection stopped'));
    }
  }

  /** Disables the SynIC and frees its pages (after stop()). */
  release(): void {
    for (const vp of this.partition.vps) {
      vp.writeMsr(HvMsr.Simp, 0n);
      vp.writeMsr(HvMsr.Siefp, 0n);
    }
    for (const pfn of this.pages.splice(0)) this.allocator.free(pfn, 1);
  }

  /**
   * HvPostMessage of a channel message, retried like Linux's vmbus_post_msg:
   * INVALID_CONNECTION_ID fails at once for INITIATE_CONTACT (an old host
   * without connection id 4) and is retried otherwise, as are
   * INSUFFICIENT_BUFFERS/MEMORY; other statuses fail.
   */
  async post(payload: Uint8Array, connectionId = this.messageConnectionId): Promise<void> {
    if (payload.length > MAX_SIZE_CHANNEL_MESSAGE) {
      throw new PostMessageError(
        HvStatus.InvalidParameter,
        `message of ${payload.length} bytes > 240`,
      );
    }
    const memory = this.partition.memory;
    const vp = this.partition.vp0;
    let delayUs = 1;
    let status: HvStatus = HvStatus.Success;
    for (let attempt = 0; attempt < POST_RETRIES; attempt++) {
      hvInputPostMessage.writeInto(memory.u8, this.inputGpa, {
        connectionid: connectionId,
        message_type: VMBUS_HV_MESSAGE_TYPE,
        payload_size: payload.length,
        payload,
      });
      status = Number(
        vp.hypercall(BigInt(HvCallCode.PostMessage), BigInt(this.inputGpa)) & 0xffffn,
      );
      if (status === HvStatus.Success) {
        this.stats.messagesOut++;
        return;
      }
      const type = channelMessageHeader.read(payload).msgtype;
      if (status === HvStatus.InvalidConnectionId && type === ChannelMessageType.InitiateContact) {
        throw new PostMessageError(status, `no port at connection id ${connectionId}`);
      }
      const retryable =
        status === HvStatus.InvalidConnectionId ||
        status === HvStatus.InsufficientBuffers ||
        status === HvStatus.InsufficientMemory;
      if (!retryable)
        throw new PostMessageError(status, `HvPostMessage failed with status ${status}`);
      this.stats.postRetries++;
      // Linux waits 1 us doubling up to ~2 s; below a millisecond we just yield.
      if (delayUs >= 1000) await sleep(delayUs / 1000);
      else await new Promise((resolve) => setImmediate(resolve));
      if (attempt < 21) delayUs *= 2;
    }
    throw new PostMessageError(status, `HvPostMessage still refused after ${POST_RETRIES} tries`);
  }

  /** Fast HvSignalEvent to the host (vmbus_set_event). */
  signal(connectionId: number): HvStatus {
    const control = BigInt(HvCallCode.SignalEvent) | HV_HYPERCALL_FAST_BIT;
    return Number(this.partition.vp0.hypercall(control, BigInt(connectionId)) & 0xffffn);
  }

  /** Sets a relid's bit in the send half of the interrupt page (channels without a dedicated interrupt). */
  flagInterruptPage(relid: number): void {
    const word = this.interruptPageGpa + 2048 + (relid >>> 5) * 4;
    Atomics.or(this.partition.memory.i32, word >>> 2, 1 << (relid & 31));
  }

  /**
   * Waits for a host message of `type` that `match` accepts. Register before
   * posting the request. Rejects after `timeoutMs`.
   */
  expect(
    type: ChannelMessageType,
    match: (payload: Uint8Array) => boolean,
    timeoutMs = 10_000,
    relid?: number,
  ): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(
          new Error(`timed out after ${timeoutMs} ms waiting for ${ChannelMessageType[type]}`),
        );
      }, timeoutMs);
      const waiter: Waiter = { type, relid, match, resolve, reject, timer };
      this.waiters.push(waiter);
    });
  }

  /** Rejects the waiters of these types tagged with `relid` (the channel was rescinded). */
  cancelWaiters(
    relid: number | undefined,
    types: readonly ChannelMessageType[],
    reason: string,
  ): void {
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      const w = this.waiters[i]!;
      if (w.relid === relid && types.includes(w.type)) {
        this.waiters.splice(i, 1);
        clearTimeout(w.timer);
        w.reject(new Error(reason));
      }
    }
  }

  private interrupt(vpIndex: number, sints: number): void {
    this.stats.interrupts++;
    if ((sints & (1 << VMBUS_MESSAGE_SINT)) === 0) return;
    const vp = this.partition.vps[vpIndex]!;
    // Messages first (vmbus_on_msg_dpc), then channel events (vmbus_chan_sched).
    while (vp.takeMessage(VMBUS_MESSAGE_SINT, this.slot)) this.handleSlot();
    if (this.version >= VmbusVersion.Win8 || this.version === 0) {
      vp.takeEventFlags(VMBUS_MESSAGE_SINT, MAX_CHANNEL_RELIDS, this.channelInterrupt);
    } else {
      // Older hosts flag channels in the receive half of the interrupt page and set SIEFP bit 0.
      let flagged = false;
      vp.takeEventFlags(VMBUS_MESSAGE_SINT, 1, () => {
        flagged = true;
      });
      if (flagged) this.scanReceiveHalf();
    }
  }

  private scanReceiveHalf(): void {
    takeFlagBits(
      this.partition.memory.i32,
      this.interruptPageGpa >>> 2,
      MAX_CHANNEL_RELIDS / 32,
      this.channelInterrupt,
    );
  }

  /** Bound once, so taking event flags makes no closure per interrupt. */
  private readonly channelInterrupt = (relid: number): void => this.onChannelInterrupt?.(relid);

  private handleSlot(): void {
    this.stats.messagesIn++;
    const view = new DataView(this.slot.buffer);
    const hvType = view.getUint32(0, true);
    const size = this.slot[4]!;
    if (hvType !== VMBUS_HV_MESSAGE_TYPE) {
      this.drop(`SynIC message type 0x${hvType.toString(16)}`);
      return;
    }
    if (size > MAX_SIZE_CHANNEL_MESSAGE) {
      this.drop(`payload_size ${size} > ${MAX_SIZE_CHANNEL_MESSAGE}`);
      return;
    }
    const payload = this.slot.slice(16, 16 + size);
    const frame = checkMessageFrame(payload, 'host-to-guest');
    if (!frame.ok) {
      this.drop(frame.reason);
      return;
    }
    const type = frame.type;
    const i = this.waiters.findIndex((w) => w.type === type && w.match(payload));
    if (i >= 0) {
      const [waiter] = this.waiters.splice(i, 1);
      clearTimeout(waiter!.timer);
      waiter!.resolve(payload);
      return;
    }
    this.onMessage?.(type, payload);
  }

  /** Where dropped-message reasons are logged (rate-limited). */
  dropLog: RateLimitedLog | undefined;

  /** Counts, remembers and logs (rate-limited) a dropped host message. */
  drop(reason: string): void {
    this.stats.dropped++;
    this.dropLog?.log(`vmbus: dropped host message: ${reason}`);
    this.stats.lastDropReasons.push(reason);
    if (this.stats.lastDropReasons.length > 16) this.stats.lastDropReasons.shift();
  }
}
