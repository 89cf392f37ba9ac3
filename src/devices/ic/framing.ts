/**
 * IC message framing: the pipe header and IC header in front of every
 * integration-service message. Readers are bounded to the message; writers
 * build a request or turn a received request into its in-place response
 * (Linux drivers/hv/hv_util.c: same bytes and length, status set, icflags =
 * TRANSACTION | RESPONSE).
 */
import {
  ICMSG_HDR,
  IcHeaderFlags,
  icmsgHdr,
  PIPE_HDR_SIZE,
  PIPE_PACKET_TYPE_DATA,
  vmbuspipeHdr,
} from './protocol.ts';

const FRAME_MAJOR = icmsgHdr.uint('icverframe.major');
const FRAME_MINOR = icmsgHdr.uint('icverframe.minor');
const MSG_TYPE = icmsgHdr.uint('icmsgtype');
const MSG_MAJOR = icmsgHdr.uint('icvermsg.major');
const MSG_MINOR = icmsgHdr.uint('icvermsg.minor');
const MSG_SIZE = icmsgHdr.uint('icmsgsize');
const STATUS = icmsgHdr.uint('status');
const TRANSACTION = icmsgHdr.uint('ictransaction_id');
const FLAGS = icmsgHdr.uint('icflags');

/** The fields of an IC header, versions as major << 16 | minor. */
export interface IcHeader {
  readonly framework: number;
  readonly type: number;
  readonly messageVersion: number;
  readonly messageSize: number;
  readonly status: number;
  readonly transactionId: number;
  readonly flags: number;
}

function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * Reads the IC header of a message of `bytes.length` bytes. A message too
 * short to hold both headers is an error (Linux drops those: "Packet length
 * too small").
 */
export function readIcHeader(bytes: Uint8Array): IcHeader | string {
  if (bytes.length < ICMSG_HDR) {
    return `IC message of ${bytes.length} bytes is shorter than its ${ICMSG_HDR}-byte headers`;
  }
  const v = viewOf(bytes);
  const b = PIPE_HDR_SIZE;
  return {
    framework: ((FRAME_MAJOR.get(v, b) << 16) | FRAME_MINOR.get(v, b)) >>> 0,
    type: MSG_TYPE.get(v, b),
    messageVersion: ((MSG_MAJOR.get(v, b) << 16) | MSG_MINOR.get(v, b)) >>> 0,
    messageSize: MSG_SIZE.get(v, b),
    status: STATUS.get(v, b),
    transactionId: TRANSACTION.get(v, b),
    flags: FLAGS.get(v, b),
  };
}

/** The message type of a message already known to hold the headers. */
export function messageType(bytes: Uint8Array): number {
  return MSG_TYPE.get(viewOf(bytes), PIPE_HDR_SIZE);
}

/** Rewrites a received request into its response, in place. */
export function markResponse(bytes: Uint8Array, status: number): void {
  const v = viewOf(bytes);
  STATUS.set(v, PIPE_HDR_SIZE, status >>> 0);
  FLAGS.set(v, PIPE_HDR_SIZE, IcHeaderFlags.Transaction | IcHeaderFlags.Response);
}

/** Sets icmsgsize (negotiation responses carry 0x10). */
export function setMessageSize(bytes: Uint8Array, size: number): void {
  MSG_SIZE.set(viewOf(bytes), PIPE_HDR_SIZE, size);
}

export interface IcRequestHeader {
  readonly type: number;
  readonly framework: number;
  readonly messageVersion: number;
  /** Defaults to TRANSACTION | REQUEST. */
  readonly flags?: number;
}

/**
 * Builds a request: pipe header (data, msgsize = IC header + body), IC
 * header, then `body` (or that many zero bytes, for the caller to fill).
 */
export function buildIcMessage(header: IcRequestHeader, body: Uint8Array | number): Uint8Array {
  const bodyLength = typeof body === 'number' ? body : body.length;
  const out = new Uint8Array(ICMSG_HDR + bodyLength);
  vmbuspipeHdr.writeInto(out, 0, {
    flags: PIPE_PACKET_TYPE_DATA,
    msgsize: icmsgHdr.size + bodyLength,
  });
  icmsgHdr.writeInto(out, PIPE_HDR_SIZE, {
    icverframe: { major: header.framework >>> 16, minor: header.framework & 0xffff },
    icmsgtype: header.type,
    icvermsg: { major: header.messageVersion >>> 16, minor: header.messageVersion & 0xffff },
    icmsgsize: Math.min(bodyLength, 0xffff),
    status: 0,
    ictransaction_id: 0,
    icflags: header.flags ?? IcHeaderFlags.Transaction | IcHeaderFlags.Request,
  });
  if (typeof body !== 'number') out.set(body, ICMSG_HDR);
  return out;
}

/** The body of a message (everything after the two headers). */
export function messageBody(bytes: Uint8Array): Uint8Array {
  return bytes.subarray(ICMSG_HDR);
}
