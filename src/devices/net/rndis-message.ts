/**
 * Reading and writing RNDIS messages: the data packet with its per-packet
 * info (both directions of the data path, so the writer writes into the
 * caller's buffer and the reader copies nothing), and the control messages.
 *
 * The reader treats its input as hostile, as Linux's rndis_filter.c must:
 * msg_len within the bytes received, data offset and length inside the
 * message, every per-packet-info entry inside the PPI area with its value
 * inside the entry — and an entry of size 0 ends the walk (Linux's loop
 * would spin on it).
 */
import {
  ChecksumInfo,
  LsoInfo,
  PpiType,
  RNDIS_HEADER_SIZE,
  RNDIS_PKTINFO_ID,
  RndisMessageType,
  rndisPacket,
} from './rndis-protocol.ts';

/** rndis_packet, after the 8-byte header. */
export const PACKET_HEADER = RNDIS_HEADER_SIZE + rndisPacket.size;
/** One per-packet-info entry: 12-byte header, then its value. */
const PPI_HEADER = 12;

/** What the data path knows of a frame besides its bytes. */
export interface FrameInfo {
  /** ndis_tcp_ip_checksum_info.value, or 0 (tx: checksums asked for; rx: what was verified). */
  checksum: number;
  /** ndis_tcp_lso_info.value (LSOv2 transmit), or 0. */
  lso: number;
  /** ndis_pkt_8021q_info.value, or -1 when absent. */
  vlan: number;
  /** NBL_HASH_VALUE, or -1 when absent. */
  hash: number;
  /** rndis_pktinfo_id flags of an RSC fragment (RndisPktinfoFlag), or 0. */
  fragment: number;
}

export function emptyFrameInfo(): FrameInfo {
  return { checksum: 0, lso: 0, vlan: -1, hash: -1, fragment: 0 };
}

/** Bytes of the header and per-packet info `writePacket` puts before a frame with `info`. */
export function packetOverhead(info: FrameInfo): number {
  let n = PACKET_HEADER;
  if (info.checksum) n += PPI_HEADER + 4;
  if (info.lso) n += PPI_HEADER + 4;
  if (info.vlan >= 0) n += PPI_HEADER + 4;
  if (info.hash >= 0) n += PPI_HEADER + 4;
  if (info.fragment) n += PPI_HEADER + 4;
  return n;
}

function putPpi(view: DataView, at: number, type: number, value: number): number {
  view.setUint32(at, PPI_HEADER + 4, true);
  view.setUint32(at + 4, type, true);
  view.setUint32(at + 8, PPI_HEADER, true);
  view.setUint32(at + 12, value >>> 0, true);
  return at + PPI_HEADER + 4;
}

/**
 * Writes the RNDIS_MSG_PACKET header and per-packet info for a frame of
 * `frameLength` bytes at `at` of `target`; the frame itself goes at the
 * returned offset (the caller copies it there). msg_len covers the frame.
 */
export function writePacketHeader(
  target: DataView,
  at: number,
  frameLength: number,
  info: FrameInfo,
): number {
  const headerLength = packetOverhead(info);
  const ppiLength = headerLength - PACKET_HEADER;
  target.setUint32(at, RndisMessageType.Packet, true);
  target.setUint32(at + 4, headerLength + frameLength, true);
  const body = at + RNDIS_HEADER_SIZE;
  // Offsets count from the rndis_packet body.
  target.setUint32(body, headerLength - RNDIS_HEADER_SIZE, true);
  target.setUint32(body + 4, frameLength, true);
  for (let i = 8; i < rndisPacket.size; i += 4) target.setUint32(body + i, 0, true);
  if (ppiLength > 0) {
    target.setUint32(body + 20, rndisPacket.size, true);
    target.setUint32(body + 24, ppiLength, true);
  }
  let p = at + PACKET_HEADER;
  if (info.checksum) p = putPpi(target, p, PpiType.TcpIpChecksum, info.checksum);
  if (info.lso) p = putPpi(target, p, PpiType.TcpLargeSend, info.lso);
  if (info.vlan >= 0) p = putPpi(target, p, PpiType.Ieee8021q, info.vlan);
  if (info.hash >= 0) p = putPpi(target, p, PpiType.HashValue, info.hash);
  // rndis_pktinfo_id {ver, flag, pkt_id}: an internal type (the high bit set).
  if (info.fragment)
    p = putPpi(target, p, (RNDIS_PKTINFO_ID | 0x8000_0000) >>> 0, info.fragment << 8);
  return p;
}

/** A parsed data packet: where the frame is in the message, and its info. */
export interface ParsedPacket {
  dataOffset: number;
  dataLength: number;
  readonly info: FrameInfo;
}

/**
 * Reads an RNDIS_MSG_PACKET of `length` bytes at `at` of `view` into
 * `out`; returns an error string, or undefined when the frame is at
 * out.dataOffset (from `at`) for out.dataLength bytes.
 */
export function readPacket(
  view: DataView,
  at: number,
  length: number,
  out: ParsedPacket,
): string | undefined {
  if (length < PACKET_HEADER) return `RNDIS packet of ${length} bytes is shorter than its header`;
  const msgLen = view.getUint32(at + 4, true);
  if (msgLen < PACKET_HEADER || msgLen > length) {
    return `RNDIS msg_len ${msgLen} is outside ${PACKET_HEADER}..${length}`;
  }
  const body = at + RNDIS_HEADER_SIZE;
  const bodyLength = msgLen - RNDIS_HEADER_SIZE;
  const dataOffset = view.getUint32(body, true);
  const dataLength = view.getUint32(body + 4, true);
  if (dataOffset < rndisPacket.size || dataOffset > bodyLength) {
    return `RNDIS data offset ${dataOffset} is outside ${rndisPacket.size}..${bodyLength}`;
  }
  if (dataLength > bodyLength - dataOffset) {
    return `RNDIS data length ${dataLength} runs past the message (${bodyLength - dataOffset} bytes left)`;
  }
  const info = out.info;
  info.checksum = 0;
  info.lso = 0;
  info.vlan = -1;
  info.hash = -1;
  info.fragment = 0;
  const ppiOffset = view.getUint32(body + 20, true);
  const ppiLength = view.getUint32(body + 24, true);
  if (ppiOffset !== 0 && ppiLength !== 0) {
    if (ppiOffset < rndisPacket.size || ppiOffset > bodyLength) {
      return `per-packet info offset ${ppiOffset} is outside ${rndisPacket.size}..${bodyLength}`;
    }
    if (ppiLength > bodyLength - ppiOffset) {
      return `per-packet info length ${ppiLength} runs past the message`;
    }
    const problem = readPpis(view, body + ppiOffset, ppiLength, info);
    if (problem) return problem;
  }
  out.dataOffset = RNDIS_HEADER_SIZE + dataOffset;
  out.dataLength = dataLength;
  return undefined;
}

function readPpis(view: DataView, at: number, length: number, info: FrameInfo): string | undefined {
  let left = length;
  let p = at;
  // Each entry takes at least its 12-byte header, so this ends.
  while (left >= PPI_HEADER) {
    const size = view.getUint32(p, true);
    const word = view.getUint32(p + 4, true);
    const offset = view.getUint32(p + 8, true);
    if (size < PPI_HEADER || size > left) {
      return `per-packet info entry of size ${size} (${left} bytes left)`;
    }
    if (offset < PPI_HEADER || offset > size) {
      return `per-packet info value offset ${offset} is outside ${PPI_HEADER}..${size}`;
    }
    const type = word & 0x7fff_ffff;
    const internal = word >>> 31;
    if (size - offset >= 4) {
      const value = view.getUint32(p + offset, true);
      if (internal === 0) {
        if (type === PpiType.TcpIpChecksum) info.checksum = value;
        else if (type === PpiType.TcpLargeSend) info.lso = value;
        else if (type === PpiType.Ieee8021q) info.vlan = value;
        else if (type === PpiType.HashValue) info.hash = value;
      } else if (type === RNDIS_PKTINFO_ID) {
        info.fragment = (value >>> 8) & 0xff;
      }
    }
    p += size;
    left -= size;
  }
  return undefined;
}

/** Whether a transmit checksum request asks for a TCP or UDP checksum. */
export function wantsL4Checksum(checksum: number): boolean {
  return (checksum & (ChecksumInfo.txTcp | ChecksumInfo.txUdp)) !== 0;
}

/** The MSS of an LSOv2 transmit request. */
export function lsoMss(lso: number): number {
  return lso & LsoInfo.mssMask;
}

/** An LSOv2 transmit request for this MSS and TCP header offset. */
export function lsoValue(mss: number, tcpHeaderOffset: number, ipv6: boolean): number {
  return (
    ((mss & LsoInfo.mssMask) |
      ((tcpHeaderOffset & LsoInfo.tcpHeaderOffsetMask) << LsoInfo.tcpHeaderOffsetShift) |
      LsoInfo.typeV2 |
      (ipv6 ? LsoInfo.ipv6 : 0)) >>>
    0
  );
}
