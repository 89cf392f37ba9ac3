import { ByteQueue } from '../byte-queue.ts';
import { isPooledPayload, releasePayloadBuffer } from '../payload-buffers.ts';
import {
  ClientFlag,
  Command,
  HandshakeFlag,
  NBD_MAGIC,
  NBD_OPTS_MAGIC,
  NBD_REQUEST_MAGIC,
  NbdNewHandshake,
  NbdNewOption,
  NbdRequest,
} from '../protocol.ts';
import type { NbdExport } from './export.ts';
import {
  type ExportTable,
  type HaggleState,
  handleOption,
  MAX_OPTION_DATA,
  type OptionOutcome,
  optionTooLarge,
} from './options.ts';
import { checkRequest, executeRequest, rejectionReply, type ServerRequest } from './requests.ts';

/**
 * One client connection on the server: the fixed newstyle handshake, option
 * haggling, then transmission. It is driven by bytes (`receive`) and writes
 * to a transport, so tests can feed it any byte stream without a socket.
 *
 * Transmission runs requests concurrently: each request is started as soon
 * as it is complete on the wire, and its reply is written, as one buffer,
 * when it finishes. Input is paused while MAX_IN_FLIGHT requests (or
 * MAX_IN_FLIGHT_BYTES of data) are running or while too many reply bytes
 * wait for the socket, so a client cannot make us buffer without bound.
 *
 * Framing errors (a bad magic, unknown client flags, too many options) end
 * the connection; anything else wrong with a request gets an error reply and
 * the connection goes on. A WRITE that is refused still has its payload on
 * the wire: we skip exactly that many bytes as they arrive (holding none of
 * them), so even an oversized WRITE costs no memory and keeps the stream in
 * step.
 */

/** What the connection needs from a socket (net.Socket fits). */
export interface ServerTransport {
  /** Queues bytes; `done` runs once the transport no longer needs them. */
  write(bytes: Uint8Array, done?: (error?: Error | null) => void): unknown;
  /** Send what is queued, then close. */
  end(): unknown;
  /** Close now. */
  destroy(): unknown;
  pause(): unknown;
  resume(): unknown;
  readonly writableLength: number;
}

export interface ConnectionEvents {
  /** The connection ended; `reason` says why. */
  closed?(reason: string): void;
}

export const MAX_IN_FLIGHT = 64;
/**
 * Data bytes (read replies being filled, write payloads being written) in
 * flight above which we stop reading requests; one request alone may exceed
 * it, so even a maximum-size request always proceeds.
 */
export const MAX_IN_FLIGHT_BYTES = 64 * 1024 * 1024;
/** Reply bytes queued on the socket above which we stop reading requests. */
export const OUTPUT_HIGH_WATER = 16 * 1024 * 1024;
/** Options allowed before transmission; more is treated as abuse. */
export const MAX_OPTIONS = 1024;

type Phase =
  | 'client-flags'
  | 'option-header'
  | 'option-data'
  | 'option-skip'
  | 'request-header'
  | 'write-data'
  | 'write-skip'
  | 'draining'
  | 'closed';

const KNOWN_CLIENT_FLAGS = ClientFlag.FixedNewstyle | ClientFlag.NoZeroes;

const requestMagic = NbdRequest.uint('magic');
const requestFlags = NbdRequest.uint('flags');
const requestType = NbdRequest.uint('type');
const requestHandle = NbdRequest.offsetOf('handle');
const requestOffset = NbdRequest.offsetOf('offset');
const requestCount = NbdRequest.uint('count');

export class NbdServerConnection {
  private readonly input = new ByteQueue();
  private phase: Phase = 'client-flags';
  private haggle: HaggleState = { structuredReplies: false, noZeroes: false };
  private optionCode = 0;
  private optionLength = 0;
  private optionsSeen = 0;
  private skipLeft = 0;
  private exp: NbdExport | undefined;
  private structured = false;
  private pendingWrite: ServerRequest | undefined;
  private inFlight = 0;
  private inFlightBytes = 0;
  private inputPaused = false;
  private pumping = false;
  private readonly scratch = new Uint8Array(NbdRequest.size);
  private readonly scratchView = new DataView(this.scratch.buffer);
  private idleWaiters: (() => void)[] = [];
  private closeReason = '';

  constructor(
    private readonly transport: ServerTransport,
    private readonly exports: ExportTable,
    private readonly events: ConnectionEvents = {},
  ) {}

  /** Sends the greeting. */
  start(): void {
    this.transport.write(
      NbdNewHandshake.write({
        nbdmagic: NBD_MAGIC,
        version: NBD_OPTS_MAGIC,
        gflags: HandshakeFlag.FixedNewstyle | HandshakeFlag.NoZeroes,
      }),
    );
  }

  get isClosed(): boolean {
    return this.phase === 'closed';
  }

  get inTransmission(): boolean {
    return this.exp !== undefined && this.phase !== 'closed';
  }

  get requestsInFlight(): number {
    return this.inFlight;
  }

  get reason(): string {
    return this.closeReason;
  }

  /** Bytes from the client. */
  receive(chunk: Uint8Array): void {
    if (this.phase === 'closed' || this.phase === 'draining') return;
    this.input.push(chunk);
    this.pump();
  }

  /** The client hung up (or the socket failed). Running requests still finish on the device. */
  inputEnded(reason = 'client disconnected'): void {
    // While draining (after NBD_CMD_DISC or during shutdown) the drain closes the socket itself.
    if (this.phase === 'closed' || this.phase === 'draining') return;
    this.finish(reason, 'destroy');
  }

  /** The socket drained its output; reading may resume. */
  outputDrained(): void {
    this.maybeResume();
  }

  /**
   * Graceful stop: no more requests are read, running ones finish and are
   * answered, the device is flushed, then the connection closes. A
   * connection still haggling is simply closed.
   */
  async shutdown(): Promise<void> {
    if (this.phase === 'closed') {
      await this.idle();
      return;
    }
    if (!this.exp) {
      this.finish('server shutting down', 'end');
      return;
    }
    this.beginDraining();
    await this.idle();
    const device = this.exp.device;
    if (device.canFlush && !device.readOnly) {
      try {
        await device.flush();
      } catch {
        // The server flushes every export again after the last connection and reports failures.
      }
    }
    this.finish('server shutting down', 'end');
  }

  /** Resolves when no request is running. */
  idle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private finish(reason: string, how: 'end' | 'destroy'): void {
    if (this.phase === 'closed') return;
    this.phase = 'closed';
    this.closeReason = reason;
    this.input.clear();
    this.pendingWrite = undefined;
    if (how === 'end') this.transport.end();
    else this.transport.destroy();
    this.events.closed?.(reason);
  }

  private beginDraining(): void {
    this.phase = 'draining';
    this.input.clear();
    this.pendingWrite = undefined;
    this.pauseInput();
  }

  private pauseInput(): void {
    if (!this.inputPaused) {
      this.inputPaused = true;
      this.transport.pause();
    }
  }

  private get congested(): boolean {
    return (
      this.inFlight >= MAX_IN_FLIGHT ||
      this.inFlightBytes >= MAX_IN_FLIGHT_BYTES ||
      this.transport.writableLength > OUTPUT_HIGH_WATER
    );
  }

  private maybeResume(): void {
    if (!this.inputPaused || this.phase === 'closed' || this.phase === 'draining') return;
    if (this.congested) return;
    this.inputPaused = false;
    this.transport.resume();
    this.pump();
  }

  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.step()) {
        // each step consumed something or changed phase
      }
    } finally {
      this.pumping = false;
    }
  }

  /** Makes one unit of progress; false when more input (or capacity) is needed. */
  private step(): boolean {
    const input = this.input;
    switch (this.phase) {
      case 'client-flags': {
        if (input.length < 4) return false;
        input.readInto(this.scratch, 0, 4);
        const flags = this.scratchView.getUint32(0, false);
        if ((flags & ~KNOWN_CLIENT_FLAGS) !== 0) {
          this.finish(`client sent unknown handshake flags 0x${flags.toString(16)}`, 'destroy');
          return false;
        }
        this.haggle = {
          structuredReplies: false,
          noZeroes: (flags & ClientFlag.NoZeroes) !== 0,
        };
        this.phase = 'option-header';
        return true;
      }
      case 'option-header': {
        if (input.length < NbdNewOption.size) return false;
        input.readInto(this.scratch, 0, NbdNewOption.size);
        const view = this.scratchView;
        const magic = (BigInt(view.getUint32(0, false)) << 32n) | BigInt(view.getUint32(4, false));
        if (magic !== NBD_OPTS_MAGIC) {
          this.finish(`bad option magic 0x${magic.toString(16)}`, 'destroy');
          return false;
        }
        if (++this.optionsSeen > MAX_OPTIONS) {
          this.finish(`more than ${MAX_OPTIONS} options`, 'destroy');
          return false;
        }
        this.optionCode = view.getUint32(8, false);
        this.optionLength = view.getUint32(12, false);
        if (this.optionLength > MAX_OPTION_DATA) {
          this.skipLeft = this.optionLength;
          this.phase = 'option-skip';
        } else {
          this.phase = 'option-data';
        }
        return true;
      }
      case 'option-data': {
        if (input.length < this.optionLength) return false;
        const data = input.take(this.optionLength);
        this.applyOption(handleOption(this.optionCode, data, this.haggle, this.exports));
        return !this.isClosed;
      }
      case 'option-skip': {
        this.skipLeft -= input.skip(this.skipLeft);
        if (this.skipLeft > 0) return false;
        this.applyOption(optionTooLarge(this.optionCode, this.optionLength));
        return !this.isClosed;
      }
      case 'request-header':
        return this.readRequest();
      case 'write-data': {
        const req = this.pendingWrite!;
        if (input.length < req.length) return false;
        req.data = input.take(req.length);
        this.pendingWrite = undefined;
        this.phase = 'request-header';
        this.dispatch(req);
        return true;
      }
      case 'write-skip': {
        this.skipLeft -= input.skip(this.skipLeft);
        if (this.skipLeft > 0) return false;
        this.phase = 'request-header';
        return true;
      }
      default:
        return false;
    }
  }

  private applyOption(outcome: OptionOutcome): void {
    for (const reply of outcome.replies) this.transport.write(reply);
    switch (outcome.next) {
      case 'continue':
        this.phase = 'option-header';
        break;
      case 'transmission':
        this.exp = outcome.export;
        this.structured = this.haggle.structuredReplies;
        this.phase = 'request-header';
        break;
      case 'close':
        this.finish(outcome.reason, 'end');
        break;
    }
  }

  private readRequest(): boolean {
    if (this.congested) {
      this.pauseInput();
      return false;
    }
    const input = this.input;
    if (input.length < NbdRequest.size) return false;
    input.readInto(this.scratch, 0, NbdRequest.size);
    const view = this.scratchView;
    const magic = requestMagic.get(view, 0);
    if (magic !== NBD_REQUEST_MAGIC) {
      this.finish(`bad request magic 0x${magic.toString(16)}`, 'destroy');
      return false;
    }
    const type = requestType.get(view, 0);
    const req: ServerRequest = {
      flags: requestFlags.get(view, 0),
      type,
      handle: this.scratch.slice(requestHandle, requestHandle + 8),
      offset:
        view.getUint32(requestOffset, false) * 0x1_0000_0000 +
        view.getUint32(requestOffset + 4, false),
      length: requestCount.get(view, 0),
    };
    if (type === Command.Disc) {
      this.beginDraining();
      void this.idle().then(() => this.finish('client sent NBD_CMD_DISC', 'end'));
      return false;
    }
    const exp = this.exp!;
    const rejection = checkRequest(req, exp, this.structured);
    if (rejection) {
      this.transport.write(rejectionReply(req, rejection, this.structured));
      if (type === Command.Write && req.length > 0) {
        this.skipLeft = req.length;
        this.phase = 'write-skip';
      }
      return true;
    }
    if (type === Command.Write && req.length > 0) {
      this.pendingWrite = req;
      this.phase = 'write-data';
      return true;
    }
    this.dispatch(req);
    return true;
  }

  private dispatch(req: ServerRequest): void {
    const bytes = req.type === Command.Read || req.type === Command.Write ? req.length : 0;
    this.inFlight++;
    this.inFlightBytes += bytes;
    void executeRequest(this.exp!, req, this.structured).then(
      (reply) => {
        if (req.data) releasePayloadBuffer(req.data);
        this.completed(reply, bytes);
      },
      () => {
        if (req.data) releasePayloadBuffer(req.data);
        this.completed(undefined, bytes);
      },
    );
  }

  private completed(reply: Uint8Array | undefined, bytes: number): void {
    this.inFlight--;
    this.inFlightBytes -= bytes;
    // A reply for a client that has gone is dropped; the work itself is done.
    if (reply && this.phase !== 'closed') {
      if (isPooledPayload(reply)) this.transport.write(reply, () => releasePayloadBuffer(reply));
      else this.transport.write(reply);
    } else if (reply) {
      releasePayloadBuffer(reply);
    }
    if (this.inFlight === 0 && this.idleWaiters.length > 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
    this.maybeResume();
  }
}
