/**
 * Transaction ids for requests that expect a completion, as Linux's
 * vmbus_requestor does (drivers/hv/channel.c): the id sent on the wire is a
 * slot index + 1 (0 is reserved for unsolicited host packets), never a
 * pointer. A completion must name a slot that is in use; unknown, stale and
 * duplicate ids are refused and counted.
 */
export class Requestor<T> {
  private readonly slots: (T | undefined)[];
  private readonly free: number[];
  unknownCompletions = 0;

  constructor(readonly capacity: number) {
    this.slots = new Array(capacity).fill(undefined);
    this.free = Array.from({ length: capacity }, (_, i) => capacity - 1 - i);
  }

  get inFlight(): number {
    return this.capacity - this.free.length;
  }

  /** Reserves a slot for `context`; returns the transaction id, or 0 when all slots are busy. */
  allocate(context: T): number {
    const slot = this.free.pop();
    if (slot === undefined) return 0;
    this.slots[slot] = context;
    return slot + 1;
  }

  /**
   * Takes the context of a completed request. Undefined (and counted) when
   * the id is not one we handed out or was already completed.
   */
  complete(transLo: number, transHi = 0): T | undefined {
    const slot = transLo - 1;
    if (transHi !== 0 || slot < 0 || slot >= this.capacity) {
      this.unknownCompletions++;
      return undefined;
    }
    const context = this.slots[slot];
    if (context === undefined) {
      this.unknownCompletions++;
      return undefined;
    }
    this.slots[slot] = undefined;
    this.free.push(slot);
    return context;
  }

  /** Peeks at a slot without completing it. */
  get(transLo: number): T | undefined {
    return this.slots[transLo - 1];
  }

  /** Removes and returns every outstanding context (channel closed or rescinded). */
  drain(): T[] {
    const out: T[] = [];
    for (let slot = 0; slot < this.capacity; slot++) {
      const context = this.slots[slot];
      if (context !== undefined) {
        out.push(context);
        this.slots[slot] = undefined;
        this.free.push(slot);
      }
    }
    return out;
  }
}
