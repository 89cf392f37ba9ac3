/**
 * Ethernet frames for the NIC's tests: IPv4/IPv6 with TCP or UDP, headers
 * right and checksums either filled or left for an offload (the pseudo-
 * header sum in the checksum field, as a stack that delegates leaves it).
 */
import { fillChecksums } from '../../../src/devices/net/frames.ts';

export const GUEST_MAC = Uint8Array.of(0x00, 0x15, 0x5d, 0x00, 0x00, 0x01);
export const PEER_MAC = Uint8Array.of(0x02, 0x00, 0x00, 0x00, 0x00, 0x02);

export interface FrameSpec {
  readonly protocol?: 'tcp' | 'udp';
  readonly ipv6?: boolean;
  readonly payload: Uint8Array | number;
  readonly sport?: number;
  readonly dport?: number;
  readonly seq?: number;
  /** TCP flags (default ACK|PSH). */
  readonly flags?: number;
  readonly src?: readonly number[];
  readonly dst?: readonly number[];
  readonly from?: Uint8Array;
  readonly to?: Uint8Array;
  /** Leave the TCP/UDP checksum zero (as a frame that delegates it); default: filled. */
  readonly unfilled?: boolean;
}

/** A payload of `n` bytes that differ from each other (so a misplaced byte shows). */
export function pattern(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

export function buildFrame(spec: FrameSpec): Uint8Array {
  const payload = typeof spec.payload === 'number' ? pattern(spec.payload) : spec.payload;
  const tcp = (spec.protocol ?? 'tcp') === 'tcp';
  const l4Header = tcp ? 20 : 8;
  const ipHeader = spec.ipv6 ? 40 : 20;
  const frame = new Uint8Array(14 + ipHeader + l4Header + payload.length);
  const v = new DataView(frame.buffer);
  frame.set(spec.to ?? PEER_MAC, 0);
  frame.set(spec.from ?? GUEST_MAC, 6);
  v.setUint16(12, spec.ipv6 ? 0x86dd : 0x0800);
  const l3 = 14;
  const l4 = l3 + ipHeader;
  const l4Length = l4Header + payload.length;
  if (spec.ipv6) {
    v.setUint32(l3, 0x6000_0000);
    v.setUint16(l3 + 4, l4Length);
    frame[l3 + 6] = tcp ? 6 : 17;
    frame[l3 + 7] = 64;
    const src = spec.src ?? [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    const dst = spec.dst ?? [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    frame.set(src, l3 + 8);
    frame.set(dst, l3 + 24);
  } else {
    frame[l3] = 0x45;
    v.setUint16(l3 + 2, ipHeader + l4Length);
    v.setUint16(l3 + 4, 0x1234);
    v.setUint16(l3 + 6, 0x4000);
    frame[l3 + 8] = 64;
    frame[l3 + 9] = tcp ? 6 : 17;
    frame.set(spec.src ?? [192, 0, 2, 2], l3 + 12);
    frame.set(spec.dst ?? [192, 0, 2, 1], l3 + 16);
  }
  v.setUint16(l4, spec.sport ?? 40000);
  v.setUint16(l4 + 2, spec.dport ?? 5201);
  if (tcp) {
    v.setUint32(l4 + 4, spec.seq ?? 1000);
    v.setUint32(l4 + 8, 1);
    frame[l4 + 12] = 0x50;
    frame[l4 + 13] = spec.flags ?? 0x18;
    v.setUint16(l4 + 14, 65535);
  } else {
    v.setUint16(l4 + 4, l4Length);
  }
  frame.set(payload, l4 + l4Header);
  fillChecksums(frame, true);
  if (spec.unfilled) v.setUint16(l4 + (tcp ? 16 : 6), 0);
  return frame;
}

/** Where the TCP payload starts in a frame built here. */
export function tcpPayloadOffset(ipv6 = false): number {
  return 14 + (ipv6 ? 40 : 20) + 20;
}
