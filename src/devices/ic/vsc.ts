/**
 * The guest side of an integration service: a VMBus driver for one IC class
 * that opens the channel (16 KiB rings), answers version negotiation and
 * hands each service message to the service, then sends the answer back in
 * place (Linux drivers/hv/hv_util.c). Messages are handled one at a time: while
 * a service works on one asynchronously (VSS hooks), later messages wait
 * their turn, as Linux's util drivers handle one transaction before reading
 * the next. (They wait in a bounded queue rather than in the ring: the
 * channel's deferral is for a full outbound ring only.)
 *
 * The host is not trusted: a message too short for its headers, of the
 * wrong packet type or larger than the service accepts is dropped and
 * counted; an unknown message type gets HV_E_FAIL.
 */
import type { GuestChannel, GuestDevice, VmbusDriver } from '../../vmbus/device.ts';
import { type IncomingPacket, PacketType } from '../../vmbus/queue.ts';
import { type IcHeader, markResponse, readIcHeader } from './framing.ts';
import { answerNegotiate, type NegotiatedVersions } from './negotiate.ts';
import {
  IC_RING_BYTES,
  ICMSG_HDR,
  IcMessageType,
  IcStatus,
  icmsgNegotiate,
  versionText,
} from './protocol.ts';

/** One service message, as the service sees it. */
export interface IcRequest {
  /** The received message (a private copy); the answer is written into it. */
  readonly message: Uint8Array;
  readonly header: IcHeader;
  /** The body after the headers (a view of `message`). */
  readonly body: Uint8Array;
  readonly versions: NegotiatedVersions;
}

/**
 * A service's answer: the status to reply with, 'drop' to discard the
 * message without a reply (as Linux does with bodies too short to read),
 * or a promise of either while the service works.
 */
export type IcAnswer = number | 'drop' | Promise<number | 'drop'>;

export interface IcGuestService {
  /** Short name for logs and status ("heartbeat"). */
  readonly name: string;
  readonly classId: string;
  readonly messageType: IcMessageType;
  /** Newest first. */
  readonly frameworkVersions: readonly number[];
  readonly serviceVersions: readonly number[];
  /** Largest message accepted (Linux's receive buffer for the service). */
  readonly maxMessageBytes: number;
  handle(request: IcRequest): IcAnswer;
  /** Called when a negotiation succeeded. */
  negotiated?(versions: NegotiatedVersions): void;
  /** One phrase for status lines. */
  summary?(): string;
  /** Called when the channel closes (device removed, unload). */
  closed?(): void;
}

export interface IcDriverStats {
  messages: number;
  replies: number;
  /** Messages discarded: bad packets, too short or too long, or dropped by the service. */
  dropped: number;
  /** Replies that could not be sent (channel closed). */
  unsent: number;
}

/** Messages that may wait while the service is busy or paused; more are dropped. */
const MAX_WAITING = 64;

interface Waiting {
  readonly buffer: Uint8Array;
  readonly length: number;
  readonly transLo: number;
  readonly transHi: number;
}

/** Largest negotiation answer we write into (counts plus two version slots). */
const NEGOTIATE_ANSWER_BYTES = ICMSG_HDR + icmsgNegotiate.size + 8;

export class IcDriver implements VmbusDriver {
  readonly name: string;
  readonly classId: string;
  readonly stats: IcDriverStats = { messages: 0, replies: 0, dropped: 0, unsent: 0 };
  versions: NegotiatedVersions | undefined;
  /** Why the last negotiation failed, if it did. */
  negotiationError = '';
  /** The last few reasons messages were dropped. */
  readonly lastDrops: string[] = [];
  private channel: GuestChannel | undefined;
  private relid = -1;
  private busy = false;
  private paused = false;
  private readonly waiting: Waiting[] = [];

  constructor(
    readonly service: IcGuestService,
    private readonly log: (message: string) => void = () => {},
  ) {
    this.name = `hv_${service.name}`;
    this.classId = service.classId;
  }

  get open(): boolean {
    return this.channel?.queue.open === true;
  }

  async probe(device: GuestDevice): Promise<void> {
    if (this.channel) throw new Error(`${this.service.name}: a second device of this class`);
    const channel = await device.open({
      sendRingBytes: IC_RING_BYTES,
      receiveRingBytes: IC_RING_BYTES,
    });
    this.channel = channel;
    this.relid = device.offer.relid;
    this.versions = undefined;
    this.negotiationError = '';
    // A responder: while an answer waits for room, later messages stay in the ring.
    channel.queue.configure({ pauseWhileBacklogged: true });
    channel.queue.onPacket = (packet) => this.receive(packet);
    // The host speaks first (negotiation); its signal may have come before
    // the handler was set, so look at the ring now.
    channel.queue.poll();
  }

  async remove(device: GuestDevice): Promise<void> {
    const channel = this.channel;
    if (!channel || device.offer.relid !== this.relid) return;
    this.channel = undefined;
    this.relid = -1;
    this.waiting.length = 0;
    this.service.closed?.();
    await channel.close();
  }

  /**
   * Stops handling messages (they wait, unanswered), as a stalled or
   * suspending guest does; `resume` handles them and goes on.
   */
  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    this.pump();
  }

  /** Counts and logs (rate-limited, by the channel's queue) a message the host got wrong. */
  private drop(reason: string): void {
    this.stats.dropped++;
    this.lastDrops.push(reason);
    if (this.lastDrops.length > 5) this.lastDrops.shift();
    this.channel?.queue.drop(`${this.service.name}: ${reason}`);
  }

  private receive(packet: IncomingPacket): void {
    if (packet.type !== PacketType.DataInband) {
      this.drop(`packet type ${packet.type} is not in-band data`);
      return;
    }
    const length = packet.payloadLength;
    if (length > this.service.maxMessageBytes) {
      this.drop(`message of ${length} bytes exceeds ${this.service.maxMessageBytes}`);
      return;
    }
    // A private copy with room for a negotiation answer even when the
    // message is shorter (only `length` bytes go back).
    const buffer = new Uint8Array(Math.max(length, NEGOTIATE_ANSWER_BYTES));
    buffer.set(packet.payload().subarray(0, length));
    const waiting = { buffer, length, transLo: packet.transLo, transHi: packet.transHi };
    if (this.busy || this.paused || this.waiting.length > 0) {
      // One message at a time: later ones wait their turn (bounded: the
      // host may have only one request outstanding per service).
      if (this.waiting.length >= MAX_WAITING) {
        this.drop(`${MAX_WAITING} messages already wait for the service`);
        return;
      }
      this.waiting.push(waiting);
      return;
    }
    this.process(waiting);
  }

  /** Handles waiting messages while the service is free. */
  private pump(): void {
    while (!this.busy && !this.paused && this.waiting.length > 0) {
      this.process(this.waiting.shift()!);
    }
  }

  private process({ buffer, length, transLo, transHi }: Waiting): void {
    const message = buffer.subarray(0, length);
    const header = readIcHeader(message);
    if (typeof header === 'string') {
      this.drop(header);
      return;
    }
    this.stats.messages++;

    if (header.type === IcMessageType.Negotiate) {
      const result = answerNegotiate(buffer, length, this.service.frameworkVersions, [
        ...this.service.serviceVersions,
      ]);
      if (result.ok) {
        this.versions = result.versions;
        this.negotiationError = '';
        this.service.negotiated?.(result.versions);
      } else {
        this.versions = undefined;
        this.negotiationError = result.reason;
        this.log(`${this.service.name}: version negotiation failed: ${result.reason}`);
      }
      // Linux answers a failed negotiation too (counts 0/0); its status stays as sent.
      markResponse(message, header.status);
      this.reply(message, transLo, transHi);
      return;
    }

    let answer: IcAnswer;
    if (header.type !== this.service.messageType) {
      answer = IcStatus.E_FAIL;
    } else if (!this.versions) {
      // The service was not negotiated: refuse rather than guess a version.
      answer = IcStatus.E_FAIL;
    } else {
      try {
        answer = this.service.handle({
          message,
          header,
          body: message.subarray(ICMSG_HDR),
          versions: this.versions,
        });
      } catch (error) {
        // A bug in the service, not the host's doing: answer E_FAIL, count it where tests look.
        this.channel?.queue.handlerFailed(error as Error);
        this.log(`${this.service.name}: handling a message failed: ${(error as Error).message}`);
        answer = IcStatus.E_FAIL;
      }
    }
    if (typeof answer === 'object') {
      this.busy = true;
      answer.then(
        (status) => this.finish(message, transLo, transHi, status),
        (error: Error) => {
          this.channel?.queue.handlerFailed(error);
          this.log(`${this.service.name}: handling a message failed: ${error.message}`);
          this.finish(message, transLo, transHi, IcStatus.E_FAIL);
        },
      );
      return;
    }
    this.finish(message, transLo, transHi, answer);
  }

  private finish(
    message: Uint8Array,
    transLo: number,
    transHi: number,
    status: number | 'drop',
  ): void {
    if (status === 'drop') {
      this.drop(`the ${this.service.name} service discarded a message`);
      this.done();
      return;
    }
    markResponse(message, status);
    this.reply(message, transLo, transHi);
  }

  private done(): void {
    if (!this.busy) return;
    this.busy = false;
    this.pump();
  }

  /** Sends an answer (in order: a full ring makes it wait in the queue's backlog). */
  private reply(message: Uint8Array, transLo: number, transHi: number): void {
    const queue = this.channel?.queue;
    if (queue && queue.sendInband(message, transLo, transHi, false) !== 'closed') {
      this.stats.replies++;
    } else {
      this.stats.unsent++;
    }
    this.done();
  }

  /** Plain data for status displays. */
  describe(): Record<string, unknown> {
    return {
      open: this.open,
      versions: this.versions
        ? `${versionText(this.versions.framework)}/${versionText(this.versions.service)}`
        : undefined,
      ...(this.negotiationError ? { negotiationError: this.negotiationError } : {}),
      ...this.stats,
    };
  }
}
