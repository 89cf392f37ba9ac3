import { ByteQueue } from '../byte-queue.ts';
import {
  Command,
  NBD_MAX_STRING,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
  NbdError,
  NbdSimpleReply,
  NbdStructuredReply,
  nameOf,
  REPLY_TYPE_ERROR_BIT,
  ReplyFlag,
  ReplyType,
} from '../protocol.ts';

/**
 * The client's parser for transmission replies (proto.md "Simple reply
 * message", "Structured reply chunk message", "Structured reply types").
 *
 * The server is not trusted: every length is checked against the request it
 * answers before any byte is buffered, data chunks must lie inside the
 * request and must not overlap, a read must be fully covered before success
 * is accepted, and anything inconsistent is a protocol failure (the client
 * then drops the connection). The parser never throws on input and consumes
 * whatever it is given in one pass, so it cannot hang.
 */

/** What the parser needs to know about the request a reply answers. */
export interface ReplyTarget {
  readonly command: number;
  readonly offset: number;
  readonly length: number;
  /** For READ: where `length` bytes of data go. */
  readonly buffer: Uint8Array | undefined;
}

export interface ReplyError {
  /** NBD error value as sent (never 0). */
  readonly error: number;
  readonly message: string;
  /** Byte offset of the failure, from NBD_REPLY_TYPE_ERROR_OFFSET. */
  readonly offset?: number;
}

export interface ReplyHandler {
  /** The request waiting for `cookie`, or undefined when there is none. */
  find(cookie: number): ReplyTarget | undefined;
  /** The reply to `cookie` is complete; `error` is set when it failed. */
  complete(cookie: number, error: ReplyError | undefined): void;
}

/** Payload of error chunks we are willing to buffer (header, 4096-byte message, offset). */
const MAX_ERROR_PAYLOAD = 6 + NBD_MAX_STRING + 8;
/** Disjoint data ranges tracked per read before the reply is deemed abusive. */
const MAX_RANGES = 65536;

const utf8 = new TextDecoder('utf-8');

interface Reassembly {
  /** Sorted, disjoint, merged [start, end) ranges relative to the request. */
  starts: number[];
  ends: number[];
  covered: number;
  error: ReplyError | undefined;
}

type Phase =
  | { kind: 'header' }
  | { kind: 'simple-data'; cookie: number; target: ReplyTarget; done: number }
  | {
      kind: 'chunk-payload';
      cookie: number;
      target: ReplyTarget;
      flags: number;
      type: number;
      /** Bytes to buffer before `payload` can decide (the offset only, for data chunks). */
      length: number;
      /** The chunk's payload length as sent. */
      total: number;
    }
  | {
      kind: 'chunk-data';
      cookie: number;
      target: ReplyTarget;
      flags: number;
      at: number;
      left: number;
    }
  | { kind: 'failed' };

const simpleError = NbdSimpleReply.uint('error');
const simpleHandle = NbdSimpleReply.offsetOf('handle');
const chunkFlags = NbdStructuredReply.uint('flags');
const chunkType = NbdStructuredReply.uint('type');
const chunkHandle = NbdStructuredReply.offsetOf('handle');
const chunkLength = NbdStructuredReply.uint('length');

export class ReplyParser {
  private readonly input = new ByteQueue();
  private phase: Phase = { kind: 'header' };
  private readonly reads = new Map<number, Reassembly>();
  private readonly scratch = new Uint8Array(MAX_ERROR_PAYLOAD);
  private readonly view = new DataView(this.scratch.buffer);
  /** Why the stream was rejected; set once, after which input is ignored. */
  failure: string | undefined;

  constructor(
    private readonly handler: ReplyHandler,
    /** Structured replies were negotiated. */
    private readonly structured: boolean,
  ) {}

  /** Feeds bytes from the server; returns false once the stream has been rejected. */
  push(chunk: Uint8Array): boolean {
    if (this.failure !== undefined) return false;
    this.input.push(chunk);
    while (this.failure === undefined && this.step()) {
      // keep going while progress is made
    }
    if (this.failure !== undefined) this.input.clear();
    return this.failure === undefined;
  }

  /** Bytes received but not yet parsed (a partial message). */
  get buffered(): number {
    return this.input.length;
  }

  private fail(reason: string): false {
    this.failure = reason;
    this.phase = { kind: 'failed' };
    return false;
  }

  private step(): boolean {
    const phase = this.phase;
    switch (phase.kind) {
      case 'header':
        return this.header();
      case 'simple-data': {
        const { target } = phase;
        const n = this.input.drainInto(target.buffer!, phase.done, target.length - phase.done);
        phase.done += n;
        if (phase.done < target.length) return false;
        this.phase = { kind: 'header' };
        this.handler.complete(phase.cookie, undefined);
        return true;
      }
      case 'chunk-data': {
        const n = this.input.drainInto(phase.target.buffer!, phase.at, phase.left);
        phase.at += n;
        phase.left -= n;
        if (phase.left > 0) return false;
        this.phase = { kind: 'header' };
        if (phase.flags & ReplyFlag.Done) this.finish(phase.cookie, phase.target);
        return true;
      }
      case 'chunk-payload':
        if (this.input.length < phase.length) return false;
        this.input.readInto(this.scratch, 0, phase.length);
        this.phase = { kind: 'header' };
        return this.payload(phase.cookie, phase.target, phase.flags, phase.type, phase.total);
      default:
        return false;
    }
  }

  /** Reads a cookie; our cookies are below 2^53, anything else is unknown. */
  private cookieAt(at: number): number {
    const hi = this.view.getUint32(at, false);
    const lo = this.view.getUint32(at + 4, false);
    return hi >= 0x200000 ? -1 : hi * 0x1_0000_0000 + lo;
  }

  private lookup(cookie: number): ReplyTarget | undefined {
    return cookie < 0 ? undefined : this.handler.find(cookie);
  }

  private header(): boolean {
    const input = this.input;
    if (input.length < 4) return false;
    const magic = input.peekUint32(0);
    if (magic === NBD_SIMPLE_REPLY_MAGIC) {
      if (input.length < NbdSimpleReply.size) return false;
      input.readInto(this.scratch, 0, NbdSimpleReply.size);
      const error = simpleError.get(this.view, 0);
      const cookie = this.cookieAt(simpleHandle);
      const target = this.lookup(cookie);
      if (!target)
        return this.fail(`simple reply for unknown cookie ${this.cookieText(simpleHandle)}`);
      if (target.command === Command.Read && this.structured) {
        return this.fail(
          `simple reply to a READ (cookie ${cookie}) after structured replies were agreed`,
        );
      }
      if (error !== 0) {
        this.handler.complete(cookie, { error, message: `server replied ${errorName(error)}` });
        return true;
      }
      if (target.command === Command.Read && target.length > 0) {
        this.phase = { kind: 'simple-data', cookie, target, done: 0 };
        return true;
      }
      this.handler.complete(cookie, undefined);
      return true;
    }
    if (magic === NBD_STRUCTURED_REPLY_MAGIC) {
      if (!this.structured) return this.fail('structured reply chunk without negotiation');
      if (input.length < NbdStructuredReply.size) return false;
      input.readInto(this.scratch, 0, NbdStructuredReply.size);
      const flags = chunkFlags.get(this.view, 0);
      const type = chunkType.get(this.view, 0);
      const length = chunkLength.get(this.view, 0);
      const cookie = this.cookieAt(chunkHandle);
      const target = this.lookup(cookie);
      if (!target)
        return this.fail(`reply chunk for unknown cookie ${this.cookieText(chunkHandle)}`);
      return this.chunk(cookie, target, flags, type, length);
    }
    return this.fail(`bad reply magic 0x${magic.toString(16)}`);
  }

  private cookieText(at: number): string {
    return `0x${this.view.getBigUint64(at, false).toString(16)}`;
  }

  /** Validates a chunk header against its request before reading its payload. */
  private chunk(
    cookie: number,
    target: ReplyTarget,
    flags: number,
    type: number,
    length: number,
  ): boolean {
    const done = (flags & ReplyFlag.Done) !== 0;
    const isRead = target.command === Command.Read;
    switch (type) {
      case ReplyType.None:
        if (length !== 0) return this.fail(`NONE chunk with ${length} bytes of payload`);
        if (!done) return this.fail('NONE chunk without the DONE flag');
        this.finish(cookie, target);
        return true;
      case ReplyType.OffsetData:
        if (!isRead) return this.fail(`data chunk in reply to ${nameOf(Command, target.command)}`);
        if (length < 9) return this.fail(`data chunk of ${length} bytes (need at least 9)`);
        if (length - 8 > target.length) {
          return this.fail(`data chunk of ${length - 8} bytes for a ${target.length}-byte read`);
        }
        this.phase = {
          kind: 'chunk-payload',
          cookie,
          target,
          flags,
          type,
          length: 8,
          total: length,
        };
        return true;
      case ReplyType.OffsetHole:
        if (!isRead) return this.fail(`hole chunk in reply to ${nameOf(Command, target.command)}`);
        if (length !== 12) return this.fail(`hole chunk of ${length} bytes (must be 12)`);
        this.phase = { kind: 'chunk-payload', cookie, target, flags, type, length, total: length };
        return true;
      default:
        if ((type & REPLY_TYPE_ERROR_BIT) === 0) {
          return this.fail(`unexpected reply chunk type ${nameOf(ReplyType, type)}`);
        }
        if (length < 6) return this.fail(`error chunk of ${length} bytes (need at least 6)`);
        if (length > MAX_ERROR_PAYLOAD) {
          return this.fail(`error chunk of ${length} bytes exceeds ${MAX_ERROR_PAYLOAD}`);
        }
        this.phase = { kind: 'chunk-payload', cookie, target, flags, type, length, total: length };
        return true;
    }
  }

  /** Handles a chunk's buffered payload (for data chunks, just the offset). */
  private payload(
    cookie: number,
    target: ReplyTarget,
    flags: number,
    type: number,
    length: number,
  ): boolean {
    const view = this.view;
    const done = (flags & ReplyFlag.Done) !== 0;
    switch (type) {
      case ReplyType.OffsetData: {
        const start = this.relativeOffset(target, 0);
        const n = length - 8;
        if (start < 0 || n > target.length - start) {
          return this.fail(
            `data chunk at ${this.absText(0)}+${n} is outside the request ${target.offset}+${target.length}`,
          );
        }
        if (!this.claim(cookie, start, start + n)) return false;
        this.phase = { kind: 'chunk-data', cookie, target, flags, at: start, left: n };
        return true;
      }
      case ReplyType.OffsetHole: {
        const start = this.relativeOffset(target, 0);
        const n = view.getUint32(8, false);
        if (n === 0) return this.fail('hole chunk of size 0');
        if (start < 0 || n > target.length - start) {
          return this.fail(
            `hole at ${this.absText(0)}+${n} is outside the request ${target.offset}+${target.length}`,
          );
        }
        if (!this.claim(cookie, start, start + n)) return false;
        target.buffer!.fill(0, start, start + n);
        if (done) this.finish(cookie, target);
        return true;
      }
      default: {
        const error = view.getUint32(0, false);
        const messageLength = view.getUint16(4, false);
        if (error === 0) return this.fail('error chunk with error value 0');
        if (messageLength > length - 6) {
          return this.fail(`error message of ${messageLength} bytes in a ${length}-byte chunk`);
        }
        const message = utf8.decode(this.scratch.subarray(6, 6 + messageLength));
        let offset: number | undefined;
        if (type === ReplyType.ErrorOffset) {
          if (length !== 6 + messageLength + 8) {
            return this.fail(
              `error-offset chunk of ${length} bytes with a ${messageLength}-byte message`,
            );
          }
          const rel = this.relativeOffset(target, 6 + messageLength);
          if (rel < 0 || rel >= target.length) {
            return this.fail(
              `error offset ${this.absText(6 + messageLength)} is outside the request ${target.offset}+${target.length}`,
            );
          }
          offset = target.offset + rel;
        }
        const text = message || `server replied ${errorName(error)}`;
        const state = this.reassembly(cookie);
        state.error ??=
          offset === undefined ? { error, message: text } : { error, message: text, offset };
        if (done) this.finish(cookie, target);
        return true;
      }
    }
  }

  /** Offset in the scratch at `at` relative to the request start; -1 when before it or huge. */
  private relativeOffset(target: ReplyTarget, at: number): number {
    const hi = this.view.getUint32(at, false);
    const lo = this.view.getUint32(at + 4, false);
    if (hi >= 0x200000) return -1;
    const abs = hi * 0x1_0000_0000 + lo;
    return abs < target.offset ? -1 : abs - target.offset;
  }

  private absText(at: number): string {
    return this.view.getBigUint64(at, false).toString();
  }

  private reassembly(cookie: number): Reassembly {
    let state = this.reads.get(cookie);
    if (!state) {
      state = { starts: [], ends: [], covered: 0, error: undefined };
      this.reads.set(cookie, state);
    }
    return state;
  }

  /** Records [start, end) as received; fails on overlap with earlier chunks. */
  private claim(cookie: number, start: number, end: number): boolean {
    const state = this.reassembly(cookie);
    const { starts, ends } = state;
    // First range whose end is beyond start.
    let lo = 0;
    let hi = starts.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (ends[mid]! <= start) lo = mid + 1;
      else hi = mid;
    }
    if (lo < starts.length && starts[lo]! < end) {
      return this.fail(`chunk ${start}+${end - start} overlaps data already received`);
    }
    const joinsLeft = lo > 0 && ends[lo - 1] === start;
    const joinsRight = lo < starts.length && starts[lo] === end;
    if (joinsLeft && joinsRight) {
      ends[lo - 1] = ends[lo]!;
      starts.splice(lo, 1);
      ends.splice(lo, 1);
    } else if (joinsLeft) {
      ends[lo - 1] = end;
    } else if (joinsRight) {
      starts[lo] = start;
    } else {
      if (starts.length >= MAX_RANGES)
        return this.fail(`more than ${MAX_RANGES} fragments in one read`);
      starts.splice(lo, 0, start);
      ends.splice(lo, 0, end);
    }
    state.covered += end - start;
    return true;
  }

  /** The final chunk of a structured reply arrived. */
  private finish(cookie: number, target: ReplyTarget): void {
    const state = this.reads.get(cookie);
    this.reads.delete(cookie);
    if (state?.error) {
      this.handler.complete(cookie, state.error);
      return;
    }
    if (target.command === Command.Read && (state?.covered ?? 0) !== target.length) {
      this.fail(
        `read of ${target.length} bytes at ${target.offset} ended with only ${state?.covered ?? 0} bytes`,
      );
      return;
    }
    this.handler.complete(cookie, undefined);
  }
}

export function errorName(error: number): string {
  return `NBD_${nameOf(NbdError, error)} (${error})`;
}
