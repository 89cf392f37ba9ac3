/**
 * The guest's RNDIS control requests (Linux rndis_filter.c): each carries a
 * request id of its own, and the host's completion must name an outstanding
 * one of the matching type (rndis_filter_receive_response). Unknown ids,
 * completions of the wrong type and late answers are dropped and counted.
 * A bounded number of requests may wait at once; each has a timeout.
 */
import type { ControlMessage } from '../rndis-control.ts';
import { RNDIS_MSG_COMPLETION, RndisMessageType } from '../rndis-protocol.ts';

/** Requests one NIC keeps outstanding (Linux allows a handful; it sends them one at a time). */
const MAX_PENDING = 32;

interface Pending {
  readonly expect: number;
  readonly resolve: (answer: ControlMessage) => void;
  readonly reject: (error: Error) => void;
  readonly timer: ReturnType<typeof setTimeout>;
}

/** Sends one control message to the host; false when it could not go out. */
export type ControlSender = (message: Uint8Array) => boolean;

export class RndisClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  /** Completions that named no outstanding request (or the wrong type). */
  unknown = 0;
  private resetWaiter: Pending | undefined;

  constructor(
    private readonly send: ControlSender,
    private readonly timeoutMs: number,
  ) {}

  get outstanding(): number {
    return this.pending.size + (this.resetWaiter ? 1 : 0);
  }

  /**
   * Sends the message `build` makes for a fresh request id and resolves with
   * the host's completion of the matching type.
   */
  request(type: RndisMessageType, build: (reqId: number) => Uint8Array): Promise<ControlMessage> {
    return new Promise((resolve, reject) => {
      if (this.pending.size >= MAX_PENDING) {
        reject(new Error('too many RNDIS requests outstanding'));
        return;
      }
      const reqId = this.nextId;
      this.nextId = this.nextId >= 0xffff_fffe ? 1 : this.nextId + 1;
      const timer = setTimeout(() => {
        this.pending.delete(reqId);
        reject(new Error(`the host did not answer RNDIS ${RndisMessageType[type]} in time`));
      }, this.timeoutMs);
      this.pending.set(reqId, {
        expect: (type | RNDIS_MSG_COMPLETION) >>> 0,
        resolve,
        reject,
        timer,
      });
      if (!this.send(build(reqId))) {
        clearTimeout(timer);
        this.pending.delete(reqId);
        reject(new Error(`RNDIS ${RndisMessageType[type]} could not be sent`));
      }
    });
  }

  /** RESET carries no request id: one at a time, answered by RESET_C. */
  reset(message: Uint8Array): Promise<ControlMessage> {
    return new Promise((resolve, reject) => {
      if (this.resetWaiter) {
        reject(new Error('an RNDIS reset is already outstanding'));
        return;
      }
      const timer = setTimeout(() => {
        this.resetWaiter = undefined;
        reject(new Error('the host did not answer RNDIS RESET in time'));
      }, this.timeoutMs);
      this.resetWaiter = { expect: RndisMessageType.ResetComplete, resolve, reject, timer };
      if (!this.send(message)) {
        clearTimeout(timer);
        this.resetWaiter = undefined;
        reject(new Error('RNDIS RESET could not be sent'));
      }
    });
  }

  /** A completion from the host; false when it answered nothing outstanding. */
  complete(m: ControlMessage): boolean {
    if (m.type === RndisMessageType.ResetComplete) {
      const waiter = this.resetWaiter;
      if (!waiter) {
        this.unknown++;
        return false;
      }
      this.resetWaiter = undefined;
      clearTimeout(waiter.timer);
      waiter.resolve(m);
      return true;
    }
    const waiter = this.pending.get(m.reqId);
    if (!waiter || waiter.expect !== m.type >>> 0) {
      this.unknown++;
      return false;
    }
    this.pending.delete(m.reqId);
    clearTimeout(waiter.timer);
    waiter.resolve(m);
    return true;
  }

  /** Fails every outstanding request (the NIC is going away). */
  failAll(reason: string): void {
    const all = [...this.pending.values()];
    if (this.resetWaiter) all.push(this.resetWaiter);
    this.pending.clear();
    this.resetWaiter = undefined;
    for (const p of all) {
      clearTimeout(p.timer);
      p.reject(new Error(reason));
    }
  }
}
