/**
 * RNDIS control messages: the requests netvsc sends (INITIALIZE, QUERY,
 * SET, KEEPALIVE, RESET, HALT) and the completions and status indications
 * the host answers with. Builders return whole messages; the reader takes a
 * private copy of a received message and bounds every offset and length to
 * it (rndis_filter_receive_response and rndis_filter_query_device's checks).
 */
import {
  RNDIS_HEADER_SIZE,
  RNDIS_MSG_COMPLETION,
  RndisMessageType,
  rndisIndicateStatus,
  rndisInitializeComplete,
  rndisInitializeRequest,
  rndisQueryComplete,
  rndisQueryRequest,
  rndisSetComplete,
  rndisSetRequest,
} from './rndis-protocol.ts';

function message(type: number, bodyLength: number): { bytes: Uint8Array; view: DataView } {
  const bytes = new Uint8Array(RNDIS_HEADER_SIZE + bodyLength);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, type, true);
  view.setUint32(4, bytes.length, true);
  return { bytes, view };
}

export function buildInitializeRequest(reqId: number, maxTransfer = 0x4000): Uint8Array {
  const { bytes } = message(RndisMessageType.Initialize, rndisInitializeRequest.size);
  rndisInitializeRequest.writeInto(bytes, RNDIS_HEADER_SIZE, {
    req_id: reqId,
    major_ver: 1,
    minor_ver: 0,
    max_xfer_size: maxTransfer,
  });
  return bytes;
}

/** QUERY with an optional input buffer (Linux sends one for the offload and RSS objects). */
export function buildQueryRequest(reqId: number, oid: number, input?: Uint8Array): Uint8Array {
  const inLength = input?.length ?? 0;
  const { bytes } = message(RndisMessageType.Query, rndisQueryRequest.size + inLength);
  rndisQueryRequest.writeInto(bytes, RNDIS_HEADER_SIZE, {
    req_id: reqId,
    oid,
    info_buflen: inLength,
    info_buf_offset: rndisQueryRequest.size,
    dev_vc_handle: 0,
  });
  if (input) bytes.set(input, RNDIS_HEADER_SIZE + rndisQueryRequest.size);
  return bytes;
}

export function buildSetRequest(reqId: number, oid: number, value: Uint8Array): Uint8Array {
  const at = rndisSetRequest.offsetOf('info_buf');
  const { bytes } = message(RndisMessageType.Set, at + value.length);
  rndisSetRequest.writeInto(bytes, RNDIS_HEADER_SIZE, {
    req_id: reqId,
    oid,
    info_buflen: value.length,
    info_buf_offset: at,
    dev_vc_handle: 0,
  });
  bytes.set(value, RNDIS_HEADER_SIZE + at);
  return bytes;
}

/** KEEPALIVE and HALT: a request id only. */
export function buildSimpleRequest(type: RndisMessageType, reqId: number): Uint8Array {
  const { bytes, view } = message(type, 4);
  view.setUint32(RNDIS_HEADER_SIZE, reqId, true);
  return bytes;
}

export function buildResetRequest(): Uint8Array {
  return message(RndisMessageType.Reset, 4).bytes;
}

export interface InitializeAnswer {
  readonly maxPacketsPerMessage: number;
  readonly maxTransferSize: number;
  /** log2 of the packet alignment. */
  readonly alignmentFactor: number;
}

export function buildInitializeComplete(
  reqId: number,
  status: number,
  answer: InitializeAnswer,
): Uint8Array {
  const { bytes } = message(RndisMessageType.InitializeComplete, rndisInitializeComplete.size);
  rndisInitializeComplete.writeInto(bytes, RNDIS_HEADER_SIZE, {
    req_id: reqId,
    status,
    major_ver: 1,
    minor_ver: 0,
    dev_flags: 1,
    medium: 0,
    max_pkt_per_msg: answer.maxPacketsPerMessage,
    max_xfer_size: answer.maxTransferSize,
    pkt_alignment_factor: answer.alignmentFactor,
    af_list_offset: 0,
    af_list_size: 0,
  });
  return bytes;
}

export function buildQueryComplete(reqId: number, status: number, info: Uint8Array): Uint8Array {
  const { bytes } = message(RndisMessageType.QueryComplete, rndisQueryComplete.size + info.length);
  rndisQueryComplete.writeInto(bytes, RNDIS_HEADER_SIZE, {
    req_id: reqId,
    status,
    info_buflen: info.length,
    info_buf_offset: info.length > 0 ? rndisQueryComplete.size : 0,
  });
  bytes.set(info, RNDIS_HEADER_SIZE + rndisQueryComplete.size);
  return bytes;
}

/** SET_C and KEEPALIVE_C: request id and status. */
export function buildStatusComplete(type: RndisMessageType, reqId: number, status: number) {
  const { bytes } = message(type, rndisSetComplete.size);
  rndisSetComplete.writeInto(bytes, RNDIS_HEADER_SIZE, { req_id: reqId, status });
  return bytes;
}

export function buildResetComplete(status: number): Uint8Array {
  const { bytes, view } = message(RndisMessageType.ResetComplete, 8);
  view.setUint32(RNDIS_HEADER_SIZE, status, true);
  view.setUint32(RNDIS_HEADER_SIZE + 4, 1, true);
  return bytes;
}

export function buildIndicateStatus(status: number, buffer = new Uint8Array(0)): Uint8Array {
  const { bytes } = message(
    RndisMessageType.IndicateStatus,
    rndisIndicateStatus.size + buffer.length,
  );
  rndisIndicateStatus.writeInto(bytes, RNDIS_HEADER_SIZE, {
    status,
    status_buflen: buffer.length,
    status_buf_offset: buffer.length > 0 ? rndisIndicateStatus.size : 0,
  });
  bytes.set(buffer, RNDIS_HEADER_SIZE + rndisIndicateStatus.size);
  return bytes;
}

/** A control message as read: its type, request id, status and information buffer. */
export interface ControlMessage {
  readonly type: number;
  /** The request id (0 for RESET, RESET_C and INDICATE_STATUS, which carry none). */
  readonly reqId: number;
  /** Completions and indications: their status. */
  readonly status: number;
  /** QUERY / SET: the OID. */
  readonly oid: number;
  /** QUERY / SET input, QUERY_C output, INDICATE_STATUS buffer (a view of the message). */
  readonly info: Uint8Array;
  /** INITIALIZE_C fields, INITIALIZE's max transfer size. */
  readonly init?: InitializeAnswer & { readonly majorVersion: number };
}

const EMPTY = new Uint8Array(0);

/** The information buffer at `offset`/`length` of a body, or an error when it leaves the body. */
function infoOf(body: Uint8Array, offset: number, length: number, minOffset: number) {
  if (length === 0) return EMPTY;
  if (offset < minOffset || offset > body.length || length > body.length - offset) {
    return `information buffer ${offset}+${length} is outside the ${body.length}-byte body`;
  }
  return body.subarray(offset, offset + length);
}

/**
 * Reads a control message (a private copy of `length` bytes). Returns a
 * string for a message that does not hold what its type needs.
 */
export function readControl(bytes: Uint8Array): ControlMessage | string {
  if (bytes.length < RNDIS_HEADER_SIZE) return `RNDIS message of ${bytes.length} bytes`;
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const type = v.getUint32(0, true);
  const msgLen = v.getUint32(4, true);
  if (msgLen < RNDIS_HEADER_SIZE || msgLen > bytes.length) {
    return `RNDIS msg_len ${msgLen} is outside ${RNDIS_HEADER_SIZE}..${bytes.length}`;
  }
  const body = bytes.subarray(RNDIS_HEADER_SIZE, msgLen);
  const bv = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const need = (n: number): string | undefined =>
    body.length < n
      ? `${RndisMessageType[type] ?? type} body of ${body.length} bytes < ${n}`
      : undefined;
  const u32 = (at: number): number => bv.getUint32(at, true);
  switch (type) {
    case RndisMessageType.Initialize: {
      const short = need(rndisInitializeRequest.size);
      if (short) return short;
      return {
        type,
        reqId: u32(0),
        status: 0,
        oid: 0,
        info: EMPTY,
        init: {
          majorVersion: u32(4),
          maxPacketsPerMessage: 0,
          maxTransferSize: u32(12),
          alignmentFactor: 0,
        },
      };
    }
    case RndisMessageType.Query:
    case RndisMessageType.Set: {
      const short = need(rndisQueryRequest.size);
      if (short) return short;
      const info = infoOf(body, u32(12), u32(8), 0);
      if (typeof info === 'string') return info;
      return { type, reqId: u32(0), status: 0, oid: u32(4), info };
    }
    case RndisMessageType.Keepalive:
    case RndisMessageType.Halt: {
      const short = need(4);
      if (short) return short;
      return { type, reqId: u32(0), status: 0, oid: 0, info: EMPTY };
    }
    case RndisMessageType.Reset:
      return { type, reqId: 0, status: 0, oid: 0, info: EMPTY };
    case RndisMessageType.InitializeComplete: {
      const short = need(rndisInitializeComplete.size);
      if (short) return short;
      return {
        type,
        reqId: u32(0),
        status: u32(4),
        oid: 0,
        info: EMPTY,
        init: {
          majorVersion: u32(8),
          maxPacketsPerMessage: u32(24),
          maxTransferSize: u32(28),
          alignmentFactor: u32(32),
        },
      };
    }
    case RndisMessageType.QueryComplete: {
      const short = need(rndisQueryComplete.size);
      if (short) return short;
      const info = infoOf(body, u32(12), u32(8), rndisQueryComplete.size);
      if (typeof info === 'string') return info;
      return { type, reqId: u32(0), status: u32(4), oid: 0, info };
    }
    case RndisMessageType.SetComplete:
    case RndisMessageType.KeepaliveComplete: {
      const short = need(8);
      if (short) return short;
      return { type, reqId: u32(0), status: u32(4), oid: 0, info: EMPTY };
    }
    case RndisMessageType.ResetComplete: {
      const short = need(4);
      if (short) return short;
      return { type, reqId: 0, status: u32(0), oid: 0, info: EMPTY };
    }
    case RndisMessageType.IndicateStatus: {
      const short = need(rndisIndicateStatus.size);
      if (short) return short;
      const info = infoOf(body, u32(8), u32(4), rndisIndicateStatus.size);
      if (typeof info === 'string') return info;
      return { type, reqId: 0, status: u32(0), oid: 0, info };
    }
    default:
      return `RNDIS message type 0x${(type >>> 0).toString(16)} is not a control message${type & RNDIS_MSG_COMPLETION ? ' the NIC uses' : ''}`;
  }
}
