import { acquirePayloadBuffer } from '../payload-buffers.ts';
import {
  InfoType,
  NBD_EXPORT_NAME_PADDING,
  NBD_MAX_STRING,
  NBD_REP_MAGIC,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
  NbdExportNameOptionReply,
  NbdFixedNewOptionReply,
  NbdInfoBlockSize,
  NbdInfoExport,
  NbdSimpleReply,
  NbdStructuredReply,
  NbdStructuredReplyError,
  OptionReply,
  ReplyFlag,
  ReplyType,
} from '../protocol.ts';

/**
 * Encoders for what the server sends: option replies during haggling and
 * simple / structured replies during transmission. Each reply is built into
 * one buffer so that it reaches the socket in a single write and can never
 * interleave with another reply.
 */

const utf8 = new TextEncoder();

/** UTF-8 bytes of `text`, cut at a character boundary to at most `max` bytes. */
export function boundedUtf8(text: string, max = NBD_MAX_STRING): Uint8Array {
  const bytes = utf8.encode(text);
  if (bytes.length <= max) return bytes;
  let end = max;
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end);
}

/** One option reply: the 20-byte header and its data. */
export function optionReply(option: number, type: number, data?: Uint8Array): Uint8Array {
  const length = data?.length ?? 0;
  const out = new Uint8Array(NbdFixedNewOptionReply.size + length);
  NbdFixedNewOptionReply.writeInto(out, 0, {
    magic: NBD_REP_MAGIC,
    option,
    reply: type,
    replylen: length,
  });
  if (data) out.set(data, NbdFixedNewOptionReply.size);
  return out;
}

/** An error option reply with a human-readable message. */
export function optionError(option: number, type: OptionReply, message: string): Uint8Array {
  return optionReply(option, type, boundedUtf8(message));
}

/** NBD_REP_SERVER: u32 name length, name, then the description. */
export function serverEntry(option: number, name: string, description: string): Uint8Array {
  const nameBytes = utf8.encode(name);
  const descBytes = boundedUtf8(description);
  const data = new Uint8Array(4 + nameBytes.length + descBytes.length);
  new DataView(data.buffer).setUint32(0, nameBytes.length, false);
  data.set(nameBytes, 4);
  data.set(descBytes, 4 + nameBytes.length);
  return optionReply(option, OptionReply.Server, data);
}

export function infoExport(option: number, size: number, flags: number): Uint8Array {
  return optionReply(
    option,
    OptionReply.Info,
    NbdInfoExport.write({ info: InfoType.Export, exportsize: size, eflags: flags }),
  );
}

export function infoBlockSize(
  option: number,
  minimum: number,
  preferred: number,
  maximum: number,
): Uint8Array {
  return optionReply(
    option,
    OptionReply.Info,
    NbdInfoBlockSize.write({ info: InfoType.BlockSize, minimum, preferred, maximum }),
  );
}

/** NBD_INFO_NAME or NBD_INFO_DESCRIPTION: u16 type, then the string. */
export function infoString(option: number, type: InfoType, text: string): Uint8Array {
  const bytes = boundedUtf8(text);
  const data = new Uint8Array(2 + bytes.length);
  new DataView(data.buffer).setUint16(0, type, false);
  data.set(bytes, 2);
  return optionReply(option, OptionReply.Info, data);
}

/** The reply that ends NBD_OPT_EXPORT_NAME: size, flags, then 124 zeros unless NO_ZEROES. */
export function exportNameReply(size: number, flags: number, noZeroes: boolean): Uint8Array {
  const out = new Uint8Array(
    NbdExportNameOptionReply.size + (noZeroes ? 0 : NBD_EXPORT_NAME_PADDING),
  );
  NbdExportNameOptionReply.writeInto(out, 0, { exportsize: size, eflags: flags });
  return out;
}

const simpleMagic = NbdSimpleReply.uint('magic');
const simpleError = NbdSimpleReply.uint('error');
const simpleHandle = NbdSimpleReply.offsetOf('handle');
const chunkMagic = NbdStructuredReply.uint('magic');
const chunkFlags = NbdStructuredReply.uint('flags');
const chunkType = NbdStructuredReply.uint('type');
const chunkHandle = NbdStructuredReply.offsetOf('handle');
const chunkLength = NbdStructuredReply.uint('length');

export const SIMPLE_REPLY_SIZE = NbdSimpleReply.size;
export const CHUNK_HEADER_SIZE = NbdStructuredReply.size;
/** Header plus the 8-byte offset of NBD_REPLY_TYPE_OFFSET_DATA. */
export const OFFSET_DATA_PREFIX = NbdStructuredReply.size + 8;

/** Writes a simple reply header at the start of `out` (data, if any, follows it). */
export function writeSimpleReply(out: Uint8Array, error: number, handle: Uint8Array): void {
  const view = new DataView(out.buffer, out.byteOffset, SIMPLE_REPLY_SIZE);
  simpleMagic.set(view, 0, NBD_SIMPLE_REPLY_MAGIC);
  simpleError.set(view, 0, error);
  out.set(handle, simpleHandle);
}

/** Writes a structured chunk header at the start of `out`. */
export function writeChunkHeader(
  out: Uint8Array,
  flags: number,
  type: number,
  handle: Uint8Array,
  length: number,
): void {
  const view = new DataView(out.buffer, out.byteOffset, CHUNK_HEADER_SIZE);
  chunkMagic.set(view, 0, NBD_STRUCTURED_REPLY_MAGIC);
  chunkFlags.set(view, 0, flags);
  chunkType.set(view, 0, type);
  out.set(handle, chunkHandle);
  chunkLength.set(view, 0, length);
}

/**
 * A buffer laid out as one final NBD_REPLY_TYPE_OFFSET_DATA chunk for
 * `length` bytes at `offset`; the caller reads the data into
 * `out.subarray(OFFSET_DATA_PREFIX)`.
 */
export function offsetDataReply(handle: Uint8Array, offset: number, length: number): Uint8Array {
  const out = acquirePayloadBuffer(OFFSET_DATA_PREFIX + length);
  writeChunkHeader(out, ReplyFlag.Done, ReplyType.OffsetData, handle, 8 + length);
  new DataView(out.buffer, out.byteOffset + CHUNK_HEADER_SIZE, 8).setBigUint64(
    0,
    BigInt(offset),
    false,
  );
  return out;
}

/** The final NBD_REPLY_TYPE_NONE chunk: success without payload. */
export function noneReply(handle: Uint8Array): Uint8Array {
  const out = new Uint8Array(CHUNK_HEADER_SIZE);
  writeChunkHeader(out, ReplyFlag.Done, ReplyType.None, handle, 0);
  return out;
}

/** A simple reply without data (success of a non-read, or any error). */
export function simpleReply(handle: Uint8Array, error: number): Uint8Array {
  const out = new Uint8Array(SIMPLE_REPLY_SIZE);
  writeSimpleReply(out, error, handle);
  return out;
}

/**
 * A final error chunk: NBD_REPLY_TYPE_ERROR_OFFSET when `offset` is given,
 * else NBD_REPLY_TYPE_ERROR, with `message` for a human.
 */
export function errorReply(
  handle: Uint8Array,
  error: number,
  message: string,
  offset?: number,
): Uint8Array {
  const text = boundedUtf8(message);
  const withOffset = offset !== undefined;
  const length = NbdStructuredReplyError.size + text.length + (withOffset ? 8 : 0);
  const out = new Uint8Array(CHUNK_HEADER_SIZE + length);
  writeChunkHeader(
    out,
    ReplyFlag.Done,
    withOffset ? ReplyType.ErrorOffset : ReplyType.Error,
    handle,
    length,
  );
  NbdStructuredReplyError.writeInto(out, CHUNK_HEADER_SIZE, { error, len: text.length });
  out.set(text, CHUNK_HEADER_SIZE + NbdStructuredReplyError.size);
  if (withOffset) {
    new DataView(out.buffer, out.byteOffset + out.length - 8, 8).setBigUint64(
      0,
      BigInt(offset),
      false,
    );
  }
  return out;
}
