import { HV_MESSAGE_SIZE, HV_PORT_MESSAGE_QUEUE_DEPTH, HV_SYNIC_SINT_COUNT } from './protocol.ts';

/**
 * The hypervisor's own state, shared by the host and guest workers in a
 * SharedArrayBuffer separate from guest memory (the guest cannot touch it
 * except through hypercalls and MSR writes, which the simulated hypervisor
 * code performs on its behalf).
 *
 * Layout (byte offsets):
 *   0    header: magic, host doorbell, VP count, counters
 *   256  VPs: one 256-byte record each (interrupt word, EOM word, MSRs)
 *   ...  connection table: one 32-bit entry per connection id
 *   ...  message ports: head, tail, 16 ready words, 16 slots of 256 bytes each
 *   ...  event-port signal bitmap
 *
 * Every word that two threads touch is accessed with Atomics.
 */
export const MAX_VPS = 16;
/** Connection ids the partition can route: [0, MAX_CONNECTION_IDS). */
export const MAX_CONNECTION_IDS = 65536;
export const MAX_MESSAGE_PORTS = 8;
export const MAX_EVENT_PORTS = 4096;

const MAGIC = 0x484b5648; // 'HVKH'

// Header words (Int32 indices).
export const W_MAGIC = 0;
/** Incremented (and notified) whenever the host has something to look at. */
export const W_HOST_DOORBELL = 1;
export const W_VP_COUNT = 2;
/** Counters for status and tests. */
export const W_POSTS = 4;
export const W_POSTS_REFUSED = 5;
export const W_SIGNALS = 6;
export const W_GUEST_INTERRUPTS = 7;

const VP_BASE = 256;
const VP_STRIDE = 256;
// Offsets inside a VP record.
const VP_INTERRUPT = 0; // i32: SINTs with an interrupt pending (host sets, guest takes)
const VP_EOM = 4; // i32: SINTs for which the guest wrote EOM (guest sets, host takes)
const VP_SIMP = 16; // u64 MSR values from here on
const VP_SIEFP = 24;
const VP_SCONTROL = 32;
const VP_SINT0 = 40;

const CONN_BASE = VP_BASE + MAX_VPS * VP_STRIDE;
const MSGPORT_BASE = CONN_BASE + MAX_CONNECTION_IDS * 4;
const MSGPORT_HEADER = 8 + HV_PORT_MESSAGE_QUEUE_DEPTH * 4; // head, tail, ready[16]
const MSGPORT_STRIDE = MSGPORT_HEADER + HV_PORT_MESSAGE_QUEUE_DEPTH * HV_MESSAGE_SIZE;
const EVENT_BASE = MSGPORT_BASE + MAX_MESSAGE_PORTS * MSGPORT_STRIDE;
const TOTAL = EVENT_BASE + MAX_EVENT_PORTS / 8;

export enum PortKind {
  Message = 1,
  Event = 2,
}

/** Typed access to the hypervisor's shared state. */
export class SharedState {
  readonly buffer: SharedArrayBuffer;
  readonly i32: Int32Array;
  readonly i64: BigInt64Array;
  readonly u8: Uint8Array;

  constructor(buffer: SharedArrayBuffer) {
    if (buffer.byteLength !== TOTAL) {
      throw new Error(`hypervisor state must be ${TOTAL} bytes, got ${buffer.byteLength}`);
    }
    this.buffer = buffer;
    this.i32 = new Int32Array(buffer);
    this.i64 = new BigInt64Array(buffer);
    this.u8 = new Uint8Array(buffer);
    if (Atomics.load(this.i32, W_MAGIC) !== MAGIC) {
      throw new Error('hypervisor state was not initialised');
    }
  }

  static create(vpCount: number): SharedState {
    if (!Number.isInteger(vpCount) || vpCount < 1 || vpCount > MAX_VPS) {
      throw new Error(`a partition has 1..${MAX_VPS} virtual processors, not ${vpCount}`);
    }
    const buffer = new SharedArrayBuffer(TOTAL);
    const i32 = new Int32Array(buffer);
    i32[W_VP_COUNT] = vpCount;
    Atomics.store(i32, W_MAGIC, MAGIC);
    return new SharedState(buffer);
  }

  get vpCount(): number {
    return Atomics.load(this.i32, W_VP_COUNT);
  }

  // --- host doorbell -------------------------------------------------------

  ringHostDoorbell(): void {
    Atomics.add(this.i32, W_HOST_DOORBELL, 1);
    Atomics.notify(this.i32, W_HOST_DOORBELL);
  }

  count(word: number, by = 1): void {
    Atomics.add(this.i32, word, by);
  }

  counter(word: number): number {
    return Atomics.load(this.i32, word);
  }

  // --- virtual processors ----------------------------------------------------

  vpWord(vp: number, field: 'interrupt' | 'eom'): number {
    return (VP_BASE + vp * VP_STRIDE + (field === 'interrupt' ? VP_INTERRUPT : VP_EOM)) >> 2;
  }

  private msrIndex(vp: number, offset: number): number {
    return (VP_BASE + vp * VP_STRIDE + offset) >> 3;
  }

  readSimp(vp: number): bigint {
    return BigInt.asUintN(64, Atomics.load(this.i64, this.msrIndex(vp, VP_SIMP)));
  }
  writeSimp(vp: number, value: bigint): void {
    Atomics.store(this.i64, this.msrIndex(vp, VP_SIMP), BigInt.asIntN(64, value));
  }
  readSiefp(vp: number): bigint {
    return BigInt.asUintN(64, Atomics.load(this.i64, this.msrIndex(vp, VP_SIEFP)));
  }
  writeSiefp(vp: number, value: bigint): void {
    Atomics.store(this.i64, this.msrIndex(vp, VP_SIEFP), BigInt.asIntN(64, value));
  }
  readScontrol(vp: number): bigint {
    return BigInt.asUintN(64, Atomics.load(this.i64, this.msrIndex(vp, VP_SCONTROL)));
  }
  writeScontrol(vp: number, value: bigint): void {
    Atomics.store(this.i64, this.msrIndex(vp, VP_SCONTROL), BigInt.asIntN(64, value));
  }
  readSint(vp: number, sint: number): bigint {
    return BigInt.asUintN(64, Atomics.load(this.i64, this.msrIndex(vp, VP_SINT0 + 8 * sint)));
  }
  writeSint(vp: number, sint: number, value: bigint): void {
    if (sint < 0 || sint >= HV_SYNIC_SINT_COUNT) throw new Error(`no SINT ${sint}`);
    Atomics.store(this.i64, this.msrIndex(vp, VP_SINT0 + 8 * sint), BigInt.asIntN(64, value));
  }

  // --- connection table ------------------------------------------------------

  /** The port a connection id routes to, or undefined. Entry = kind << 24 | port index. */
  lookupConnection(connectionId: number): { kind: PortKind; port: number } | undefined {
    if (!Number.isInteger(connectionId) || connectionId < 0 || connectionId >= MAX_CONNECTION_IDS) {
      return undefined;
    }
    const entry = Atomics.load(this.i32, (CONN_BASE >> 2) + connectionId);
    if (entry === 0) return undefined;
    return { kind: (entry >>> 24) as PortKind, port: entry & 0xffffff };
  }

  connect(connectionId: number, kind: PortKind, port: number): void {
    if (
      !Number.isInteger(connectionId) ||
      connectionId <= 0 ||
      connectionId >= MAX_CONNECTION_IDS
    ) {
      throw new Error(`connection id ${connectionId} is outside 1..${MAX_CONNECTION_IDS - 1}`);
    }
    const index = (CONN_BASE >> 2) + connectionId;
    if (Atomics.compareExchange(this.i32, index, 0, (kind << 24) | port) !== 0) {
      throw new Error(`connection id ${connectionId} is already connected`);
    }
  }

  disconnect(connectionId: number): void {
    if (connectionId > 0 && connectionId < MAX_CONNECTION_IDS) {
      Atomics.store(this.i32, (CONN_BASE >> 2) + connectionId, 0);
    }
  }

  // --- message ports ---------------------------------------------------------

  messagePortBase(port: number): number {
    return MSGPORT_BASE + port * MSGPORT_STRIDE;
  }
  messagePortHeadWord(port: number): number {
    return this.messagePortBase(port) >> 2;
  }
  messagePortTailWord(port: number): number {
    return (this.messagePortBase(port) + 4) >> 2;
  }
  messagePortReadyWord(port: number, slot: number): number {
    return (this.messagePortBase(port) + 8 + slot * 4) >> 2;
  }
  messagePortSlot(port: number, slot: number): number {
    return this.messagePortBase(port) + MSGPORT_HEADER + slot * HV_MESSAGE_SIZE;
  }

  // --- event ports -----------------------------------------------------------

  eventWord(port: number): number {
    return (EVENT_BASE >> 2) + (port >>> 5);
  }
  get eventWordCount(): number {
    return MAX_EVENT_PORTS / 32;
  }
  eventWordIndex(i: number): number {
    return (EVENT_BASE >> 2) + i;
  }
}
