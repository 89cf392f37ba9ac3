import { defineStruct, u16be, u32be, u64be } from '../wire/index.ts';

/**
 * The NBD wire protocol (NetworkBlockDevice/nbd doc/proto.md): magics, codes,
 * flags and the fixed-size headers. Everything on the wire is big-endian.
 * Variable-length parts (option data, reply payloads, write data) follow the
 * fixed headers and are parsed by their owners with explicit bounds.
 */

/** 'NBDMAGIC': first 8 bytes the server sends (proto.md "Newstyle negotiation"). */
export const NBD_MAGIC = 0x4e42444d41474943n;
/** 'IHAVEOPT': second greeting magic, and the magic of every client option. */
export const NBD_OPTS_MAGIC = 0x49484156454f5054n;
/** The oldstyle greeting's second magic; we do not speak oldstyle. */
export const NBD_CLISERV_MAGIC = 0x00420281861253n;
/** Magic of every fixed-newstyle option reply. */
export const NBD_REP_MAGIC = 0x3e889045565a9n;
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

/** The IANA port for NBD. */
export const NBD_DEFAULT_PORT = 10809;
/** Strings (export names, messages) MUST NOT exceed this many bytes. */
export const NBD_MAX_STRING = 4096;
/** Zero bytes that end an NBD_OPT_EXPORT_NAME reply unless NO_ZEROES was agreed. */
export const NBD_EXPORT_NAME_PADDING = 124;
/**
 * Request lengths below 2^25 must not be treated as abuse, whatever the
 * advertised maximum (proto.md "Block size constraints"); it is also the
 * maximum a client should assume when the server advertises none.
 */
export const NBD_DEFAULT_MAX_BLOCK = 32 * 1024 * 1024;

/** Handshake flags, 16 bits, sent by the server in the greeting. */
export enum HandshakeFlag {
  /** 0x0001: the server speaks fixed newstyle. */
  FixedNewstyle = 0x0001,
  /** 0x0002: the server will omit the 124 zero bytes if the client agrees. */
  NoZeroes = 0x0002,
}

/** Client flags, 32 bits, the client's answer to the greeting. */
export enum ClientFlag {
  /** 0x0001: the client speaks fixed newstyle. */
  FixedNewstyle = 0x0001,
  /** 0x0002: the client does not want the 124 zero bytes. */
  NoZeroes = 0x0002,
}

/** Transmission flags, 16 bits, describing what an export supports. */
export enum TransmissionFlag {
  /** 0x0001: always set. */
  HasFlags = 0x0001,
  /** 0x0002: the export is read-only; writes fail with EPERM. */
  ReadOnly = 0x0002,
  /** 0x0004: NBD_CMD_FLUSH is supported. */
  SendFlush = 0x0004,
  /** 0x0008: NBD_CMD_FLAG_FUA is supported. */
  SendFua = 0x0008,
  /** 0x0010: the medium is rotational (a scheduling hint). */
  Rotational = 0x0010,
  /** 0x0020: NBD_CMD_TRIM is supported. */
  SendTrim = 0x0020,
  /** 0x0040: NBD_CMD_WRITE_ZEROES and NBD_CMD_FLAG_NO_HOLE are supported. */
  SendWriteZeroes = 0x0040,
  /** 0x0080: NBD_CMD_FLAG_DF is supported on reads (structured replies only). */
  SendDf = 0x0080,
  /** 0x0100: flush and FUA on one connection are visible on all connections. */
  CanMultiConn = 0x0100,
  /** 0x0200: NBD_CMD_RESIZE (experimental). */
  SendResize = 0x0200,
  /** 0x0400: NBD_CMD_CACHE is understood. */
  SendCache = 0x0400,
  /** 0x0800: NBD_CMD_FLAG_FAST_ZERO is supported. */
  SendFastZero = 0x0800,
}

/** Option codes sent during option haggling. */
export enum Option {
  /** 1: choose an export and enter transmission; errors end the session. */
  ExportName = 1,
  /** 2: end the session (soft disconnect); the server acknowledges. */
  Abort = 2,
  /** 3: list the exports (NBD_REP_SERVER each, then NBD_REP_ACK). */
  List = 3,
  /** 4: withdrawn PEEK_EXPORT extension. */
  PeekExport = 4,
  /** 5: upgrade to TLS. */
  StartTls = 5,
  /** 6: describe an export without entering transmission. */
  Info = 6,
  /** 7: like Info, then enter transmission on NBD_REP_ACK. */
  Go = 7,
  /** 8: use structured replies in transmission. */
  StructuredReply = 8,
  /** 9: list metadata contexts. */
  ListMetaContext = 9,
  /** 10: select metadata contexts for NBD_CMD_BLOCK_STATUS. */
  SetMetaContext = 10,
  /** 11: use 64-bit extended headers. */
  ExtendedHeaders = 11,
}

/** Option reply types; errors have bit 31 set. */
export enum OptionReply {
  /** 1: the option succeeded / the list is complete. */
  Ack = 1,
  /** 2: one export of an NBD_OPT_LIST: u32 name length, name, description. */
  Server = 2,
  /** 3: one information item of NBD_OPT_INFO / NBD_OPT_GO: u16 type, payload. */
  Info = 3,
  /** 4: one metadata context: u32 id, name. */
  MetaContext = 4,
  /** 2^31+1: unknown option. */
  ErrUnsup = 0x80000001,
  /** 2^31+2: forbidden by server policy. */
  ErrPolicy = 0x80000002,
  /** 2^31+3: syntactically or semantically invalid option. */
  ErrInvalid = 0x80000003,
  /** 2^31+4: unsupported on this platform. */
  ErrPlatform = 0x80000004,
  /** 2^31+5: TLS required first. */
  ErrTlsReqd = 0x80000005,
  /** 2^31+6: no such export. */
  ErrUnknown = 0x80000006,
  /** 2^31+7: the server is shutting down. */
  ErrShutdown = 0x80000007,
  /** 2^31+8: the client must request NBD_INFO_BLOCK_SIZE first. */
  ErrBlockSizeReqd = 0x80000008,
  /** 2^31+9: request or reply too large. */
  ErrTooBig = 0x80000009,
}

/** Bit 31 marks an option reply as an error. */
export const OPTION_REPLY_ERROR_BIT = 0x80000000;

/** Information types carried by NBD_REP_INFO (and requested in Info/Go). */
export enum InfoType {
  /** 0: u64 size, u16 transmission flags (length 12 with the type). */
  Export = 0,
  /** 1: the canonical export name. */
  Name = 1,
  /** 2: a human-readable description. */
  Description = 2,
  /** 3: u32 minimum, preferred, maximum block size (length 14 with the type). */
  BlockSize = 3,
}

/** Transmission commands (request type field). */
export enum Command {
  /** 0: read length bytes at offset. */
  Read = 0,
  /** 1: write the length bytes that follow the header. */
  Write = 1,
  /** 2: disconnect after outstanding requests; no reply. */
  Disc = 2,
  /** 3: make all acknowledged writes durable. */
  Flush = 3,
  /** 4: the range is no longer needed (may be discarded). */
  Trim = 4,
  /** 5: prefetch hint. */
  Cache = 5,
  /** 6: write zeros without a payload. */
  WriteZeroes = 6,
  /** 7: metadata query. */
  BlockStatus = 7,
  /** 8: resize (experimental). */
  Resize = 8,
}

/** Command flags (request flags field). */
export enum CommandFlag {
  /** 0x0001: force unit access: reply only when the data is durable. */
  Fua = 0x0001,
  /** 0x0002: WRITE_ZEROES must allocate, not punch a hole. */
  NoHole = 0x0002,
  /** 0x0004: READ: at most one content chunk ("don't fragment"). */
  Df = 0x0004,
  /** 0x0008: BLOCK_STATUS: one extent only. */
  ReqOne = 0x0008,
  /** 0x0010: WRITE_ZEROES: fail with ENOTSUP unless faster than a write. */
  FastZero = 0x0010,
}

/** Structured reply chunk flags. */
export enum ReplyFlag {
  /** 0x0001: the final chunk of this reply. */
  Done = 0x0001,
}

/** Structured reply chunk types; error chunks have bit 15 set. */
export enum ReplyType {
  /** 0: no payload; ends a reply. */
  None = 0,
  /** 1: u64 offset then data. */
  OffsetData = 1,
  /** 2: u64 offset, u32 length of a range that reads as zeros. */
  OffsetHole = 2,
  /** 5: u32 context id then (u32 length, u32 flags) extents. */
  BlockStatus = 5,
  /** 2^15+1: u32 error, u16 message length, message. */
  Error = 0x8001,
  /** 2^15+2: u32 error, u16 message length, message, u64 offset. */
  ErrorOffset = 0x8002,
}

/** Bit 15 marks a structured reply chunk as an error chunk. */
export const REPLY_TYPE_ERROR_BIT = 0x8000;

/** Error values in replies (proto.md "Error values"); deliberately errno-like. */
export enum NbdError {
  /** 1: operation not permitted (write to a read-only export). */
  EPERM = 1,
  /** 5: input/output error. */
  EIO = 5,
  /** 12: cannot allocate memory. */
  ENOMEM = 12,
  /** 22: invalid argument (bad range, alignment, flags, unknown command). */
  EINVAL = 22,
  /** 28: no space left (write past the end). */
  ENOSPC = 28,
  /** 75: value too large (DF read that cannot be sent in one chunk). */
  EOVERFLOW = 75,
  /** 95: operation not supported (FAST_ZERO that would not be fast). */
  ENOTSUP = 95,
  /** 108: the server is shutting down. */
  ESHUTDOWN = 108,
}

// Fixed-size headers. C names as in common NBD implementations' protocol headers.

/** S: greeting of newstyle negotiation (18 bytes). */
export const NbdNewHandshake = defineStruct('nbd_new_handshake', {
  nbdmagic: u64be,
  version: u64be,
  gflags: u16be,
});

/** C: one option during haggling (16 bytes), then `optlen` bytes of data. */
export const NbdNewOption = defineStruct('nbd_new_option', {
  version: u64be,
  option: u32be,
  optlen: u32be,
});

/** S: one option reply (20 bytes), then `replylen` bytes of data. */
export const NbdFixedNewOptionReply = defineStruct('nbd_fixed_new_option_reply', {
  magic: u64be,
  option: u32be,
  reply: u32be,
  replylen: u32be,
});

/** S: answer to NBD_OPT_EXPORT_NAME (10 bytes, then 124 zeros unless NO_ZEROES). */
export const NbdExportNameOptionReply = defineStruct('nbd_export_name_option_reply', {
  exportsize: u64be,
  eflags: u16be,
});

/** NBD_REP_INFO payload for NBD_INFO_EXPORT (12 bytes). */
export const NbdInfoExport = defineStruct('nbd_fixed_new_option_reply_info_export', {
  info: u16be,
  exportsize: u64be,
  eflags: u16be,
});

/** NBD_REP_INFO payload for NBD_INFO_BLOCK_SIZE (14 bytes). */
export const NbdInfoBlockSize = defineStruct('nbd_fixed_new_option_reply_info_block_size', {
  info: u16be,
  minimum: u32be,
  preferred: u32be,
  maximum: u32be,
});

/** C: transmission request (28 bytes), then `count` bytes of data for WRITE. */
export const NbdRequest = defineStruct('nbd_request', {
  magic: u32be,
  flags: u16be,
  type: u16be,
  handle: u64be,
  offset: u64be,
  count: u32be,
});

/** S: simple reply (16 bytes), then the data of a successful READ. */
export const NbdSimpleReply = defineStruct('nbd_simple_reply', {
  magic: u32be,
  error: u32be,
  handle: u64be,
});

/** S: structured reply chunk header (20 bytes), then `length` bytes of payload. */
export const NbdStructuredReply = defineStruct('nbd_structured_reply', {
  magic: u32be,
  flags: u16be,
  type: u16be,
  handle: u64be,
  length: u32be,
});

/** Payload prefix of NBD_REPLY_TYPE_OFFSET_DATA (8 bytes), then the data. */
export const NbdStructuredReplyOffsetData = defineStruct('nbd_structured_reply_offset_data', {
  offset: u64be,
});

/** Payload of NBD_REPLY_TYPE_OFFSET_HOLE (12 bytes). */
export const NbdStructuredReplyOffsetHole = defineStruct('nbd_structured_reply_offset_hole', {
  offset: u64be,
  length: u32be,
});

/** Payload prefix of error chunks (6 bytes), then the message (and u64 offset for ERROR_OFFSET). */
export const NbdStructuredReplyError = defineStruct('nbd_structured_reply_error', {
  error: u32be,
  len: u16be,
});

/** Names for log and error messages; unknown values print as numbers. */
export function nameOf(table: Record<string | number, string | number>, value: number): string {
  const name = table[value];
  return typeof name === 'string' ? name : `0x${value.toString(16)}`;
}
