import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { takeFlagBits } from './flag-bits.ts';
import type { GuestMemory } from './guest-memory.ts';
import type { Hypercalls } from './hypercalls.ts';
import {
  HV_EVENT_FLAGS_BYTE_COUNT,
  HV_MESSAGE_FLAG_PENDING,
  HV_MESSAGE_SIZE,
  HV_SYNIC_SIEFP_ENABLE,
  HV_SYNIC_SIMP_ENABLE,
  HV_SYNIC_SINT_COUNT,
  HvMsr,
  PAGE_SIZE,
} from './protocol.ts';
import { type SharedState, W_GUEST_INTERRUPTS } from './shared-state.ts';

const PAGE_MASK = ~BigInt(PAGE_SIZE - 1) & 0xffff_ffff_ffff_ffffn;

/**
 * A guest virtual processor as the guest's kernel sees it: synthetic MSRs
 * (SIMP, SIEFP, SINTx, SCONTROL, EOM), the hypercall instruction, and an
 * interrupt line on which the SynIC raises SINTs. MSR writes land in the
 * hypervisor's shared state, where the host-side SynIC reads them.
 */
export class GuestVp {
  private readonly interruptWord: number;
  private readonly eomWord: number;
  private running = false;
  private keepAlive: ReturnType<typeof setInterval> | undefined;

  constructor(
    readonly index: number,
    readonly memory: GuestMemory,
    private readonly state: SharedState,
    private readonly hypercalls: Hypercalls,
  ) {
    this.interruptWord = state.vpWord(index, 'interrupt');
    this.eomWord = state.vpWord(index, 'eom');
  }

  writeMsr(msr: number, value: bigint): void {
    if (msr === HvMsr.Simp) this.state.writeSimp(this.index, value);
    else if (msr === HvMsr.Siefp) this.state.writeSiefp(this.index, value);
    else if (msr === HvMsr.Scontrol) this.state.writeScontrol(this.index, value);
    else if (msr === HvMsr.Eom) this.endOfMessage();
    else if (msr >= HvMsr.Sint0 && msr < HvMsr.Sint0 + HV_SYNIC_SINT_COUNT) {
      this.state.writeSint(this.index, msr - HvMsr.Sint0, value);
    } else {
      throw new Error(`MSR 0x${msr.toString(16)} is not a SynIC MSR`);
    }
  }

  readMsr(msr: number): bigint {
    if (msr === HvMsr.Simp) return this.state.readSimp(this.index);
    if (msr === HvMsr.Siefp) return this.state.readSiefp(this.index);
    if (msr === HvMsr.Scontrol) return this.state.readScontrol(this.index);
    if (msr === HvMsr.Sversion) return 1n;
    if (msr >= HvMsr.Sint0 && msr < HvMsr.Sint0 + HV_SYNIC_SINT_COUNT) {
      return this.state.readSint(this.index, msr - HvMsr.Sint0);
    }
    throw new Error(`MSR 0x${msr.toString(16)} is not a readable SynIC MSR`);
  }

  /** The hypercall instruction. Returns the result value; HV_STATUS is its low 16 bits. */
  hypercall(control: bigint, input: bigint, output = 0n): bigint {
    return this.hypercalls.call(control, input, output);
  }

  /** GPA of this VP's message slot for a SINT, or undefined while SIMP is disabled. */
  messageSlotGpa(sint: number): number | undefined {
    const simp = this.state.readSimp(this.index);
    if ((simp & HV_SYNIC_SIMP_ENABLE) === 0n) return undefined;
    const gpa = Number(simp & PAGE_MASK) + sint * HV_MESSAGE_SIZE;
    return this.memory.contains(gpa, HV_MESSAGE_SIZE) ? gpa : undefined;
  }

  /** GPA of this VP's event flags for a SINT, or undefined while SIEFP is disabled. */
  eventFlagsGpa(sint: number): number | undefined {
    const siefp = this.state.readSiefp(this.index);
    if ((siefp & HV_SYNIC_SIEFP_ENABLE) === 0n) return undefined;
    const gpa = Number(siefp & PAGE_MASK) + sint * HV_EVENT_FLAGS_BYTE_COUNT;
    return this.memory.contains(gpa, HV_EVENT_FLAGS_BYTE_COUNT) ? gpa : undefined;
  }

  /**
   * Takes the message in a SINT's slot, if any: copies the 256 bytes into
   * `target`, frees the slot (message_type = HVMSG_NONE) and, when the
   * hypervisor flagged more messages pending, writes EOM so it redelivers —
   * the order Linux's vmbus_signal_eom() uses.
   */
  takeMessage(sint: number, target: Uint8Array): boolean {
    const gpa = this.messageSlotGpa(sint);
    if (gpa === undefined) return false;
    const i32 = this.memory.i32;
    const typeWord = gpa >>> 2;
    if (Atomics.load(i32, typeWord) === 0) return false;
    target.set(this.memory.u8.subarray(gpa, gpa + HV_MESSAGE_SIZE));
    Atomics.store(i32, typeWord, 0);
    const flags = Atomics.load(i32, typeWord + 1) >>> 8;
    if (flags & HV_MESSAGE_FLAG_PENDING) this.endOfMessage();
    return true;
  }

  /** The EOM MSR write: asks the hypervisor to deliver the next queued message. */
  endOfMessage(): void {
    // Which SINT does not matter to EOM; the hypervisor retries every SINT of this VP.
    Atomics.or(this.state.i32, this.eomWord, 0xffff);
    this.state.ringHostDoorbell();
  }

  /**
   * Atomically takes and clears the event flags of a SINT, one 32-bit word at
   * a time, calling `onFlag` for each bit that was set (bits below `limit`).
   */
  takeEventFlags(sint: number, limit: number, onFlag: (flag: number) => void): void {
    const gpa = this.eventFlagsGpa(sint);
    if (gpa === undefined) return;
    const words = Math.min(HV_EVENT_FLAGS_BYTE_COUNT / 4, Math.ceil(limit / 32));
    takeFlagBits(this.memory.i32, gpa >>> 2, words, (flag) => {
      if (flag < limit) onFlag(flag);
    });
  }

  /** SINTs with an interrupt pending, cleared as they are taken. */
  takeInterrupts(): number {
    return Atomics.exchange(this.state.i32, this.interruptWord, 0);
  }

  /**
   * Runs the VP's interrupt line: calls `handler` with the mask of pending
   * SINTs whenever the SynIC raises one, without blocking the event loop.
   */
  startInterrupts(handler: (sints: number) => void): void {
    if (this.running) throw new Error(`VP ${this.index} interrupts already started`);
    this.running = true;
    this.keepAlive = setInterval(() => {}, 1 << 30);
    const loop = async (): Promise<void> => {
      const i32 = this.state.i32;
      while (this.running) {
        const pending = Atomics.exchange(i32, this.interruptWord, 0);
        if (pending !== 0) {
          this.state.count(W_GUEST_INTERRUPTS);
          try {
            handler(pending);
          } catch (error) {
            // The interrupt line keeps running whatever one handler did.
            console.error(
              `hv: VP ${this.index} interrupt handler failed: ${(error as Error).stack}`,
            );
          }
          // Let timers and I/O run between bursts of interrupts.
          await yieldToEventLoop();
          continue;
        }
        const wait = Atomics.waitAsync(i32, this.interruptWord, 0);
        if (wait.async) await wait.value;
      }
    };
    void loop();
  }

  stopInterrupts(): void {
    if (!this.running) return;
    this.running = false;
    clearInterval(this.keepAlive);
    // Wake the loop so it sees running = false.
    Atomics.notify(this.state.i32, this.interruptWord);
  }
}
