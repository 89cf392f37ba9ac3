import type { Socket } from 'node:net';
import { DiskIoError } from '../../block/block-device.ts';
import { ByteQueue } from '../byte-queue.ts';
import {
  ClientFlag,
  HandshakeFlag,
  InfoType,
  NBD_CLISERV_MAGIC,
  NBD_EXPORT_NAME_PADDING,
  NBD_MAGIC,
  NBD_MAX_STRING,
  NBD_OPTS_MAGIC,
  NBD_REP_MAGIC,
  NbdExportNameOptionReply,
  NbdFixedNewOptionReply,
  NbdInfoBlockSize,
  NbdInfoExport,
  NbdNewHandshake,
  NbdNewOption,
  nameOf,
  OPTION_REPLY_ERROR_BIT,
  Option,
  OptionReply,
  type TransmissionFlag,
} from '../protocol.ts';

/**
 * The client side of the fixed newstyle handshake (proto.md "Handshake"):
 * read the greeting, agree on flags, ask for structured replies, then
 * NBD_OPT_GO with NBD_INFO_EXPORT and NBD_INFO_BLOCK_SIZE, falling back to
 * NBD_OPT_EXPORT_NAME when the server does not know NBD_OPT_GO (or speaks
 * plain newstyle). Every reply length is bounded before it is read.
 */

export interface NegotiatedExport {
  readonly size: number;
  readonly flags: number;
  readonly structuredReplies: boolean;
  /** From NBD_INFO_BLOCK_SIZE, or the protocol defaults (1, 4096, none). */
  readonly minimumBlock: number;
  readonly preferredBlock: number;
  readonly maximumBlock: number;
  /** Bytes the server sent after the handshake (normally none). */
  readonly leftover: Uint8Array;
}

/** Option replies longer than this are refused (ours never exceed a few hundred bytes). */
const MAX_OPTION_REPLY = 4 * NBD_MAX_STRING;

function handshakeError(message: string): DiskIoError {
  return new DiskIoError('EIO', `NBD handshake: ${message}`);
}

/** Reads exact byte counts from a socket during the handshake. */
class HandshakeReader {
  private readonly queue = new ByteQueue();
  private waiting:
    | { count: number; resolve: (b: Uint8Array) => void; reject: (e: Error) => void }
    | undefined;
  private ended: Error | undefined;
  private readonly onData = (chunk: Buffer): void => {
    this.queue.push(chunk);
    this.settle();
  };
  private readonly onEnd = (): void => this.stop(handshakeError('server closed the connection'));
  private readonly onError = (err: Error): void => this.stop(handshakeError(err.message));

  constructor(private readonly socket: Socket) {
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onEnd);
    socket.on('error', this.onError);
  }

  read(count: number): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      this.waiting = { count, resolve, reject };
      this.settle();
    });
  }

  /** Stops listening; returns unconsumed bytes. */
  detach(): Uint8Array {
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onEnd);
    this.socket.off('error', this.onError);
    return this.queue.take(this.queue.length);
  }

  private stop(err: Error): void {
    this.ended ??= err;
    this.settle();
  }

  private settle(): void {
    const w = this.waiting;
    if (!w) return;
    if (this.queue.length >= w.count) {
      this.waiting = undefined;
      w.resolve(this.queue.take(w.count).slice());
    } else if (this.ended) {
      this.waiting = undefined;
      w.reject(this.ended);
    }
  }
}

interface OptionReplyMessage {
  readonly type: number;
  readonly data: Uint8Array;
}

export async function negotiate(
  socket: Socket,
  exportName: string,
  options: { readonly structuredReplies: boolean },
): Promise<NegotiatedExport> {
  const reader = new HandshakeReader(socket);
  try {
    const result = await haggle(socket, reader, exportName, options.structuredReplies);
    return { ...result, leftover: reader.detach() };
  } catch (err) {
    reader.detach();
    throw err;
  }
}

async function haggle(
  socket: Socket,
  reader: HandshakeReader,
  exportName: string,
  wantStructured: boolean,
): Promise<Omit<NegotiatedExport, 'leftover'>> {
  const nameBytes = new TextEncoder().encode(exportName);
  if (nameBytes.length > NBD_MAX_STRING) {
    throw handshakeError(`export name of ${nameBytes.length} bytes exceeds ${NBD_MAX_STRING}`);
  }
  const greeting = NbdNewHandshake.read(await reader.read(NbdNewHandshake.size));
  if (greeting.nbdmagic !== NBD_MAGIC) {
    throw handshakeError(`not an NBD server (magic 0x${greeting.nbdmagic.toString(16)})`);
  }
  if (greeting.version === NBD_CLISERV_MAGIC) {
    throw handshakeError('the server speaks oldstyle negotiation, which is not supported');
  }
  if (greeting.version !== NBD_OPTS_MAGIC) {
    throw handshakeError(`unknown negotiation magic 0x${greeting.version.toString(16)}`);
  }
  const fixed = (greeting.gflags & HandshakeFlag.FixedNewstyle) !== 0;
  const noZeroes = (greeting.gflags & HandshakeFlag.NoZeroes) !== 0;
  const clientFlags = new Uint8Array(4);
  new DataView(clientFlags.buffer).setUint32(
    0,
    (fixed ? ClientFlag.FixedNewstyle : 0) | (noZeroes ? ClientFlag.NoZeroes : 0),
    false,
  );
  socket.write(clientFlags);

  const send = (option: Option, data: Uint8Array = new Uint8Array(0)): void => {
    const out = new Uint8Array(NbdNewOption.size + data.length);
    NbdNewOption.writeInto(out, 0, { version: NBD_OPTS_MAGIC, option, optlen: data.length });
    out.set(data, NbdNewOption.size);
    socket.write(out);
  };
  const receive = async (option: Option): Promise<OptionReplyMessage> => {
    const header = NbdFixedNewOptionReply.read(await reader.read(NbdFixedNewOptionReply.size));
    if (header.magic !== NBD_REP_MAGIC) {
      throw handshakeError(`bad option reply magic 0x${header.magic.toString(16)}`);
    }
    if (header.option !== option) {
      throw handshakeError(
        `reply to option ${nameOf(Option, header.option)} while waiting for ${nameOf(Option, option)}`,
      );
    }
    if (header.replylen > MAX_OPTION_REPLY) {
      throw handshakeError(`option reply of ${header.replylen} bytes exceeds ${MAX_OPTION_REPLY}`);
    }
    const data = header.replylen > 0 ? await reader.read(header.replylen) : new Uint8Array(0);
    return { type: header.reply, data };
  };

  if (!fixed) return exportNameOption(send, reader, nameBytes, noZeroes, false);

  let structuredReplies = false;
  if (wantStructured) {
    send(Option.StructuredReply);
    const reply = await receive(Option.StructuredReply);
    if (reply.type === OptionReply.Ack) structuredReplies = true;
    else if ((reply.type & OPTION_REPLY_ERROR_BIT) === 0) {
      throw handshakeError(
        `unexpected reply ${nameOf(OptionReply, reply.type)} to STRUCTURED_REPLY`,
      );
    }
  }

  const go = new Uint8Array(4 + nameBytes.length + 2 + 4);
  const goView = new DataView(go.buffer);
  goView.setUint32(0, nameBytes.length, false);
  go.set(nameBytes, 4);
  goView.setUint16(4 + nameBytes.length, 2, false);
  goView.setUint16(6 + nameBytes.length, InfoType.Export, false);
  goView.setUint16(8 + nameBytes.length, InfoType.BlockSize, false);
  send(Option.Go, go);

  let size: number | undefined;
  let flags = 0;
  let blocks = { minimumBlock: 1, preferredBlock: 4096, maximumBlock: 0xffffffff };
  for (;;) {
    const reply = await receive(Option.Go);
    if (reply.type === OptionReply.Info) {
      if (reply.data.length < 2) throw handshakeError('NBD_REP_INFO shorter than its type');
      const infoType = new DataView(reply.data.buffer, reply.data.byteOffset).getUint16(0, false);
      if (infoType === InfoType.Export) {
        if (reply.data.length !== NbdInfoExport.size) {
          throw handshakeError(`NBD_INFO_EXPORT of ${reply.data.length} bytes (must be 12)`);
        }
        const info = NbdInfoExport.read(reply.data);
        size = exportSize(info.exportsize);
        flags = info.eflags;
      } else if (infoType === InfoType.BlockSize) {
        if (reply.data.length !== NbdInfoBlockSize.size) {
          throw handshakeError(`NBD_INFO_BLOCK_SIZE of ${reply.data.length} bytes (must be 14)`);
        }
        const info = NbdInfoBlockSize.read(reply.data);
        blocks = checkBlockSizes(info.minimum, info.preferred, info.maximum);
      }
      // Other information types are ignored, as the spec requires.
      continue;
    }
    if (reply.type === OptionReply.Ack) {
      if (size === undefined) throw handshakeError('NBD_OPT_GO succeeded without NBD_INFO_EXPORT');
      return { size, flags, structuredReplies, ...blocks };
    }
    if (reply.type === OptionReply.ErrUnsup) {
      return exportNameOption(send, reader, nameBytes, noZeroes, structuredReplies);
    }
    const message = new TextDecoder().decode(reply.data);
    const what = nameOf(OptionReply, reply.type);
    throw handshakeError(
      `server refused export ${JSON.stringify(exportName)}: ${what}${message ? `: ${message}` : ''}`,
    );
  }
}

async function exportNameOption(
  send: (option: Option, data: Uint8Array) => void,
  reader: HandshakeReader,
  nameBytes: Uint8Array,
  noZeroes: boolean,
  structuredReplies: boolean,
): Promise<Omit<NegotiatedExport, 'leftover'>> {
  send(Option.ExportName, nameBytes);
  const bytes = await reader
    .read(NbdExportNameOptionReply.size + (noZeroes ? 0 : NBD_EXPORT_NAME_PADDING))
    .catch((err: Error) => {
      throw handshakeError(`${err.message} after NBD_OPT_EXPORT_NAME (unknown export?)`);
    });
  const reply = NbdExportNameOptionReply.read(bytes);
  return {
    size: exportSize(reply.exportsize),
    flags: reply.eflags,
    structuredReplies,
    minimumBlock: 1,
    preferredBlock: 4096,
    maximumBlock: 0xffffffff,
  };
}

function exportSize(value: bigint): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw handshakeError(`export size ${value} is too large`);
  }
  return Number(value);
}

const isPowerOfTwo = (n: number): boolean => n > 0 && (n & (n - 1)) === 0;

/** Checks NBD_INFO_BLOCK_SIZE against the rules of proto.md "Block size constraints". */
function checkBlockSizes(
  minimum: number,
  preferred: number,
  maximum: number,
): { minimumBlock: number; preferredBlock: number; maximumBlock: number } {
  if (!isPowerOfTwo(minimum) || minimum > 65536) {
    throw handshakeError(`minimum block size ${minimum} is not a power of two up to 65536`);
  }
  if (!isPowerOfTwo(preferred) || preferred < minimum) {
    throw handshakeError(`preferred block size ${preferred} is not valid (minimum ${minimum})`);
  }
  if (maximum !== 0xffffffff && (maximum < minimum || maximum % minimum !== 0)) {
    throw handshakeError(`maximum block size ${maximum} is not a multiple of ${minimum}`);
  }
  return { minimumBlock: minimum, preferredBlock: preferred, maximumBlock: maximum };
}

/** Whether the transmission flags allow a feature. */
export function hasFlag(flags: number, flag: TransmissionFlag): boolean {
  return (flags & flag) !== 0;
}
