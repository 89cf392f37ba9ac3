/**
 * Ethernet frames as the NIC's offloads need them: where the IP and TCP/UDP
 * headers are, the Internet checksum (RFC 1071) over a pseudo-header, TCP
 * segmentation of a large send (what LSOv2 delegates: RFC 793 sequence
 * numbers, IPv4 ids, flags on the last segment only). Frames are
 * untrusted bytes: every reader checks lengths and answers undefined for
 * what it cannot parse.
 */

export const ETH_HLEN = 14;
const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_IPV6 = 0x86dd;
const ETHERTYPE_VLAN = 0x8100;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

/** Where a frame's headers are. */
export interface FrameLayout {
  readonly ipv6: boolean;
  /** Offset of the IP header. */
  readonly l3: number;
  /** Offset of the TCP/UDP header. */
  readonly l4: number;
  /** IPPROTO_TCP or IPPROTO_UDP, or another protocol number. */
  readonly protocol: number;
  /** Length of the TCP header (TCP only), else 8 for UDP. */
  readonly l4HeaderLength: number;
}

/** Parses the Ethernet, IP and TCP/UDP headers; undefined for anything else or anything cut short. */
export function frameLayout(frame: Uint8Array): FrameLayout | undefined {
  if (frame.length < ETH_HLEN) return undefined;
  const v = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  let l3 = ETH_HLEN;
  let type = v.getUint16(12);
  if (type === ETHERTYPE_VLAN) {
    if (frame.length < ETH_HLEN + 4) return undefined;
    type = v.getUint16(16);
    l3 += 4;
  }
  let l4: number;
  let protocol: number;
  let ipv6: boolean;
  if (type === ETHERTYPE_IPV4) {
    if (frame.length < l3 + 20) return undefined;
    const ihl = (frame[l3]! & 0x0f) * 4;
    if (frame[l3]! >> 4 !== 4 || ihl < 20 || frame.length < l3 + ihl) return undefined;
    protocol = frame[l3 + 9]!;
    l4 = l3 + ihl;
    ipv6 = false;
  } else if (type === ETHERTYPE_IPV6) {
    if (frame.length < l3 + 40 || frame[l3]! >> 4 !== 6) return undefined;
    // No extension headers: the next header must be TCP or UDP itself.
    protocol = frame[l3 + 6]!;
    l4 = l3 + 40;
    ipv6 = true;
  } else {
    return undefined;
  }
  let l4HeaderLength = 0;
  if (protocol === IPPROTO_TCP) {
    if (frame.length < l4 + 20) return undefined;
    l4HeaderLength = (frame[l4 + 12]! >> 4) * 4;
    if (l4HeaderLength < 20 || frame.length < l4 + l4HeaderLength) return undefined;
  } else if (protocol === IPPROTO_UDP) {
    if (frame.length < l4 + 8) return undefined;
    l4HeaderLength = 8;
  }
  return { ipv6, l3, l4, protocol, l4HeaderLength };
}

/** One's-complement sum of 16-bit big-endian words (RFC 1071), not yet folded. */
function sum16(bytes: Uint8Array, start: number, end: number, initial: number): number {
  let sum = initial;
  let i = start;
  for (; i + 1 < end; i += 2) sum += (bytes[i]! << 8) | bytes[i + 1]!;
  if (i < end) sum += bytes[i]! << 8;
  return sum;
}

function fold(sum: number): number {
  let s = sum;
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s;
}

/** The pseudo-header sum of a TCP/UDP segment of `length` bytes (RFC 793, RFC 8200 8.1). */
function pseudoHeader(frame: Uint8Array, layout: FrameLayout, length: number): number {
  const { l3 } = layout;
  if (layout.ipv6) {
    let s = sum16(frame, l3 + 8, l3 + 40, 0);
    s += Math.floor(length / 0x10000) + (length & 0xffff) + layout.protocol;
    return s;
  }
  return sum16(frame, l3 + 12, l3 + 20, 0) + layout.protocol + length;
}

/** Where the TCP or UDP checksum field is, from the L4 header. */
function checksumField(protocol: number): number {
  return protocol === IPPROTO_TCP ? 16 : 6;
}

/**
 * Fills in the TCP/UDP checksum of a frame (what a guest that delegated it
 * left undone) and, for IPv4, the header checksum. Returns false when the
 * frame is not TCP/UDP over IP.
 */
export function fillChecksums(frame: Uint8Array, ipHeader = true): boolean {
  const layout = frameLayout(frame);
  if (!layout || (layout.protocol !== IPPROTO_TCP && layout.protocol !== IPPROTO_UDP)) {
    return false;
  }
  const v = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const { l3, l4 } = layout;
  let end = frame.length;
  if (!layout.ipv6) {
    const total = v.getUint16(l3 + 2);
    if (total >= l4 - l3 && l3 + total <= frame.length) end = l3 + total;
    if (ipHeader) {
      v.setUint16(l3 + 10, 0);
      v.setUint16(l3 + 10, ~fold(sum16(frame, l3, l4, 0)) & 0xffff);
    }
  } else {
    const payload = v.getUint16(l3 + 4);
    if (l3 + 40 + payload <= frame.length) end = l3 + 40 + payload;
  }
  const field = l4 + checksumField(layout.protocol);
  v.setUint16(field, 0);
  let sum = ~fold(sum16(frame, l4, end, pseudoHeader(frame, layout, end - l4))) & 0xffff;
  if (sum === 0 && layout.protocol === IPPROTO_UDP) sum = 0xffff;
  v.setUint16(field, sum);
  return true;
}

/** Whether the TCP/UDP (and IPv4 header) checksums of a frame are right. */
export function checksumsValid(frame: Uint8Array): boolean {
  const layout = frameLayout(frame);
  if (!layout || (layout.protocol !== IPPROTO_TCP && layout.protocol !== IPPROTO_UDP)) {
    return true;
  }
  const v = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const { l3, l4 } = layout;
  let end = frame.length;
  if (!layout.ipv6) {
    if (fold(sum16(frame, l3, l4, 0)) !== 0xffff) return false;
    const total = v.getUint16(l3 + 2);
    if (l3 + total <= frame.length) end = l3 + total;
  } else {
    const payload = v.getUint16(l3 + 4);
    if (l3 + 40 + payload <= frame.length) end = l3 + 40 + payload;
  }
  if (layout.protocol === IPPROTO_UDP && v.getUint16(l4 + 6) === 0 && !layout.ipv6) return true;
  return fold(sum16(frame, l4, end, pseudoHeader(frame, layout, end - l4))) === 0xffff;
}

/**
 * Splits a large TCP send into segments of at most `mss` payload bytes, as
 * the host does for a guest's LSOv2 packet when the backend cannot take it
 * whole: each segment gets the headers, its sequence number, an IPv4 id and
 * length of its own, PSH/FIN only on the last one, and fresh checksums.
 * Undefined when the frame is not TCP over IP.
 */
export function segmentTcp(frame: Uint8Array, mss: number): Uint8Array[] | undefined {
  const layout = frameLayout(frame);
  if (!layout || layout.protocol !== IPPROTO_TCP || mss <= 0) return undefined;
  const headers = layout.l4 + layout.l4HeaderLength;
  const payload = frame.subarray(headers);
  if (payload.length <= mss) {
    const one = frame.slice();
    fixLengths(one, layout, payload.length);
    fillChecksums(one);
    return [one];
  }
  const v = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const seq = v.getUint32(layout.l4 + 4);
  const id = layout.ipv6 ? 0 : v.getUint16(layout.l3 + 4);
  const flags = frame[layout.l4 + 13]!;
  const out: Uint8Array[] = [];
  for (let at = 0, n = 0; at < payload.length; at += mss, n++) {
    const chunk = payload.subarray(at, Math.min(payload.length, at + mss));
    const seg = new Uint8Array(headers + chunk.length);
    seg.set(frame.subarray(0, headers));
    seg.set(chunk, headers);
    const sv = new DataView(seg.buffer);
    sv.setUint32(layout.l4 + 4, (seq + at) >>> 0);
    const last = at + mss >= payload.length;
    // FIN and PSH belong to the last segment; CWR only to the first.
    seg[layout.l4 + 13] = last ? flags : flags & ~0x09 & (n === 0 ? 0xff : ~0x80);
    if (!layout.ipv6) sv.setUint16(layout.l3 + 4, (id + n) & 0xffff);
    fixLengths(seg, layout, chunk.length);
    fillChecksums(seg);
    out.push(seg);
  }
  return out;
}

function fixLengths(frame: Uint8Array, layout: FrameLayout, payloadLength: number): void {
  const v = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const l4Length = layout.l4HeaderLength + payloadLength;
  if (layout.ipv6) v.setUint16(layout.l3 + 4, layout.l4 - layout.l3 - 40 + l4Length);
  else v.setUint16(layout.l3 + 2, layout.l4 - layout.l3 + l4Length);
}
