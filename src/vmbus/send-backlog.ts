/**
 * The queue's ordered backlog: packets that found the outbound ring full,
 * each a private copy (payload and ranges), sent in order as the reader
 * frees room. The endpoint's pending_send_sz wake-up tells when the head
 * fits; everything that fits then goes out in one batch.
 */
import type { ChannelEndpoint } from './channel.ts';
import {
  type GpaRangeSpec,
  gpaDirectPacketLength,
  inbandPacketLength,
  type TransferPageRangeSpec,
  transferPagePacketLength,
} from './packet.ts';

/** Largest number of packets the backlog holds; devices bound their own work far below it. */
export const MAX_BACKLOG = 16_384;

type Waiting =
  | {
      readonly kind: 'inband';
      readonly payload: Uint8Array;
      readonly transLo: number;
      readonly transHi: number;
      readonly completionRequested: boolean;
    }
  | {
      readonly kind: 'completion';
      readonly payload: Uint8Array;
      readonly transLo: number;
      readonly transHi: number;
    }
  | {
      readonly kind: 'gpa-direct';
      readonly ranges: readonly GpaRangeSpec[];
      readonly payload: Uint8Array;
      readonly transLo: number;
      readonly transHi: number;
      readonly completionRequested: boolean;
    }
  | {
      readonly kind: 'transfer-pages';
      readonly pageSetId: number;
      readonly ranges: readonly TransferPageRangeSpec[];
      readonly payload: Uint8Array;
      readonly transLo: number;
      readonly transHi: number;
      readonly completionRequested: boolean;
    };

/** Packet length (without trailer) of a waiting packet. */
function lengthOf(w: Waiting): number {
  switch (w.kind) {
    case 'inband':
    case 'completion':
      return inbandPacketLength(w.payload.length);
    case 'gpa-direct':
      return gpaDirectPacketLength(w.ranges, w.payload.length);
    case 'transfer-pages':
      return transferPagePacketLength(w.ranges.length, w.payload.length);
  }
}

function write(e: ChannelEndpoint, w: Waiting): 'ok' | 'full' | 'corrupt' {
  switch (w.kind) {
    case 'inband':
      return e.sendInband(w.payload, w.transLo, w.transHi, w.completionRequested);
    case 'completion':
      return e.sendCompletion(w.transLo, w.transHi, w.payload);
    case 'gpa-direct':
      return e.sendGpaDirect(w.ranges, w.payload, w.transLo, w.transHi, w.completionRequested);
    case 'transfer-pages':
      return e.sendTransferPages(
        w.pageSetId,
        w.ranges,
        w.payload,
        w.transLo,
        w.transHi,
        w.completionRequested,
      );
  }
}

export class SendBacklog {
  private readonly waiting: Waiting[] = [];
  private pumping = false;

  constructor(
    private readonly endpoint: ChannelEndpoint,
    private readonly name: string,
    /** The backlog emptied (true) or was dropped because the channel went away (false). */
    private readonly settled: (sent: boolean) => void,
    private readonly warn: (message: string) => void,
  ) {}

  get length(): number {
    return this.waiting.length;
  }

  inband(payload: Uint8Array, transLo: number, transHi: number, completionRequested: boolean) {
    this.add({ kind: 'inband', payload: payload.slice(), transLo, transHi, completionRequested });
  }

  completion(transLo: number, transHi: number, payload: Uint8Array): void {
    this.add({ kind: 'completion', payload: payload.slice(), transLo, transHi });
  }

  gpaDirect(
    ranges: readonly GpaRangeSpec[],
    payload: Uint8Array,
    transLo: number,
    transHi: number,
    completionRequested: boolean,
  ): void {
    this.add({
      kind: 'gpa-direct',
      ranges: ranges.map((r) => ({
        byteCount: r.byteCount,
        byteOffset: r.byteOffset,
        pfns: Array.from(r.pfns),
      })),
      payload: payload.slice(),
      transLo,
      transHi,
      completionRequested,
    });
  }

  transferPages(
    pageSetId: number,
    ranges: readonly TransferPageRangeSpec[],
    payload: Uint8Array,
    transLo: number,
    transHi: number,
    completionRequested: boolean,
  ): void {
    this.add({
      kind: 'transfer-pages',
      pageSetId,
      ranges: ranges.map((r) => ({ byteCount: r.byteCount, byteOffset: r.byteOffset })),
      payload: payload.slice(),
      transLo,
      transHi,
      completionRequested,
    });
  }

  /** Forgets every waiting packet (the channel is gone). */
  clear(): void {
    this.waiting.length = 0;
  }

  private add(w: Waiting): void {
    if (this.waiting.length >= MAX_BACKLOG) {
      throw new RangeError(`${this.name}: the send backlog is full (${MAX_BACKLOG} packets)`);
    }
    this.waiting.push(w);
    this.endpoint.stats.backlogged++;
    void this.pump();
  }

  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    const endpoint = this.endpoint;
    try {
      while (this.waiting.length > 0 && endpoint.state === 'open') {
        const need = lengthOf(this.waiting[0]!);
        if (!(await endpoint.waitForSpace(need))) {
          if (endpoint.state === 'open') {
            this.warn(`a ${need}-byte packet can never fit the ring; dropping the backlog`);
          }
          break;
        }
        let corrupt = false;
        endpoint.batch(() => {
          while (this.waiting.length > 0) {
            const result = write(endpoint, this.waiting[0]!);
            if (result !== 'ok') {
              corrupt = result === 'corrupt';
              return;
            }
            this.waiting.shift();
          }
        });
        if (corrupt) break;
      }
    } finally {
      this.pumping = false;
    }
    const sent = this.waiting.length === 0;
    this.waiting.length = 0;
    this.settled(sent && endpoint.state === 'open');
  }
}
