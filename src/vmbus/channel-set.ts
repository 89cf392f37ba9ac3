/**
 * The channels of one device — the primary (index 0) and its sub-channels —
 * and the choice of which one carries the next piece of work. Linux's
 * storvsc spreads requests over the channels of a controller and keeps a
 * CPU's burst on one of them; netvsc picks a transmit channel from the
 * packet's flow hash through a 16-entry table (vRSS). Both are here, over
 * whatever the device keeps per channel.
 */

export interface ChannelSetPolicy<M> {
  /** Work in flight on the member (the least loaded is picked). */
  load(member: M): number;
  /** Whether the member can take work now (open, with a free request slot). */
  usable(member: M): boolean;
}

export class ChannelSet<M extends { readonly index: number }> {
  private members: M[] = [];
  private next = 0;
  private turnMember: M | undefined;

  constructor(private readonly policy: ChannelSetPolicy<M>) {}

  get size(): number {
    return this.members.length;
  }

  /** The members in channel-index order. */
  list(): readonly M[] {
    return this.members;
  }

  get(index: number): M | undefined {
    return this.members.find((m) => m.index === index);
  }

  has(index: number): boolean {
    return this.get(index) !== undefined;
  }

  add(member: M): void {
    if (this.has(member.index)) throw new Error(`channel ${member.index} is already in the set`);
    this.members = [...this.members, member].sort((a, b) => a.index - b.index);
  }

  remove(member: M): void {
    this.members = this.members.filter((m) => m !== member);
    if (this.turnMember === member) this.turnMember = undefined;
  }

  clear(): M[] {
    const all = this.members;
    this.members = [];
    this.turnMember = undefined;
    return all;
  }

  /**
   * The member for the next piece of work: the one picked earlier in this
   * turn of the event loop while it stays usable (a turn's burst goes out as
   * one batch: one publish, at most one signal), else the least loaded
   * usable member, ties going round-robin so the load spreads.
   */
  pick(): M | undefined {
    const current = this.turnMember;
    if (current && this.policy.usable(current)) return current;
    const n = this.members.length;
    let best: M | undefined;
    let bestLoad = 0;
    for (let i = 0; i < n; i++) {
      const m = this.members[(this.next + i) % n]!;
      if (!this.policy.usable(m)) continue;
      const load = this.policy.load(m);
      if (!best || load < bestLoad) {
        best = m;
        bestLoad = load;
      }
    }
    this.next = (this.next + 1) % Math.max(1, n);
    if (best && !this.turnMember) setImmediate(this.endTurn);
    this.turnMember = best;
    return best;
  }

  /**
   * The member a flow hash maps to: entry `hash % table.length` of the
   * indirection table names a channel index (Linux netvsc's send table).
   * Without a table, or when that channel is not usable, the hash spreads
   * over the usable members directly.
   */
  byHash(hash: number, table?: readonly number[]): M | undefined {
    const h = hash >>> 0;
    if (table && table.length > 0) {
      const chosen = this.get(table[h % table.length]!);
      if (chosen && this.policy.usable(chosen)) return chosen;
    }
    let usable = 0;
    for (const m of this.members) if (this.policy.usable(m)) usable++;
    if (usable === 0) return undefined;
    let k = h % usable;
    for (const m of this.members) {
      if (!this.policy.usable(m)) continue;
      if (k-- === 0) return m;
    }
    return undefined;
  }

  private readonly endTurn = (): void => {
    this.turnMember = undefined;
  };
}
