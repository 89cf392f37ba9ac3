/**
 * The Toeplitz hash RSS picks a receive channel with (Microsoft's "RSS
 * hashing functions": for each set bit of the input, XOR in the 32 key bits
 * that start at that bit). The input is the source and destination address,
 * then — for TCP (NDIS_HASH_TCP_IPV4/IPV6) — the source and destination
 * port. A hasher precomputes, for each input byte position and value, what
 * that byte contributes, so a frame costs one table lookup per input byte
 * and no allocation.
 */
import { frameLayout, IPPROTO_TCP } from './frames.ts';

/** IPv6 addresses plus ports: the longest input. */
const MAX_INPUT = 36;

/** The plain definition, bit by bit (the reference the tables are checked against). */
export function toeplitz(key: Uint8Array, input: Uint8Array): number {
  let result = 0;
  for (let bit = 0; bit < input.length * 8; bit++) {
    if (input[bit >> 3]! & (0x80 >> (bit & 7))) result = (result ^ keyWindow(key, bit)) >>> 0;
  }
  return result;
}

/** The 32 key bits that start at bit `at` (bits past the key's end are 0). */
function keyWindow(key: Uint8Array, at: number): number {
  let w = 0;
  for (let i = 0; i < 32; i++) {
    const bit = at + i;
    const b = ((key[bit >> 3] ?? 0) >> (7 - (bit & 7))) & 1;
    w = ((w << 1) | b) >>> 0;
  }
  return w;
}

export class ToeplitzHasher {
  private readonly table = new Uint32Array(MAX_INPUT * 256);

  constructor(readonly key: Uint8Array) {
    for (let pos = 0; pos < MAX_INPUT; pos++) {
      const windows = Array.from({ length: 8 }, (_, b) => keyWindow(key, pos * 8 + b));
      for (let value = 0; value < 256; value++) {
        let h = 0;
        for (let b = 0; b < 8; b++) if (value & (0x80 >> b)) h ^= windows[b]!;
        this.table[pos * 256 + value] = h >>> 0;
      }
    }
  }

  /** The hash of `length` input bytes of `bytes` from `at`, placed at input position `pos`. */
  private part(bytes: Uint8Array, at: number, length: number, pos: number): number {
    let h = 0;
    for (let i = 0; i < length; i++) h ^= this.table[(pos + i) * 256 + bytes[at + i]!]!;
    return h;
  }

  hash(input: Uint8Array): number {
    return this.part(input, 0, Math.min(input.length, MAX_INPUT), 0) >>> 0;
  }

  /** A frame's RSS hash, or undefined when it is not IP. */
  frameHash(frame: Uint8Array): number | undefined {
    const layout = frameLayout(frame);
    if (!layout) return undefined;
    const from = layout.ipv6 ? layout.l3 + 8 : layout.l3 + 12;
    const addresses = layout.ipv6 ? 32 : 8;
    let h = this.part(frame, from, addresses, 0);
    if (layout.protocol === IPPROTO_TCP) h ^= this.part(frame, layout.l4, 4, addresses);
    return h >>> 0;
  }
}
