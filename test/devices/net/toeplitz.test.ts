import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { DEFAULT_RSS_KEY } from '../../../src/devices/net/guest/rndis-setup.ts';
import { ToeplitzHasher, toeplitz } from '../../../src/devices/net/toeplitz.ts';
import { buildFrame } from './frame-builder.ts';

/** Microsoft's RSS verification vectors for the default key: source, destination, IPv4 hash, TCP/IPv4 hash. */
const VECTORS: [string, number, string, number, number, number][] = [
  ['66.9.149.187', 2794, '161.142.100.80', 1766, 0x323e8fc2, 0x51ccc178],
  ['199.92.111.2', 14230, '65.69.140.83', 4739, 0xd718262a, 0xc626b0ea],
  ['24.19.198.95', 12898, '12.22.207.184', 38024, 0xd2d0a5de, 0x5c2b394a],
  ['38.27.205.30', 48228, '209.142.163.6', 2217, 0x82989176, 0xafc7327f],
  ['153.39.163.191', 44251, '202.188.127.2', 1303, 0x5d1809c5, 0x10e828a2],
];

const octets = (a: string) => a.split('.').map(Number);

describe('the Toeplitz hash', () => {
  it("matches Microsoft's verification vectors, by definition and by table", () => {
    const hasher = new ToeplitzHasher(DEFAULT_RSS_KEY);
    for (const [src, sport, dst, dport, ipv4, tcp] of VECTORS) {
      const addresses = Uint8Array.from([...octets(src), ...octets(dst)]);
      const ports = Uint8Array.of(sport >> 8, sport & 0xff, dport >> 8, dport & 0xff);
      assert.equal(toeplitz(DEFAULT_RSS_KEY, addresses), ipv4, `${src} -> ${dst}`);
      assert.equal(toeplitz(DEFAULT_RSS_KEY, Uint8Array.from([...addresses, ...ports])), tcp);
      const frame = buildFrame({ payload: 10, src: octets(src), dst: octets(dst), sport, dport });
      assert.equal(hasher.frameHash(frame), tcp, `the frame ${src}:${sport} -> ${dst}:${dport}`);
      const udp = buildFrame({
        protocol: 'udp',
        payload: 10,
        src: octets(src),
        dst: octets(dst),
        sport,
        dport,
      });
      assert.equal(hasher.frameHash(udp), ipv4, 'UDP hashes the addresses only');
    }
  });

  it('agrees with the definition for any key and input', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 40, maxLength: 40 }),
        fc.uint8Array({ maxLength: 36 }),
        (key, input) => {
          assert.equal(new ToeplitzHasher(key).hash(input), toeplitz(key, input));
        },
      ),
      { numRuns: 200 },
    );
  });
});
