import type { GuestMemory } from './guest-memory.ts';
import {
  HV_EVENT_FLAGS_BYTE_COUNT,
  HV_EVENT_FLAGS_COUNT,
  HV_MESSAGE_FLAG_PENDING,
  HV_MESSAGE_PAYLOAD_BYTE_COUNT,
  HV_MESSAGE_SIZE,
  HV_SYNIC_SIEFP_ENABLE,
  HV_SYNIC_SIMP_ENABLE,
  HV_SYNIC_SINT_COUNT,
  HV_SYNIC_SINT_MASKED,
  PAGE_SIZE,
} from './protocol.ts';
import type { SharedState } from './shared-state.ts';

const PAGE_MASK = ~BigInt(PAGE_SIZE - 1) & 0xffff_ffff_ffff_ffffn;

interface QueuedMessage {
  readonly messageType: number;
  readonly payload: Uint8Array;
  readonly port: number;
}

export interface DeliveryStats {
  messagesDelivered: number;
  messagesQueued: number;
  eventsSignaled: number;
  eventsCoalesced: number;
  eventsDropped: number;
}

/**
 * The SynIC's delivery side, run by the host worker: places messages in a
 * guest VP's message page slot for a SINT and sets event flags, raising the
 * SINT's interrupt. A busy slot keeps later messages queued here (the
 * hypervisor's per-SINT queue) with MessagePending set in the slot, and they
 * are redelivered when the guest writes EOM (TLFS "SynIC Message Flags").
 */
export class SynicDelivery {
  private readonly queues: QueuedMessage[][][];
  readonly stats: DeliveryStats = {
    messagesDelivered: 0,
    messagesQueued: 0,
    eventsSignaled: 0,
    eventsCoalesced: 0,
    eventsDropped: 0,
  };

  constructor(
    private readonly memory: GuestMemory,
    private readonly state: SharedState,
  ) {
    this.queues = Array.from({ length: state.vpCount }, () =>
      Array.from({ length: HV_SYNIC_SINT_COUNT }, () => []),
    );
  }

  /** Posts a message to a guest SINT. Never blocks: it is queued when the slot is busy. */
  postMessage(vp: number, sint: number, messageType: number, payload: Uint8Array, port = 0): void {
    if (payload.length > HV_MESSAGE_PAYLOAD_BYTE_COUNT) {
      throw new RangeError(`message payload ${payload.length} > ${HV_MESSAGE_PAYLOAD_BYTE_COUNT}`);
    }
    const queue = this.queues[vp]?.[sint];
    if (!queue) throw new RangeError(`no VP ${vp} SINT ${sint}`);
    queue.push({ messageType, payload: payload.slice(), port });
    if (queue.length === 1) this.deliverQueued(vp, sint);
    else this.stats.messagesQueued++;
  }

  /** Messages still waiting in the hypervisor's queue for a SINT. */
  pendingMessages(vp: number, sint: number): number {
    return this.queues[vp]?.[sint]?.length ?? 0;
  }

  /** Called when the guest wrote EOM: retries every SINT of the VPs that asked. */
  handleEndOfMessage(): void {
    for (let vp = 0; vp < this.queues.length; vp++) {
      const sints = Atomics.exchange(this.state.i32, this.state.vpWord(vp, 'eom'), 0);
      if (sints === 0) continue;
      for (let sint = 0; sint < HV_SYNIC_SINT_COUNT; sint++) {
        if (sints & (1 << sint)) this.deliverQueued(vp, sint);
      }
    }
  }

  /** Retries delivery on every SINT (e.g. after the guest enabled its SIMP). */
  retryAll(): void {
    for (let vp = 0; vp < this.queues.length; vp++) {
      for (let sint = 0; sint < HV_SYNIC_SINT_COUNT; sint++) this.deliverQueued(vp, sint);
    }
  }

  private slotGpa(vp: number, sint: number): number | undefined {
    const simp = this.state.readSimp(vp);
    if ((simp & HV_SYNIC_SIMP_ENABLE) === 0n) return undefined;
    if ((this.state.readSint(vp, sint) & HV_SYNIC_SINT_MASKED) !== 0n) return undefined;
    const gpa = Number(simp & PAGE_MASK) + sint * HV_MESSAGE_SIZE;
    return this.memory.contains(gpa, HV_MESSAGE_SIZE) ? gpa : undefined;
  }

  private deliverQueued(vp: number, sint: number): void {
    const queue = this.queues[vp]?.[sint];
    if (!queue || queue.length === 0) return;
    const gpa = this.slotGpa(vp, sint);
    if (gpa === undefined) return;
    const i32 = this.memory.i32;
    const typeWord = gpa >>> 2;
    const flagsWord = typeWord + 1;
    if (Atomics.load(i32, typeWord) !== 0) {
      // Slot busy: ask for an EOM, then look again in case the guest freed the
      // slot before it could see the flag (its store of HVMSG_NONE and our
      // store of the flag are both sequentially consistent).
      Atomics.or(i32, flagsWord, HV_MESSAGE_FLAG_PENDING << 8);
      if (Atomics.load(i32, typeWord) !== 0) return;
    }
    const message = queue.shift()!;
    const view = this.memory.dataView;
    view.setBigUint64(gpa + 8, BigInt(message.port), true);
    this.memory.u8.set(message.payload, gpa + 16);
    this.memory.u8.fill(0, gpa + 16 + message.payload.length, gpa + HV_MESSAGE_SIZE);
    const more = queue.length > 0 ? HV_MESSAGE_FLAG_PENDING : 0;
    Atomics.store(i32, flagsWord, message.payload.length | (more << 8));
    Atomics.store(i32, typeWord, message.messageType | 0);
    this.stats.messagesDelivered++;
    this.raise(vp, sint);
  }

  /**
   * Sets an event flag in a guest VP's SIEFP slot for a SINT; raises the
   * SINT only when the flag was clear (a set flag means the guest has not
   * yet looked, so another interrupt would add nothing).
   */
  signalEvent(vp: number, sint: number, flag: number): boolean {
    if (flag < 0 || flag >= HV_EVENT_FLAGS_COUNT || vp < 0 || vp >= this.queues.length) {
      this.stats.eventsDropped++;
      return false;
    }
    const siefp = this.state.readSiefp(vp);
    if ((siefp & HV_SYNIC_SIEFP_ENABLE) === 0n) {
      this.stats.eventsDropped++;
      return false;
    }
    const base = Number(siefp & PAGE_MASK) + sint * HV_EVENT_FLAGS_BYTE_COUNT;
    if (!this.memory.contains(base, HV_EVENT_FLAGS_BYTE_COUNT)) {
      this.stats.eventsDropped++;
      return false;
    }
    const bit = 1 << (flag & 31);
    const old = Atomics.or(this.memory.i32, (base >>> 2) + (flag >>> 5), bit);
    if (old & bit) {
      this.stats.eventsCoalesced++;
      return false;
    }
    this.stats.eventsSignaled++;
    this.raise(vp, sint);
    return true;
  }

  /** Raises a SINT on a VP (its interrupt line). */
  raise(vp: number, sint: number): void {
    const word = this.state.vpWord(vp, 'interrupt');
    Atomics.or(this.state.i32, word, 1 << sint);
    Atomics.notify(this.state.i32, word);
  }
}
