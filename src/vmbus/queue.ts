/**
 * The queue: how every device, host or guest, talks over one open channel —
 * the role of OpenVMM's vmbus_async queue and of the vmbus_sendpacket*,
 * vmbus_requestor and foreach_vmbus_pkt helpers every Linux driver shares.
 * Devices see this class and the device interface, never the rings.
 *
 * Sending. Each packet kind has a typed send that sizes the packet itself
 * (in-band, completion, GPA-direct page ranges, transfer-page ranges). The
 * plain sends never fail for lack of room: a packet that finds the ring full
 * waits in an ordered backlog (its bytes copied, so the caller may reuse its
 * buffer at once) and goes out when the reader frees room (pending_send_sz).
 * The `try` sends answer 'full' instead, for senders that would rather hold
 * their own data back (`whenRoom` says when to try again).
 *
 * Batching. Everything sent while the queue drains the inbound ring is
 * published once at the end of the drain. With `batching: 'turn'` every
 * send of one turn of the event loop is published once at the end of the
 * turn: one index store and at most one signal per batch.
 *
 * Reading. Completions that answer the device's requests (see
 * `trackRequests`) are matched by transaction id — unknown and duplicate ids
 * dropped and counted — and every other packet goes to `onPacket`. A
 * responder may pause reading while its answers wait for room
 * (`pauseWhileBacklogged`), and may keep the peer's signals masked while it
 * is busy anyway (`pollWhile`: the ring is polled after each batch, and
 * unmasked and re-checked once idle, as OpenVMM's storvsp does).
 *
 * A device's handler that throws costs one packet: counted as
 * `handlerErrors` (a bug, kept apart from the peer's bad input, which the
 * device reports through `drop`), logged at a limited rate.
 */
import type { ChannelEndpoint, ChannelState, ChannelStats } from './channel.ts';
import {
  GpaRangeList,
  type GpaRangeSpec,
  gpaDirectPacketLength,
  inbandPacketLength,
  type PacketView,
  type TransferPageRangeSpec,
  TransferPageRanges,
  transferPagePacketLength,
} from './packet.ts';
import { RequestTable, type RequestTableOptions } from './queue-requests.ts';
import { RateLimitedLog } from './rate-limited-log.ts';
import { PacketType } from './ring-protocol.ts';
import { SendBacklog } from './send-backlog.ts';

export type { ChannelStats } from './channel.ts';
export type { GpaRangeList, PacketView as IncomingPacket, TransferPageRanges } from './packet.ts';
export { RequestTable } from './queue-requests.ts';
export { PacketType };
export type GpaRange = GpaRangeSpec;
export type TransferPageRange = TransferPageRangeSpec;

/** 'sent': in the ring; 'queued': in the backlog, in order; 'closed': the channel is gone. */
export type SendStatus = 'sent' | 'queued' | 'closed';
export type TrySendStatus = 'sent' | 'full' | 'closed';

export interface QueueOptions {
  /** When sends are published: at the end of each drain (default) or of each event-loop turn. */
  readonly batching?: 'drain' | 'turn';
  /**
   * Stop taking inbound packets while answers wait in the backlog (they stay
   * in the ring until the backlog has gone out). For responders only: a
   * requester that stopped reading answers could deadlock with its peer.
   */
  readonly pauseWhileBacklogged?: boolean;
  /**
   * While this returns true, the inbound ring stays masked and is polled
   * after each batch of sends (implies turn batching).
   */
  readonly pollWhile?: () => boolean;
}

export interface RequestOptions<T> extends RequestTableOptions<T> {
  /**
   * Which packets can answer a request: completions only (default), or any
   * packet with a non-zero transaction id ('any-type': Linux's storvsc
   * matches by id alone; integration-service answers are in-band).
   */
  readonly match?: 'completion' | 'any-type';
  readonly onCompletion: (context: T, packet: PacketView) => void;
  /** The channel closed or failed while the request was outstanding. */
  readonly onAbandon?: (context: T, reason: string) => void;
  /** An answer named no outstanding request (already counted and logged; it is dropped). */
  readonly onUnknown?: (packet: PacketView) => void;
}

interface Tracked {
  readonly table: RequestTable<unknown>;
  readonly anyType: boolean;
  readonly onCompletion: (context: unknown, packet: PacketView) => void;
  readonly onAbandon: ((context: unknown, reason: string) => void) | undefined;
  readonly onUnknown: ((packet: PacketView) => void) | undefined;
}

export interface QueueIdentity {
  /** For logs: "relid 5" or a device's own name. */
  readonly name: string;
  /** Where rate-limited lines about this channel go. */
  readonly log: (line: string) => void;
}

export class Queue {
  readonly name: string;
  /** Every packet that is not an answer to a tracked request. */
  onPacket: ((packet: PacketView) => void) | undefined;
  private batching: 'drain' | 'turn' = 'drain';
  private pauseWhileBacklogged = false;
  private pollWhile: (() => boolean) | undefined;
  private tracked: Tracked | undefined;
  private readonly backlog: SendBacklog;
  private turnOpen = false;
  private closedReason = '';
  private refusedLength = 0;
  private readonly flushWaiters: ((ok: boolean) => void)[] = [];
  private readonly logger: RateLimitedLog;
  private readonly gpaList = new GpaRangeList();
  private readonly pageList = new TransferPageRanges();

  constructor(
    private readonly endpoint: ChannelEndpoint,
    identity: QueueIdentity,
  ) {
    this.name = identity.name;
    this.logger = new RateLimitedLog(identity.log);
    this.backlog = new SendBacklog(endpoint, this.name, this.backlogSettled, (m) => this.warn(m));
    endpoint.onPacket = this.receive;
    endpoint.onHandlerError = (error) =>
      this.logger.log(`${this.name}: a device handler failed on a packet: ${error.message}`);
    endpoint.onFailure = (reason) => {
      this.logger.log(`vmbus: channel stopped: ${reason}`);
      this.shut(reason);
    };
  }

  /** Sets how this queue batches and reads (a device calls it once, when it opens the channel). */
  configure(options: QueueOptions): void {
    this.pauseWhileBacklogged = options.pauseWhileBacklogged ?? false;
    this.pollWhile = options.pollWhile;
    this.batching = options.pollWhile ? 'turn' : (options.batching ?? 'drain');
  }

  /**
   * Tracks requests that expect an answer: returns the table that hands out
   * their transaction ids; answers go to `onCompletion` with the request's
   * context.
   */
  trackRequests<T>(options: RequestOptions<T>): RequestTable<T> {
    const table = new RequestTable<T>(options, this.endpoint.stats);
    this.tracked = {
      table: table as RequestTable<unknown>,
      anyType: options.match === 'any-type',
      onCompletion: options.onCompletion as (context: unknown, packet: PacketView) => void,
      onAbandon: options.onAbandon as ((context: unknown, reason: string) => void) | undefined,
      onUnknown: options.onUnknown,
    };
    return table;
  }

  get state(): ChannelState {
    return this.endpoint.state;
  }

  get open(): boolean {
    return this.endpoint.state === 'open' && this.closedReason === '';
  }

  /** Why the channel stopped ('' while open). */
  get error(): string {
    return this.endpoint.error || this.closedReason;
  }

  get stats(): ChannelStats {
    return this.endpoint.stats;
  }

  /** Packets waiting for ring space. */
  get backlogLength(): number {
    return this.backlog.length;
  }

  occupancy(): ReturnType<ChannelEndpoint['occupancy']> {
    return this.endpoint.occupancy();
  }

  /** Reads whatever the peer has written so far (after setting `onPacket`, say). */
  poll(): void {
    this.endpoint.drain();
  }

  /** Counts a packet the device refused as bad input and logs why, at a limited rate. */
  drop(reason: string): void {
    this.endpoint.stats.dropped++;
    this.logger.log(`${this.name}: dropped a packet: ${reason}`);
  }

  /**
   * The device caught its own handler's failure (to still answer the peer):
   * counted with the handler errors the queue catches, and logged.
   */
  handlerFailed(error: Error): void {
    this.endpoint.stats.handlerErrors++;
    this.logger.log(`${this.name}: a device handler failed on a packet: ${error.message}`);
  }

  /** A rate-limited line about this channel that is not about one packet. */
  warn(message: string): void {
    this.logger.log(`${this.name}: ${message}`);
  }

  // --- parsing what a packet describes -----------------------------------------

  /** The GPA ranges of a GPA-direct packet (a reused list), or why they are invalid. */
  gpaRanges(packet: PacketView): GpaRangeList | string {
    if (packet.type !== PacketType.DataUsingGpaDirect) {
      return `packet type ${packet.type} carries no GPA ranges`;
    }
    return this.gpaList.parse(packet) ?? this.gpaList;
  }

  /** The ranges of a transfer-page packet (a reused list), or why they are invalid. */
  transferPages(packet: PacketView): TransferPageRanges | string {
    if (packet.type !== PacketType.DataUsingTransferPages) {
      return `packet type ${packet.type} carries no transfer-page ranges`;
    }
    return this.pageList.parse(packet) ?? this.pageList;
  }

  // --- ordered sends -------------------------------------------------------------

  sendInband(
    payload: Uint8Array,
    transLo = 0,
    transHi = 0,
    completionRequested = false,
  ): SendStatus {
    if (!this.open) return 'closed';
    if (this.backlog.length === 0) {
      this.openTurn();
      const result = this.endpoint.sendInband(payload, transLo, transHi, completionRequested);
      if (result !== 'full') return result === 'ok' ? 'sent' : 'closed';
    }
    this.backlog.inband(payload, transLo, transHi, completionRequested);
    return 'queued';
  }

  sendCompletion(transLo: number, transHi: number, payload: Uint8Array): SendStatus {
    if (!this.open) return 'closed';
    if (this.backlog.length === 0) {
      this.openTurn();
      const result = this.endpoint.sendCompletion(transLo, transHi, payload);
      if (result !== 'full') return result === 'ok' ? 'sent' : 'closed';
    }
    this.backlog.completion(transLo, transHi, payload);
    return 'queued';
  }

  sendGpaDirect(
    ranges: readonly GpaRange[],
    payload: Uint8Array,
    transLo: number,
    transHi = 0,
    completionRequested = true,
  ): SendStatus {
    if (!this.open) return 'closed';
    if (this.backlog.length === 0) {
      this.openTurn();
      const e = this.endpoint;
      const result = e.sendGpaDirect(ranges, payload, transLo, transHi, completionRequested);
      if (result !== 'full') return result === 'ok' ? 'sent' : 'closed';
    }
    this.backlog.gpaDirect(ranges, payload, transLo, transHi, completionRequested);
    return 'queued';
  }

  sendTransferPages(
    pageSetId: number,
    ranges: readonly TransferPageRange[],
    payload: Uint8Array,
    transLo: number,
    transHi = 0,
    completionRequested = true,
  ): SendStatus {
    if (!this.open) return 'closed';
    if (this.backlog.length === 0) {
      this.openTurn();
      const result = this.endpoint.sendTransferPages(
        pageSetId,
        ranges,
        payload,
        transLo,
        transHi,
        completionRequested,
      );
      if (result !== 'full') return result === 'ok' ? 'sent' : 'closed';
    }
    this.backlog.transferPages(pageSetId, ranges, payload, transLo, transHi, completionRequested);
    return 'queued';
  }

  /** Resolves true once everything sent so far is in the ring; false if the channel goes first. */
  flushed(): Promise<boolean> {
    if (this.backlog.length === 0) return Promise.resolve(this.open);
    return new Promise((resolve) => this.flushWaiters.push(resolve));
  }

  private readonly backlogSettled = (sent: boolean): void => {
    this.settleFlush(sent && this.open);
    // Packets left in the ring while paused can be taken now.
    if (sent && this.pauseWhileBacklogged) this.resumeReading();
  };

  private settleFlush(ok: boolean): void {
    for (const resolve of this.flushWaiters.splice(0)) resolve(ok);
  }

  // --- sends that report a full ring -----------------------------------------------

  /** Like sendInband, but answers 'full' (and keeps nothing) when there is no room now. */
  trySendInband(
    payload: Uint8Array,
    transLo = 0,
    transHi = 0,
    completionRequested = false,
  ): TrySendStatus {
    const length = inbandPacketLength(payload.length);
    if (!this.mayTry(length)) return this.open ? 'full' : 'closed';
    return this.tried(
      this.endpoint.sendInband(payload, transLo, transHi, completionRequested),
      length,
    );
  }

  trySendCompletion(transLo: number, transHi: number, payload: Uint8Array): TrySendStatus {
    const length = inbandPacketLength(payload.length);
    if (!this.mayTry(length)) return this.open ? 'full' : 'closed';
    return this.tried(this.endpoint.sendCompletion(transLo, transHi, payload), length);
  }

  trySendGpaDirect(
    ranges: readonly GpaRange[],
    payload: Uint8Array,
    transLo: number,
    transHi = 0,
    completionRequested = true,
  ): TrySendStatus {
    const length = gpaDirectPacketLength(ranges, payload.length);
    if (!this.mayTry(length)) return this.open ? 'full' : 'closed';
    return this.tried(
      this.endpoint.sendGpaDirect(ranges, payload, transLo, transHi, completionRequested),
      length,
    );
  }

  trySendTransferPages(
    pageSetId: number,
    ranges: readonly TransferPageRange[],
    payload: Uint8Array,
    transLo: number,
    transHi = 0,
    completionRequested = true,
  ): TrySendStatus {
    const length = transferPagePacketLength(ranges.length, payload.length);
    if (!this.mayTry(length)) return this.open ? 'full' : 'closed';
    return this.tried(
      this.endpoint.sendTransferPages(
        pageSetId,
        ranges,
        payload,
        transLo,
        transHi,
        completionRequested,
      ),
      length,
    );
  }

  /**
   * After a try-send answered 'full': resolves true once a packet of that
   * size fits, false when the channel closes first (or it can never fit).
   */
  async whenRoom(): Promise<boolean> {
    if (!(await this.flushed())) return false;
    return this.endpoint.waitForSpace(this.refusedLength);
  }

  /** A try-send may go to the ring: the channel is open and no backlog would be overtaken. */
  private mayTry(length: number): boolean {
    if (!this.open) return false;
    if (this.backlog.length > 0) {
      this.refusedLength = length;
      return false;
    }
    this.openTurn();
    return true;
  }

  private tried(result: 'ok' | 'full' | 'corrupt', length: number): TrySendStatus {
    if (result === 'ok') return 'sent';
    if (result === 'corrupt') return 'closed';
    this.refusedLength = length;
    return 'full';
  }

  // --- batching and reading ----------------------------------------------------------

  private openTurn(): void {
    if (this.batching !== 'turn' || this.turnOpen) return;
    this.turnOpen = true;
    this.endpoint.beginBatch();
    setImmediate(this.endTurn);
  }

  private readonly endTurn = (): void => {
    this.turnOpen = false;
    this.endpoint.endBatch();
    if (this.pollWhile) this.resumeReading();
  };

  /** Drains the inbound ring, then keeps it masked while the device says it is busy. */
  private resumeReading(): void {
    if (!this.open) return;
    this.endpoint.drain();
    if (this.pollWhile?.()) this.endpoint.holdMasked();
  }

  private readonly receive = (packet: PacketView): boolean => {
    if (this.pauseWhileBacklogged && this.backlog.length > 0) return false;
    const tracked = this.tracked;
    if (
      tracked !== undefined &&
      (packet.transLo !== 0 || packet.transHi !== 0) &&
      (tracked.anyType || packet.type === PacketType.Completion)
    ) {
      const context = tracked.table.take(packet.transLo, packet.transHi);
      if (context === undefined) {
        this.logger.log(
          `${this.name}: dropped an answer for transaction id 0x${packet.transHi.toString(16)}:${packet.transLo.toString(16)}, which names no outstanding request`,
        );
        tracked.onUnknown?.(packet);
        return true;
      }
      tracked.onCompletion(context, packet);
      return true;
    }
    if (this.onPacket) this.onPacket(packet);
    else this.drop(`packet type ${packet.type} arrived with no handler`);
    return true;
  };

  // --- closing -------------------------------------------------------------------------

  /** Stops using the channel: the backlog is dropped and outstanding requests abandoned. */
  close(reason = `${this.name} closed`): void {
    this.endpoint.close();
    this.shut(reason);
  }

  private shut(reason: string): void {
    if (this.closedReason) return;
    this.closedReason = reason;
    this.endpoint.onPacket = undefined;
    this.backlog.clear();
    this.settleFlush(false);
    const tracked = this.tracked;
    if (!tracked) return;
    for (const context of tracked.table.drain()) tracked.onAbandon?.(context, reason);
  }
}
