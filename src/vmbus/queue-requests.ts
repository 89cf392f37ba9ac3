/**
 * Requests that expect an answer, matched by transaction id — the job of
 * Linux's vmbus_requestor (drivers/hv/channel.c): the id on the wire names a
 * slot, never a pointer, and an answer must name a slot that is in use.
 * Unknown, stale and duplicate ids are refused and counted.
 *
 * Ids are slot + 1 as in Linux, plus `capacity` times a generation that
 * advances each time the slot is reused, so a late answer to a request that
 * timed out can never complete the slot's next request. Requests may also
 * take a fixed id of the protocol's (storvsc's VMBUS_RQST_INIT), one at a
 * time per id. A request may carry a timeout; it then ends through
 * `onTimeout`, and its late answer counts as unknown.
 */
import type { ChannelStats } from './channel.ts';

const ID_LIMIT = 0x1_0000_0000;

export interface RequestTableOptions<T> {
  /** Slots: the most requests outstanding at once. */
  readonly capacity: number;
  /** A request's time ran out (it is no longer outstanding). */
  readonly onTimeout?: (context: T) => void;
}

interface FixedEntry<T> {
  readonly lo: number;
  readonly hi: number;
  readonly context: T;
  timer: ReturnType<typeof setTimeout> | undefined;
}

export class RequestTable<T> {
  readonly capacity: number;
  private readonly contexts: (T | undefined)[];
  private readonly ids: Float64Array;
  private readonly generations: Uint32Array;
  private readonly timers: (ReturnType<typeof setTimeout> | undefined)[];
  private readonly free: number[];
  private readonly fixed: FixedEntry<T>[] = [];
  private readonly onTimeout: ((context: T) => void) | undefined;
  private readonly maxGeneration: number;

  constructor(
    options: RequestTableOptions<T>,
    private readonly stats: ChannelStats,
  ) {
    const { capacity } = options;
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 0xffff) {
      throw new RangeError(`request table capacity ${capacity} is not an integer in 1..65535`);
    }
    this.capacity = capacity;
    this.contexts = new Array(capacity).fill(undefined);
    this.ids = new Float64Array(capacity);
    this.generations = new Uint32Array(capacity);
    this.timers = new Array(capacity).fill(undefined);
    this.free = Array.from({ length: capacity }, (_, i) => capacity - 1 - i);
    this.onTimeout = options.onTimeout;
    this.maxGeneration = Math.floor((ID_LIMIT - 1 - capacity) / capacity);
  }

  /** Requests outstanding (fixed-id ones included). */
  get inFlight(): number {
    return this.capacity - this.free.length + this.fixed.length;
  }

  get hasRoom(): boolean {
    return this.free.length > 0;
  }

  /**
   * Reserves a slot for `context`; returns the transaction id (its low 32
   * bits; the high half is 0), or 0 when every slot is busy.
   */
  allocate(context: T, timeoutMs?: number): number {
    const slot = this.free.pop();
    if (slot === undefined) return 0;
    const id = slot + 1 + this.capacity * this.generations[slot]!;
    this.contexts[slot] = context;
    this.ids[slot] = id;
    if (timeoutMs !== undefined) {
      this.timers[slot] = setTimeout(() => this.expire(slot, id), timeoutMs);
    }
    return id;
  }

  /** Reserves a fixed id of the protocol's; false when a request with that id is outstanding. */
  allocateFixed(lo: number, hi: number, context: T, timeoutMs?: number): boolean {
    if (this.findFixed(lo, hi) >= 0) return false;
    const entry: FixedEntry<T> = { lo, hi, context, timer: undefined };
    if (timeoutMs !== undefined) {
      entry.timer = setTimeout(() => {
        const i = this.fixed.indexOf(entry);
        if (i < 0) return;
        this.fixed.splice(i, 1);
        this.stats.requestTimeouts++;
        this.onTimeout?.(context);
      }, timeoutMs);
    }
    this.fixed.push(entry);
    return true;
  }

  /** Whether `lo`/`hi` names an outstanding request (without taking it). */
  has(lo: number, hi: number): boolean {
    return this.slotOf(lo, hi) >= 0 || this.findFixed(lo, hi) >= 0;
  }

  /**
   * Takes the context of an answered request. Undefined, and counted as an
   * unknown completion, when the id is not outstanding.
   */
  take(lo: number, hi: number): T | undefined {
    const slot = this.slotOf(lo, hi);
    if (slot >= 0) return this.release(slot);
    const f = this.findFixed(lo, hi);
    if (f >= 0) {
      const [entry] = this.fixed.splice(f, 1);
      clearTimeout(entry!.timer);
      return entry!.context;
    }
    this.stats.unknownCompletions++;
    return undefined;
  }

  /** Gives back the slot of a request that never left (its id is free again). */
  cancel(lo: number, hi = 0): T | undefined {
    const slot = this.slotOf(lo, hi);
    if (slot >= 0) return this.release(slot);
    const f = this.findFixed(lo, hi);
    if (f < 0) return undefined;
    const [entry] = this.fixed.splice(f, 1);
    clearTimeout(entry!.timer);
    return entry!.context;
  }

  /** Ends every outstanding request and returns their contexts (channel closed or failed). */
  drain(): T[] {
    const out: T[] = [];
    for (let slot = 0; slot < this.capacity; slot++) {
      if (this.contexts[slot] !== undefined) out.push(this.release(slot));
    }
    for (const entry of this.fixed.splice(0)) {
      clearTimeout(entry.timer);
      out.push(entry.context);
    }
    return out;
  }

  private slotOf(lo: number, hi: number): number {
    if (hi !== 0 || lo < 1) return -1;
    const slot = (lo - 1) % this.capacity;
    return this.contexts[slot] !== undefined && this.ids[slot] === lo ? slot : -1;
  }

  private findFixed(lo: number, hi: number): number {
    for (let i = 0; i < this.fixed.length; i++) {
      const e = this.fixed[i]!;
      if (e.lo === lo && e.hi === hi) return i;
    }
    return -1;
  }

  private release(slot: number): T {
    const context = this.contexts[slot]!;
    this.contexts[slot] = undefined;
    const timer = this.timers[slot];
    if (timer !== undefined) {
      clearTimeout(timer);
      this.timers[slot] = undefined;
    }
    const next = this.generations[slot]! + 1;
    this.generations[slot] = next > this.maxGeneration ? 0 : next;
    this.free.push(slot);
    return context;
  }

  private expire(slot: number, id: number): void {
    if (this.contexts[slot] === undefined || this.ids[slot] !== id) return;
    this.timers[slot] = undefined;
    const context = this.release(slot);
    this.stats.requestTimeouts++;
    this.onTimeout?.(context);
  }
}
