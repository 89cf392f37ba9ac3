/**
 * The host side of an integration service: offers the message-mode pipe
 * channel, negotiates versions when the guest opens it, then sends the
 * service's requests one transaction at a time (the IC protocols allow only
 * one outstanding request per service) and matches answers by the VMBus
 * transaction id. Services that do not wait for answers (time samples,
 * heartbeats) post messages and see the answers as they drain.
 *
 * The guest is not trusted: an answer that is not in-band, too short for its
 * headers, not marked as a response, of another message type or for no
 * outstanding request is dropped and counted.
 */
import type { OfferParameters, VmbusDevice } from '../../vmbus/device.ts';
import { PipeMode } from '../../vmbus/protocol.ts';
import {
  type IncomingPacket,
  PacketType,
  type Queue,
  type RequestTable,
} from '../../vmbus/queue.ts';
import { buildIcMessage, type IcHeader, readIcHeader } from './framing.ts';
import { buildNegotiate, type NegotiatedVersions, readNegotiateAnswer } from './negotiate.ts';
import {
  IC_RING_BYTES,
  ICMSG_HDR,
  IcHeaderFlags,
  IcMessageType,
  statusName,
  versionText,
} from './protocol.ts';

export class IcError extends Error {
  override readonly name = 'IcError';
}

export type IcHostState = 'offered' | 'negotiating' | 'ready' | 'failed' | 'closed';

export interface IcHostOptions {
  /** Short name for errors and status ("shutdown"). */
  readonly name: string;
  readonly classId: string;
  readonly instanceId?: string;
  readonly messageType: IcMessageType;
  /** What the host offers, in the order it lists them. */
  readonly frameworkVersions: readonly number[];
  readonly serviceVersions: readonly number[];
  /** How long the guest has to answer the negotiation. */
  readonly negotiateTimeoutMs?: number;
  readonly log?: (message: string) => void;
}

/** What every host service's constructor takes besides its own options. */
export interface IcServiceOptions {
  /** Versions to offer instead of the service's defaults. */
  readonly frameworkVersions?: readonly number[];
  readonly serviceVersions?: readonly number[];
  readonly negotiateTimeoutMs?: number;
  readonly log?: (message: string) => void;
}

/** A service's IcHostOptions: its identity and defaults, overridden by the caller's options. */
export function hostOptions(
  service: Pick<
    IcHostOptions,
    'name' | 'classId' | 'messageType' | 'frameworkVersions' | 'serviceVersions'
  >,
  options: IcServiceOptions,
): IcHostOptions {
  return {
    ...service,
    frameworkVersions: options.frameworkVersions ?? service.frameworkVersions,
    serviceVersions: options.serviceVersions ?? service.serviceVersions,
    ...(options.negotiateTimeoutMs !== undefined
      ? { negotiateTimeoutMs: options.negotiateTimeoutMs }
      : {}),
    ...(options.log ? { log: options.log } : {}),
  };
}

/** An answer to a request: its status, the whole message and its body. */
export interface IcReply {
  readonly status: number;
  readonly header: IcHeader;
  readonly message: Uint8Array;
  readonly body: Uint8Array;
}

export interface IcHostStats {
  requests: number;
  answers: number;
  /** Answers to posted messages (nobody waits for them). */
  drained: number;
  /** Answers for no outstanding request (late, duplicate or invented). */
  unexpected: number;
  /** Answers that failed validation. */
  bad: number;
  timeouts: number;
}

/** A message sent to the guest whose answer is awaited (a request) or only recognised (posted). */
interface Outstanding {
  readonly type: number;
  /** Set for requests; posted messages' answers go to postedAnswer with their tag. */
  readonly resolve?: (reply: IcReply) => void;
  readonly tag?: unknown;
  readonly reject?: (error: Error) => void;
  readonly timeoutMs: number;
}

/** Messages outstanding at once: the one request plus posted heartbeats and time samples. */
const MAX_OUTSTANDING = 64;
/** How long the answer to a posted message is still recognised. */
const POSTED_ANSWER_MS = 60_000;

export class IcVsp implements VmbusDevice {
  readonly offer: OfferParameters;
  readonly stats: IcHostStats = {
    requests: 0,
    answers: 0,
    drained: 0,
    unexpected: 0,
    bad: 0,
    timeouts: 0,
  };
  state: IcHostState = 'offered';
  versions: NegotiatedVersions | undefined;
  /** Why the service is not usable (negotiation failure, closed channel). */
  error = '';
  protected channel: Queue | undefined;
  protected readonly log: (message: string) => void;
  private outstanding: RequestTable<Outstanding> | undefined;
  private turn: Promise<unknown> = Promise.resolve();
  private readonly readyWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];

  constructor(readonly options: IcHostOptions) {
    this.offer = {
      classId: options.classId,
      instanceId: options.instanceId ?? crypto.randomUUID(),
      pipeMode: PipeMode.Message,
      sendRingBytes: IC_RING_BYTES,
      receiveRingBytes: IC_RING_BYTES,
    };
    this.log = options.log ?? (() => {});
  }

  get name(): string {
    return this.options.name;
  }

  open(channel: Queue): void {
    this.channel = channel;
    this.state = 'negotiating';
    this.error = '';
    this.versions = undefined;
    this.outstanding = channel.trackRequests<Outstanding>({
      capacity: MAX_OUTSTANDING,
      // Answers are in-band packets carrying the request's transaction id.
      match: 'any-type',
      onCompletion: (sent, packet) => this.onAnswer(sent, packet),
      onTimeout: (sent) => {
        if (!sent.reject) return;
        this.stats.timeouts++;
        sent.reject(
          new IcError(
            `the guest did not answer the ${this.name} request within ${(sent.timeoutMs / 1000).toFixed(1)}s`,
          ),
        );
      },
      onAbandon: (sent, reason) => sent.reject?.(new IcError(reason)),
      onUnknown: () => this.stats.unexpected++,
    });
    // Every answer carries an id; a packet without one answers nothing.
    channel.onPacket = (packet) => {
      this.stats.bad++;
      channel.drop(`packet type ${packet.type} with transaction id 0 answers nothing`);
    };
    // Negotiate once the bus has finished opening the channel.
    setImmediate(() => void this.negotiate(channel));
  }

  close(channel: Queue): void {
    if (channel !== this.channel) return;
    channel.onPacket = undefined;
    this.channel = undefined;
    this.state = 'closed';
    this.error = `the guest closed the ${this.name} channel`;
    for (const sent of this.outstanding?.drain() ?? []) sent.reject?.(new IcError(this.error));
    this.outstanding = undefined;
    this.settleReady();
    this.closed();
  }

  /** Hook for services: the channel went away. */
  protected closed(): void {}

  /** Hook for services: negotiation succeeded. */
  protected ready(_versions: NegotiatedVersions): void {}

  /** Hook for services: the answer to a posted message arrived (with the tag it was posted with). */
  protected postedAnswer(_reply: IcReply, _tag: unknown): void {}

  private async negotiate(channel: Queue): Promise<void> {
    if (channel !== this.channel) return;
    const { frameworkVersions, serviceVersions } = this.options;
    try {
      const reply = await this.exchange(
        IcMessageType.Negotiate,
        buildNegotiate(frameworkVersions, serviceVersions),
        this.options.negotiateTimeoutMs ?? 10_000,
      );
      if (channel !== this.channel) return;
      const answer = readNegotiateAnswer(reply.body, frameworkVersions, serviceVersions);
      if (typeof answer === 'string') {
        this.state = 'failed';
        this.error = `${this.name} negotiation failed: ${answer}`;
        this.log(this.error);
      } else {
        this.versions = answer;
        this.state = 'ready';
        this.ready(answer);
      }
    } catch (error) {
      if (channel !== this.channel) return;
      this.state = 'failed';
      this.error = `${this.name} negotiation failed: ${(error as Error).message}`;
      this.log(this.error);
    }
    this.settleReady();
  }

  private settleReady(): void {
    for (const waiter of this.readyWaiters.splice(0)) {
      if (this.state === 'ready') waiter.resolve();
      else waiter.reject(new IcError(this.unusable()));
    }
  }

  private unusable(): string {
    if (this.state === 'offered') return `the guest has not opened the ${this.name} channel`;
    return this.error || `the ${this.name} service is ${this.state}`;
  }

  /** Resolves once negotiated; rejects when negotiation failed or does not finish in time. */
  whenReady(timeoutMs = 5000): Promise<NegotiatedVersions> {
    if (this.state === 'ready' && this.versions) return Promise.resolve(this.versions);
    if (this.state === 'failed' || this.state === 'closed') {
      return Promise.reject(new IcError(this.unusable()));
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.readyWaiters.indexOf(waiter);
        if (i >= 0) this.readyWaiters.splice(i, 1);
        reject(new IcError(this.unusable()));
      }, timeoutMs);
      const waiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve(this.versions!);
        },
        reject: (error: Error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      this.readyWaiters.push(waiter);
    });
  }

  /** Builds a service message with the negotiated versions. */
  protected message(body: Uint8Array | number, flags?: number): Uint8Array {
    const versions = this.versions;
    if (!versions) throw new IcError(this.unusable());
    return buildIcMessage(
      {
        type: this.options.messageType,
        framework: versions.framework,
        messageVersion: versions.service,
        ...(flags === undefined ? {} : { flags }),
      },
      body,
    );
  }

  /**
   * Sends a service request and resolves with the answer; requests queue
   * behind each other. Rejects on timeout (the late answer is dropped).
   */
  async request(body: Uint8Array | number, timeoutMs: number): Promise<IcReply> {
    await this.whenReady();
    return this.exchange(this.options.messageType, this.message(body), timeoutMs);
  }

  /** Like `request` but with a prepared message (`message(...)` filled in by the caller). */
  async requestMessage(message: Uint8Array, timeoutMs: number): Promise<IcReply> {
    await this.whenReady();
    return this.exchange(this.options.messageType, message, timeoutMs);
  }

  private exchange(type: number, message: Uint8Array, timeoutMs: number): Promise<IcReply> {
    const run = this.turn.then(() => this.sendAndWait(type, message, timeoutMs));
    this.turn = run.catch(() => {});
    return run;
  }

  private sendAndWait(type: number, message: Uint8Array, timeoutMs: number): Promise<IcReply> {
    const channel = this.channel;
    const outstanding = this.outstanding;
    if (!channel || !outstanding) return Promise.reject(new IcError(this.unusable()));
    return new Promise<IcReply>((resolve, reject) => {
      const transLo = outstanding.allocate({ type, resolve, reject, timeoutMs }, timeoutMs);
      if (transLo === 0) {
        reject(new IcError(`${MAX_OUTSTANDING} ${this.name} messages are still unanswered`));
        return;
      }
      this.stats.requests++;
      if (channel.sendInband(message, transLo, 0, false) === 'closed') {
        outstanding.cancel(transLo);
        reject(new IcError(this.channelGone(channel)));
      }
    });
  }

  /**
   * Sends a message nobody waits for; its answer goes to `postedAnswer`
   * with `tag` (what the service needs to judge the answer).
   */
  protected post(message: Uint8Array, tag?: unknown): Promise<void> {
    const channel = this.channel;
    const outstanding = this.outstanding;
    if (!channel || !outstanding) return Promise.reject(new IcError(this.unusable()));
    const transLo = outstanding.allocate(
      { type: this.options.messageType, timeoutMs: POSTED_ANSWER_MS, tag },
      POSTED_ANSWER_MS,
    );
    if (transLo === 0) {
      return Promise.reject(
        new IcError(`${MAX_OUTSTANDING} ${this.name} messages are still unanswered`),
      );
    }
    if (channel.sendInband(message, transLo, 0, false) === 'closed') {
      outstanding.cancel(transLo);
      return Promise.reject(new IcError(this.channelGone(channel)));
    }
    return Promise.resolve();
  }

  private channelGone(channel: Queue): string {
    return `the ${this.name} channel is ${channel.state}${channel.error ? `: ${channel.error}` : ''}`;
  }

  /** The guest's answer to a message of ours (its transaction id matched). */
  private onAnswer(sent: Outstanding, packet: IncomingPacket): void {
    const fail = (reason: string): void => {
      this.stats.bad++;
      this.channel?.drop(reason);
      sent.reject?.(new IcError(`the guest answered the ${this.name} request with ${reason}`));
    };
    if (packet.type !== PacketType.DataInband) {
      fail(`a packet of type ${packet.type}, not in-band data`);
      return;
    }
    const message = packet.payload().slice(0, packet.payloadLength);
    const header = readIcHeader(message);
    if (typeof header === 'string') {
      fail(`a malformed message: ${header}`);
      return;
    }
    if ((header.flags & IcHeaderFlags.Response) === 0) {
      fail('a message not marked as a response');
      return;
    }
    if (header.type !== sent.type) {
      fail(`message type ${header.type}, not ${sent.type}`);
      return;
    }
    const reply: IcReply = {
      status: header.status,
      header,
      message,
      body: message.subarray(ICMSG_HDR),
    };
    if (sent.resolve) {
      this.stats.answers++;
      sent.resolve(reply);
      return;
    }
    this.stats.drained++;
    this.postedAnswer(reply, sent.tag);
  }

  /** One phrase for status lines: the negotiated versions, or the state. */
  summary(): string {
    const v = this.versions;
    return this.state === 'ready' && v
      ? `${this.name} ${versionText(v.framework)}/${versionText(v.service)}`
      : `${this.name} ${this.state}`;
  }

  /** Plain data for status displays. */
  describe(): Record<string, unknown> {
    return {
      state: this.state,
      versions: this.versions
        ? `${versionText(this.versions.framework)}/${versionText(this.versions.service)}`
        : undefined,
      ...(this.error ? { error: this.error } : {}),
      ...this.stats,
    };
  }
}

/** Throws an IcError naming the status unless it is S_OK. */
export function expectOk(reply: IcReply, what: string): void {
  if (reply.status !== 0)
    throw new IcError(`${what}: the guest answered ${statusName(reply.status)}`);
}
