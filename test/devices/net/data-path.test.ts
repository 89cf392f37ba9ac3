import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GsoType } from '../../../src/devices/net/frame-port.ts';
import { checksumsValid, frameLayout } from '../../../src/devices/net/frames.ts';
import { flowHash } from '../../../src/devices/net/guest/transmit.ts';
import { until } from '../../vmbus/harness.ts';
import { buildFrame, PEER_MAC, pattern, tcpPayloadOffset } from './frame-builder.ts';
import { makeNetRig, TEST_MAC } from './harness.ts';

/** The TCP payloads of frames, joined in order. */
function payloads(frames: readonly Uint8Array[]): Uint8Array {
  const parts = frames.map((f) => {
    const l = frameLayout(f);
    assert.ok(l, 'a TCP frame');
    return f.subarray(l.l4 + l.l4HeaderLength);
  });
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

describe('netvsc/netvsp data path', () => {
  it('carries frames both ways unchanged', async () => {
    const rig = await makeNetRig();
    try {
      const out = buildFrame({ protocol: 'udp', payload: 1000 });
      assert.equal(rig.guestPort.inject(out), true);
      await until(() => rig.hostPort.seen.length === 1, 2000, 'the frame at the host');
      assert.deepEqual(rig.hostPort.seen[0]?.frame, out);
      const back = buildFrame({ protocol: 'tcp', payload: 1400, from: PEER_MAC, to: TEST_MAC });
      assert.equal(rig.hostPort.inject(back), true);
      await until(() => rig.guestPort.seen.length === 1, 2000, 'the frame in the guest');
      assert.deepEqual(rig.guestPort.seen[0]?.frame, back);
      assert.equal(rig.vsp.counters.txFrames, 1);
      assert.equal(rig.vsp.counters.rxFrames, 1);
      assert.equal(rig.nic?.counters.rxFrames, 1);
      assert.equal(rig.nic?.counters.txFrames, 1);
    } finally {
      await rig.close();
    }
  });

  it('delegates checksums to the host, which fills them when its backend cannot', async () => {
    const rig = await makeNetRig();
    try {
      for (const protocol of ['tcp', 'udp'] as const) {
        for (const ipv6 of [false, true]) {
          const frame = buildFrame({ protocol, ipv6, payload: 700, unfilled: true });
          // (A zero UDP checksum over IPv4 means "none", which is valid.)
          if (protocol === 'tcp' || ipv6) assert.equal(checksumsValid(frame), false);
          const l = frameLayout(frame);
          rig.guestPort.inject(frame, {
            needsChecksum: true,
            csumStart: l?.l4 ?? 0,
            csumOffset: protocol === 'tcp' ? 16 : 6,
          });
        }
      }
      await until(() => rig.hostPort.seen.length === 4, 2000, 'four frames');
      for (const { frame } of rig.hostPort.seen) assert.ok(checksumsValid(frame));
      assert.equal(rig.nic?.counters.txChecksumOffloaded, 4);
      assert.equal(rig.nic?.counters.txChecksumsFilled, 0);
      assert.equal(rig.vsp.counters.txChecksumsFilled, 4);
    } finally {
      await rig.close();
    }
  });

  it('passes a delegated checksum on to a backend that takes it, with its offsets', async () => {
    const rig = await makeNetRig({ hostOffloads: { checksum: true, segmentation: true } });
    try {
      const frame = buildFrame({ protocol: 'tcp', payload: 500, unfilled: true });
      rig.guestPort.inject(frame, { needsChecksum: true, csumStart: 34, csumOffset: 16 });
      await until(() => rig.hostPort.seen.length === 1, 2000, 'the frame');
      const seen = rig.hostPort.seen[0];
      assert.equal(seen?.offload.needsChecksum, true);
      assert.equal(seen?.offload.csumStart, 34);
      assert.equal(seen?.offload.csumOffset, 16);
      assert.equal(rig.vsp.counters.txChecksumsFilled, 0);
    } finally {
      await rig.close();
    }
  });

  it('sends a 64 KiB TCP frame as one RNDIS packet with LSOv2 info', async () => {
    const rig = await makeNetRig({ hostOffloads: { checksum: true, segmentation: true } });
    try {
      const frame = buildFrame({ payload: 62_000, unfilled: true });
      const ok = rig.guestPort.inject(frame, {
        needsChecksum: true,
        csumStart: 34,
        csumOffset: 16,
        gsoType: GsoType.TcpV4,
        gsoSize: 1448,
        headerLength: 54,
      });
      assert.equal(ok, true);
      await until(() => rig.hostPort.seen.length === 1, 2000, 'the large frame');
      const seen = rig.hostPort.seen[0];
      assert.equal(seen?.frame.length, frame.length);
      assert.equal(seen?.offload.gsoType, GsoType.TcpV4);
      assert.equal(seen?.offload.gsoSize, 1448);
      assert.deepEqual(
        seen?.frame.subarray(tcpPayloadOffset()),
        frame.subarray(tcpPayloadOffset()),
      );
      assert.equal(rig.nic?.counters.txLso, 1);
      assert.equal(rig.nic?.counters.txBounced, 1);
      assert.equal(rig.vsp.counters.txLso, 1);
      assert.equal(rig.vsp.counters.txSegmented, 0);
    } finally {
      await rig.close();
    }
  });

  it('has the host segment a large send when its backend cannot take it', async () => {
    const rig = await makeNetRig();
    try {
      const payload = pattern(40_000, 7);
      const frame = buildFrame({ payload, unfilled: true, seq: 5000 });
      rig.guestPort.inject(frame, {
        needsChecksum: true,
        csumStart: 34,
        csumOffset: 16,
        gsoType: GsoType.TcpV4,
        gsoSize: 1448,
      });
      const segments = Math.ceil(40_000 / 1448);
      await until(() => rig.hostPort.seen.length === segments, 2000, 'the segments');
      const frames = rig.hostPort.seen.map((s) => s.frame);
      assert.deepEqual(payloads(frames), payload);
      for (const f of frames) {
        assert.ok(f.length <= 1514);
        assert.ok(checksumsValid(f));
      }
      assert.equal(rig.vsp.counters.txLso, 1);
      assert.equal(rig.vsp.counters.txSegmented, segments);
    } finally {
      await rig.close();
    }
  });

  it('segments and checksums in the guest when offloads are off', async () => {
    const rig = await makeNetRig({ guest: { offloads: { checksum: false, lso: false } } });
    try {
      const nic = rig.nic;
      assert.ok(nic);
      assert.equal(nic.offloads.lso4, false);
      assert.equal(nic.offloads.tcp4, false);
      assert.equal(rig.vsp.rndis.offloads.lso4, false);
      const payload = pattern(30_000, 3);
      const frame = buildFrame({ payload, unfilled: true });
      rig.guestPort.inject(frame, {
        needsChecksum: true,
        csumStart: 34,
        csumOffset: 16,
        gsoType: GsoType.TcpV4,
        gsoSize: 1448,
      });
      const segments = Math.ceil(30_000 / 1448);
      await until(() => rig.hostPort.seen.length === segments, 2000, 'the segments');
      assert.deepEqual(payloads(rig.hostPort.seen.map((s) => s.frame)), payload);
      for (const { frame: f } of rig.hostPort.seen) assert.ok(checksumsValid(f));
      assert.equal(nic.counters.txSegmented, segments);
      assert.equal(nic.counters.txLso, 0);
      assert.equal(rig.vsp.counters.txLso, 0);
      // A small frame's checksum is computed in the guest too.
      rig.guestPort.inject(buildFrame({ protocol: 'udp', payload: 80, unfilled: true }), {
        needsChecksum: true,
        csumStart: 34,
        csumOffset: 6,
      });
      await until(() => rig.hostPort.seen.length === segments + 1, 2000, 'the small frame');
      assert.ok(checksumsValid(rig.hostPort.seen.at(-1)?.frame ?? new Uint8Array()));
      assert.equal(nic.counters.txChecksumsFilled, 1);
    } finally {
      await rig.close();
    }
  });

  it('keeps many frames in flight and tells the port when it may send again', async () => {
    const rig = await makeNetRig();
    try {
      const total = 3000;
      let sent = 0;
      let waits = 0;
      while (sent < total) {
        const frame = buildFrame({ protocol: 'udp', payload: 200, sport: 1000 + (sent % 50) });
        if (rig.guestPort.inject(frame)) {
          sent++;
          continue;
        }
        waits++;
        const before = rig.guestPort.resumes;
        await until(() => rig.guestPort.resumes > before, 2000, 'resume');
      }
      await until(() => rig.hostPort.seen.length === total, 5000, 'every frame');
      assert.ok(waits > 0, 'the send buffer filled at least once');
      assert.equal(rig.nic?.counters.txDropped, 0);
      // Frames sent together shared sections: up to the host's packets per message each.
      const packets = (rig.nic?.channelCounters() ?? []).reduce((n, c) => n + c.sent, 0);
      assert.ok(packets < total / 2, `${packets} RNDIS_PKT sends carried ${total} frames`);
      // Host to guest: more than the receive buffer holds at once, none lost.
      for (let i = 0; i < total; i++) {
        const frame = buildFrame({ protocol: 'udp', payload: 1200, from: PEER_MAC, to: TEST_MAC });
        while (!rig.hostPort.inject(frame)) await new Promise((r) => setTimeout(r, 1));
      }
      await until(() => rig.guestPort.seen.length === total, 5000, 'every frame in the guest');
      assert.equal(rig.vsp.counters.rxDropped, 0);
    } finally {
      await rig.close();
    }
  });

  it('spreads flows over four channels by the send table and RSS', async () => {
    const rig = await makeNetRig({ host: { channels: 4 } });
    try {
      const nic = rig.nic;
      assert.ok(nic);
      assert.equal(nic.channels.size, 4);
      assert.deepEqual(
        nic.sendTable,
        Array.from({ length: 16 }, (_, i) => i % 4),
      );
      // The RNDIS control messages of the bring-up went on the primary: count from here.
      const sentBefore = nic.channelCounters().map((c) => c.sent);
      const hostBefore = rig.vsp.channelCounters().map((c) => c.guestPackets);
      const expected = [0, 0, 0, 0];
      for (let port = 0; port < 64; port++) {
        const frame = buildFrame({ payload: 100, sport: 30000 + port });
        expected[nic.sendTable[flowHash(frame) % 16]!]!++;
        rig.guestPort.inject(frame);
        // The next turn: a turn's sends stay on one channel only when the table says so.
        await new Promise((r) => setImmediate(r));
      }
      await until(() => rig.hostPort.seen.length === 64, 2000, 'the frames');
      const sent = nic.channelCounters().map((c, i) => c.sent - sentBefore[i]!);
      assert.deepEqual(sent, expected, 'each frame went where the send table put its flow');
      assert.ok(
        sent.every((n) => n > 0),
        `all four channels carried frames: ${sent}`,
      );
      const hostSeen = rig.vsp.channelCounters().map((c, i) => c.guestPackets - hostBefore[i]!);
      assert.deepEqual(hostSeen, expected);
      // Host to guest: RSS picks the channel from the Toeplitz hash.
      for (let port = 0; port < 64; port++) {
        rig.hostPort.inject(
          buildFrame({ payload: 100, dport: 20000 + port, from: PEER_MAC, to: TEST_MAC }),
        );
      }
      await until(() => rig.guestPort.seen.length === 64, 2000, 'the frames in the guest');
      const received = nic.channelCounters().map((c) => c.receivedMessages);
      assert.ok(
        received.every((n) => n > 0),
        `all four channels received: ${received}`,
      );
    } finally {
      await rig.close();
    }
  });

  it('takes jumbo frames both ways', async () => {
    const rig = await makeNetRig({ host: { mtu: 9000 }, guest: { mtu: 9000 } });
    try {
      const out = buildFrame({ payload: 8960 });
      assert.equal(out.length, 9014);
      rig.guestPort.inject(out);
      const back = buildFrame({ payload: 8960, from: PEER_MAC, to: TEST_MAC });
      rig.hostPort.inject(back);
      await until(() => rig.hostPort.seen.length === 1 && rig.guestPort.seen.length === 1);
      assert.deepEqual(rig.hostPort.seen[0]?.frame, out);
      assert.deepEqual(rig.guestPort.seen[0]?.frame, back);
    } finally {
      await rig.close();
    }
  });

  it('sends a large received TCP frame coalesced (RSC) to a 6.1 guest, which takes it whole', async () => {
    const rig = await makeNetRig();
    try {
      const nic = rig.nic;
      assert.ok(nic);
      assert.equal(nic.offloads.rsc, true, 'the guest asked for RSC');
      assert.deepEqual([rig.vsp.coalescing.v4, rig.vsp.coalescing.v6], [true, true]);
      const payload = pattern(60_000, 11);
      const frame = buildFrame({ payload, from: PEER_MAC, to: TEST_MAC, unfilled: true });
      const gso = {
        needsChecksum: true,
        csumStart: 34,
        csumOffset: 16,
        gsoType: GsoType.TcpV4,
        gsoSize: 1448,
      };
      assert.equal(rig.hostPort.inject(frame, gso), true);
      await until(() => rig.guestPort.seen.length === 1, 2000, 'the coalesced frame');
      const seen = rig.guestPort.seen[0];
      assert.deepEqual(seen?.frame, frame, 'the fragments joined back byte for byte');
      assert.equal(seen?.offload.gsoType, GsoType.TcpV4);
      assert.equal(seen?.offload.needsChecksum, true);
      assert.equal(seen?.offload.csumStart, 34);
      assert.equal(rig.vsp.counters.rxCoalesced, 1);
      assert.equal(nic.counters.rxCoalesced, 1);
      // Fragments of one section each, all in use until the guest completed them.
      assert.ok(rig.vsp.channelCounters().reduce((n, c) => n + c.hostMessages, 0) >= 60_000 / 1728);
    } finally {
      await rig.close();
    }
  });

  it('segments a large received TCP frame for a guest without RSC', async () => {
    const rig = await makeNetRig({
      guest: { offloads: { checksum: true, lso: true, rsc: false } },
    });
    try {
      assert.equal(rig.nic?.offloads.rsc, false);
      assert.deepEqual([rig.vsp.coalescing.v4, rig.vsp.coalescing.v6], [false, false]);
      const payload = pattern(20_000, 5);
      const frame = buildFrame({ payload, from: PEER_MAC, to: TEST_MAC, unfilled: true });
      rig.hostPort.inject(frame, {
        needsChecksum: true,
        csumStart: 34,
        csumOffset: 16,
        gsoType: GsoType.TcpV4,
        gsoSize: 1448,
      });
      const segments = Math.ceil(20_000 / 1448);
      await until(() => rig.guestPort.seen.length === segments, 2000, 'the segments');
      const frames = rig.guestPort.seen.map((x) => x.frame);
      assert.deepEqual(payloads(frames), payload);
      for (const f of frames) assert.ok(checksumsValid(f) && f.length <= 1514);
      assert.equal(rig.vsp.counters.rxCoalesced, 0);
    } finally {
      await rig.close();
    }
  });

  it('tells the guest when the backend loses and regains its carrier', async () => {
    const rig = await makeNetRig();
    try {
      const nic = rig.nic;
      assert.ok(nic);
      assert.equal(nic.link, true);
      rig.hostPort.setLink(false);
      await until(() => !nic.link, 2000, 'link down');
      rig.hostPort.setLink(true);
      await until(() => nic.link, 2000, 'link up');
      assert.equal(nic.counters.linkChanges, 2);
    } finally {
      await rig.close();
    }
  });
});
