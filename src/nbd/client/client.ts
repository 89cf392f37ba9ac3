import { createHash } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import {
  type BlockDevice,
  checkRange,
  type DiskErrorCode,
  DiskIoError,
  type WriteOptions,
  type WriteZeroesOptions,
} from '../../block/block-device.ts';
import {
  Command,
  CommandFlag,
  NBD_DEFAULT_MAX_BLOCK,
  NBD_REQUEST_MAGIC,
  NbdError,
  NbdRequest,
  TransmissionFlag,
} from '../protocol.ts';
import { formatNbdUri, type NbdAddress, type NbdTarget, parseNbdUri } from '../uri.ts';
import { hasFlag, type NegotiatedExport, negotiate } from './handshake.ts';
import { errorName, type ReplyError, ReplyParser, type ReplyTarget } from './reply-parser.ts';

/**
 * A BlockDevice backed by an NBD server (qemu-nbd, nbdkit, or ours) over TCP
 * or a Unix socket. Many requests are in flight at once, matched to replies
 * by a 64-bit cookie; requests larger than the server's maximum block size
 * are split. A protocol violation by the server (unknown cookie, bad magic,
 * inconsistent chunk) fails the connection: every pending request rejects
 * with a DiskIoError and so does every later one.
 *
 * NBD's TRIM gives no guarantee about what reads return afterwards, while
 * BlockDevice.discard promises zeros, so discard is sent as WRITE_ZEROES
 * that may punch a hole (no NO_HOLE flag).
 */

export interface NbdConnectOptions {
  /** Treat the export as read-only even if the server allows writes. */
  readonly readOnly?: boolean;
  /** Negotiate structured replies (default true). */
  readonly structuredReplies?: boolean;
  /** Give up connecting and negotiating after this long (default 30 s). */
  readonly timeoutMs?: number;
}

interface Pending extends ReplyTarget {
  resolve(): void;
  reject(err: Error): void;
}

const REQUEST_SIZE = NbdRequest.size;
const requestMagic = NbdRequest.uint('magic');
const requestFlags = NbdRequest.uint('flags');
const requestType = NbdRequest.uint('type');
const requestHandle = NbdRequest.offsetOf('handle');
const requestOffset = NbdRequest.offsetOf('offset');
const requestCount = NbdRequest.uint('count');

/** Largest write of zeros sent as data when the server lacks WRITE_ZEROES. */
const ZERO_PIECE = 1024 * 1024;

function diskCode(error: number): DiskErrorCode {
  switch (error) {
    case NbdError.EPERM:
      return 'EROFS';
    case NbdError.ENOSPC:
      return 'ENOSPC';
    case NbdError.ESHUTDOWN:
      return 'ECLOSED';
    case NbdError.EIO:
    case NbdError.ENOMEM:
      return 'EIO';
    default:
      // The spec asks clients to treat unexpected values as EINVAL.
      return 'EINVAL';
  }
}

/** Connects to an NBD URI or address and negotiates the export. */
export async function connectNbd(
  target: string | NbdTarget,
  options: NbdConnectOptions = {},
): Promise<NbdClient> {
  const resolved = typeof target === 'string' ? parseNbdUri(target) : target;
  const uri = formatNbdUri(resolved);
  const timeoutMs = options.timeoutMs ?? 30_000;
  const socket = await openSocket(resolved.address, uri, timeoutMs);
  socket.setTimeout(timeoutMs, () =>
    socket.destroy(new Error(`no answer from ${uri} within ${timeoutMs} ms`)),
  );
  try {
    const negotiated = await negotiate(socket, resolved.exportName, {
      structuredReplies: options.structuredReplies ?? true,
    });
    socket.setTimeout(0);
    return new NbdClient(socket, uri, negotiated, options.readOnly === true);
  } catch (err) {
    socket.destroy();
    if (err instanceof DiskIoError) {
      throw new DiskIoError(err.code, `${uri}: ${err.message}`);
    }
    throw new DiskIoError('EIO', `${uri}: ${(err as Error).message}`);
  }
}

function openSocket(address: NbdAddress, uri: string, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket =
      address.transport === 'unix'
        ? connect({ path: address.socket })
        : connect({ host: address.host, port: address.port, noDelay: true });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new DiskIoError('EIO', `${uri}: connect timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(new DiskIoError('EIO', `${uri}: cannot connect: ${err.message}`));
    });
  });
}

export class NbdClient implements BlockDevice {
  readonly format = 'nbd';
  readonly size: number;
  readonly logicalSectorSize: number;
  readonly physicalSectorSize: number;
  readonly readOnly: boolean;
  readonly identifier: Uint8Array;
  readonly canFlush: boolean;
  readonly canDiscard: boolean;
  readonly canWriteZeroes: boolean;
  /** Transmission flags as the server sent them. */
  readonly transmissionFlags: number;
  readonly structuredReplies: boolean;
  /** Largest single request we send (server maximum, capped at 32 MiB). */
  readonly maxRequest: number;

  private readonly pending = new Map<number, Pending>();
  private readonly parser: ReplyParser;
  private nextCookie = 1;
  private failure: DiskIoError | undefined;
  private closing = false;
  private closed: Promise<void> | undefined;
  private readonly socketClosed: Promise<void>;

  constructor(
    private readonly socket: Socket,
    /** The URI this client is connected to. */
    readonly uri: string,
    negotiated: NegotiatedExport,
    forceReadOnly: boolean,
  ) {
    const flags = negotiated.flags;
    this.transmissionFlags = flags;
    this.structuredReplies = negotiated.structuredReplies;
    this.logicalSectorSize = Math.max(512, negotiated.minimumBlock);
    this.physicalSectorSize =
      negotiated.preferredBlock >= this.logicalSectorSize && negotiated.preferredBlock <= 65536
        ? negotiated.preferredBlock
        : this.logicalSectorSize;
    // A trailing partial sector cannot be addressed through the BlockDevice interface.
    this.size = negotiated.size - (negotiated.size % this.logicalSectorSize);
    this.readOnly = forceReadOnly || hasFlag(flags, TransmissionFlag.ReadOnly);
    this.canFlush = hasFlag(flags, TransmissionFlag.SendFlush);
    this.canWriteZeroes = !this.readOnly && hasFlag(flags, TransmissionFlag.SendWriteZeroes);
    this.canDiscard = this.canWriteZeroes;
    const cap = Math.min(negotiated.maximumBlock, NBD_DEFAULT_MAX_BLOCK);
    this.maxRequest = Math.max(this.logicalSectorSize, cap - (cap % this.logicalSectorSize));
    this.identifier = createHash('sha256').update(`nbd:${uri}`).digest().subarray(0, 16);

    this.parser = new ReplyParser(
      {
        find: (cookie) => this.pending.get(cookie),
        complete: (cookie, error) => this.complete(cookie, error),
      },
      negotiated.structuredReplies,
    );
    this.socketClosed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => {
      if (!this.parser.push(chunk)) {
        this.fail(`protocol error from the server: ${this.parser.failure}`);
      }
    });
    socket.on('error', (err) => this.fail(`connection error: ${err.message}`));
    socket.on('close', () => this.fail('the server closed the connection'));
    if (negotiated.leftover.length > 0 && !this.parser.push(negotiated.leftover)) {
      this.fail(`protocol error from the server: ${this.parser.failure}`);
    }
  }

  /** Requests sent and not yet answered. */
  get requestsInFlight(): number {
    return this.pending.size;
  }

  private fail(reason: string): void {
    if (this.failure) return;
    this.failure = new DiskIoError(this.closing ? 'ECLOSED' : 'EIO', `${this.uri}: ${reason}`);
    this.socket.destroy();
    const waiting = [...this.pending.values()];
    this.pending.clear();
    for (const p of waiting) {
      p.reject(new DiskIoError(this.failure.code, this.failure.message, p.offset));
    }
  }

  private complete(cookie: number, error: ReplyError | undefined): void {
    const p = this.pending.get(cookie);
    if (!p) return;
    this.pending.delete(cookie);
    if (!error) {
      p.resolve();
    } else {
      const detail = error.message || errorName(error.error);
      p.reject(
        new DiskIoError(
          diskCode(error.error),
          `${this.uri}: ${commandName(p.command)} ${p.offset}+${p.length}: ${detail}`,
          error.offset ?? p.offset,
        ),
      );
      // The server is going away: stop sending and disconnect once idle.
      if (error.error === NbdError.ESHUTDOWN) this.closing = true;
    }
    if (this.closing && this.pending.size === 0 && !this.failure) this.disconnect();
  }

  /** Sends one request; resolves when its reply arrives. */
  private request(
    command: Command,
    flags: number,
    offset: number,
    length: number,
    payload?: Uint8Array,
    buffer?: Uint8Array,
  ): Promise<void> {
    if (this.failure) {
      return Promise.reject(new DiskIoError(this.failure.code, this.failure.message, offset));
    }
    if (this.closing) {
      return Promise.reject(new DiskIoError('ECLOSED', `${this.uri}: client is closed`, offset));
    }
    const cookie = this.nextCookie++;
    const header = Buffer.allocUnsafe(REQUEST_SIZE);
    const view = new DataView(header.buffer, header.byteOffset, REQUEST_SIZE);
    requestMagic.set(view, 0, NBD_REQUEST_MAGIC);
    requestFlags.set(view, 0, flags);
    requestType.set(view, 0, command);
    view.setUint32(requestHandle, Math.floor(cookie / 0x1_0000_0000), false);
    view.setUint32(requestHandle + 4, cookie >>> 0, false);
    view.setUint32(requestOffset, Math.floor(offset / 0x1_0000_0000), false);
    view.setUint32(requestOffset + 4, offset >>> 0, false);
    requestCount.set(view, 0, length);
    return new Promise<void>((resolve, reject) => {
      this.pending.set(cookie, { command, offset, length, buffer, resolve, reject });
      if (payload) {
        this.socket.cork();
        this.socket.write(header);
        this.socket.write(payload);
        this.socket.uncork();
      } else {
        this.socket.write(header);
      }
    });
  }

  private check(offset: number, length: number, writing: boolean): void {
    checkRange(this, offset, length);
    const unit = this.logicalSectorSize;
    if (offset % unit !== 0 || length % unit !== 0) {
      throw new DiskIoError(
        'EINVAL',
        `${this.uri}: ${offset}+${length} is not aligned to ${unit}-byte sectors`,
        offset,
      );
    }
    if (writing && this.readOnly) {
      throw new DiskIoError('EROFS', `${this.uri}: export is read-only`, offset);
    }
  }

  async read(offset: number, target: Uint8Array): Promise<void> {
    this.check(offset, target.length, false);
    const parts: Promise<void>[] = [];
    for (let done = 0; done < target.length; done += this.maxRequest) {
      const n = Math.min(this.maxRequest, target.length - done);
      const piece = target.subarray(done, done + n);
      parts.push(this.request(Command.Read, 0, offset + done, n, undefined, piece));
    }
    await settleAll(parts);
  }

  async readv(offset: number, targets: readonly Uint8Array[]): Promise<void> {
    const parts: Promise<void>[] = [];
    let at = offset;
    for (const t of targets) {
      parts.push(this.read(at, t));
      at += t.length;
    }
    await settleAll(parts);
  }

  async write(offset: number, source: Uint8Array, options?: WriteOptions): Promise<void> {
    this.check(offset, source.length, true);
    const fua = options?.fua === true;
    const nativeFua = fua && hasFlag(this.transmissionFlags, TransmissionFlag.SendFua);
    const flags = nativeFua ? CommandFlag.Fua : 0;
    const parts: Promise<void>[] = [];
    for (let done = 0; done < source.length; done += this.maxRequest) {
      const n = Math.min(this.maxRequest, source.length - done);
      parts.push(
        this.request(Command.Write, flags, offset + done, n, source.subarray(done, done + n)),
      );
    }
    await settleAll(parts);
    if (fua && !nativeFua && this.canFlush) await this.flush();
  }

  async writev(
    offset: number,
    sources: readonly Uint8Array[],
    options?: WriteOptions,
  ): Promise<void> {
    const parts: Promise<void>[] = [];
    let at = offset;
    for (const s of sources) {
      parts.push(this.write(at, s, options));
      at += s.length;
    }
    await settleAll(parts);
  }

  async flush(): Promise<void> {
    // Without NBD_FLAG_SEND_FLUSH the server has no cache to flush.
    if (!this.canFlush) return;
    await this.request(Command.Flush, 0, 0, 0);
  }

  async discard(offset: number, length: number): Promise<void> {
    await this.writeZeroes(offset, length, { mayUnmap: true });
  }

  async writeZeroes(offset: number, length: number, options?: WriteZeroesOptions): Promise<void> {
    this.check(offset, length, true);
    const fua = options?.fua === true;
    if (!this.canWriteZeroes) {
      const zeros = new Uint8Array(Math.min(ZERO_PIECE, length));
      const parts: Promise<void>[] = [];
      for (let done = 0; done < length; done += zeros.length) {
        const n = Math.min(zeros.length, length - done);
        parts.push(this.write(offset + done, zeros.subarray(0, n), { fua }));
      }
      await settleAll(parts);
      return;
    }
    const nativeFua = fua && hasFlag(this.transmissionFlags, TransmissionFlag.SendFua);
    const flags = (nativeFua ? CommandFlag.Fua : 0) | (options?.mayUnmap ? 0 : CommandFlag.NoHole);
    const parts: Promise<void>[] = [];
    for (let done = 0; done < length; done += this.maxRequest) {
      const n = Math.min(this.maxRequest, length - done);
      parts.push(this.request(Command.WriteZeroes, flags, offset + done, n));
    }
    await settleAll(parts);
    if (fua && !nativeFua && this.canFlush) await this.flush();
  }

  /** Waits for pending requests, sends NBD_CMD_DISC and closes the socket. */
  close(): Promise<void> {
    this.closed ??= this.shutdown();
    return this.closed;
  }

  private async shutdown(): Promise<void> {
    this.closing = true;
    if (!this.failure && this.pending.size === 0) this.disconnect();
    await this.socketClosed;
  }

  private disconnect(): void {
    if (this.socket.destroyed || this.socket.writableEnded) return;
    const header = Buffer.alloc(REQUEST_SIZE);
    const view = new DataView(header.buffer, header.byteOffset, REQUEST_SIZE);
    requestMagic.set(view, 0, NBD_REQUEST_MAGIC);
    requestType.set(view, 0, Command.Disc);
    this.socket.end(header);
  }
}

/** NBD_CMD_READ, NBD_CMD_WRITE_ZEROES, ... for messages. */
function commandName(command: number): string {
  const name = Command[command];
  return name
    ? `NBD_CMD_${name.replace(/([a-z])([A-Z])/g, '$1_$2').toUpperCase()}`
    : `command ${command}`;
}

/** Waits for every part, then rejects with the first failure (no request is left running). */
async function settleAll(parts: Promise<void>[]): Promise<void> {
  if (parts.length === 1) return parts[0];
  const results = await Promise.allSettled(parts);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}

export { isNbdUri } from '../uri.ts';
