import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ChannelEndpoint } from '../../src/vmbus/channel.ts';
import { inbandPacketLength } from '../../src/vmbus/packet.ts';
import { Ring } from '../../src/vmbus/ring.ts';

/** Two endpoints over two rings; signals are counted, and delivered only when the test says. */
function pair(ringBytes = 4096 * 4) {
  const aToB = Ring.fromBytes(new Uint8Array(new SharedArrayBuffer(ringBytes)));
  const bToA = Ring.fromBytes(new Uint8Array(new SharedArrayBuffer(ringBytes)));
  aToB.initialize();
  bToA.initialize();
  const signals = { toB: 0, toA: 0 };
  const a = new ChannelEndpoint(aToB, bToA, () => signals.toB++, 'a');
  const b = new ChannelEndpoint(bToA, aToB, () => signals.toA++, 'b');
  return { a, b, signals, aToB };
}

const payload = new Uint8Array(100);

describe('interrupt suppression', () => {
  it('signals once per empty-to-non-empty burst', () => {
    const { a, b, signals } = pair();
    const received: number[] = [];
    b.onPacket = (p) => {
      received.push(p.transLo);
      return true;
    };
    for (let i = 1; i <= 10; i++) assert.equal(a.sendInband(payload, i), 'ok');
    assert.equal(signals.toB, 1, 'only the first packet found the ring empty');
    assert.equal(a.stats.signalsSuppressed, 9);
    b.handleInterrupt();
    assert.equal(received.length, 10);
    a.sendInband(payload, 11);
    assert.equal(signals.toB, 2, 'the ring was empty again');
  });

  it('never signals while the reader has masked, and the reader re-checks after unmasking', () => {
    const { a, b, signals } = pair();
    let wroteDuringDrain = false;
    const received: number[] = [];
    b.onPacket = (p) => {
      received.push(p.transLo);
      if (!wroteDuringDrain) {
        wroteDuringDrain = true;
        // The reader is draining with interrupt_mask set: these must not signal.
        for (let i = 100; i < 105; i++) a.sendInband(payload, i);
      }
      return true;
    };
    a.sendInband(payload, 1);
    assert.equal(signals.toB, 1);
    b.handleInterrupt();
    assert.equal(signals.toB, 1, 'no signal while masked');
    assert.deepEqual(received, [1, 100, 101, 102, 103, 104], 'picked up without another interrupt');
    assert.equal(b.stats.interrupts, 1);
  });

  it('publishes a batch once, with at most one signal', () => {
    const { a, aToB, signals } = pair();
    a.batch(() => {
      for (let i = 0; i < 5; i++) a.sendInband(payload, i + 1);
      assert.equal(aToB.writeIndex, 0, 'not published inside the batch');
    });
    assert.equal(aToB.writeIndex, 5 * (inbandPacketLength(payload.length) + 8));
    assert.equal(signals.toB, 1);
    assert.equal(a.stats.signalsSent, 1);
  });

  it('wakes a blocked writer through pending_send_sz, once, when enough space frees up', async () => {
    const { a, b, signals, aToB } = pair(4096 * 2); // 4 KiB data area
    b.onPacket = () => true;
    let sent = 0;
    while (a.sendInband(payload, sent + 1) === 'ok') sent++;
    assert.ok(sent > 10);
    assert.equal(a.stats.ringFull, 1);
    const big = 2048;
    let woke = false;
    const wait = a.waitForSpace(big).then((ok) => {
      woke = ok;
    });
    assert.equal(aToB.pendingSendSize, big + 8, 'writer published how much it needs');
    // The reader drains everything: free space crosses pending_send_sz once.
    b.handleInterrupt();
    assert.equal(b.stats.writerWakeups, 1);
    assert.equal(signals.toA, 1, 'one wake-up signal to the writer');
    a.handleInterrupt();
    await wait;
    assert.equal(woke, true);
    assert.equal(aToB.pendingSendSize, 0, 'cleared once satisfied');
    assert.equal(a.sendInband(new Uint8Array(big - 16), 999), 'ok');
  });

  it('does not signal the writer when space was already above its threshold', () => {
    const { a, b, signals, aToB } = pair(4096 * 2);
    b.onPacket = () => true;
    a.sendInband(payload, 1);
    aToB.pendingSendSize = 64; // already far more than 64 bytes free
    b.handleInterrupt();
    assert.equal(signals.toA, 0);
    assert.equal(b.stats.writerWakeups, 0);
  });

  it('retries a packet its handler deferred once the peer frees outbound room', async () => {
    const { a, b } = pair(4096 * 2);
    // b answers each packet with a big completion; a does not read them at first.
    let handled = 0;
    b.onPacket = (p) => {
      const r = b.sendCompletion(p.transLo, p.transHi, new Uint8Array(1000));
      if (r === 'full') return false;
      handled++;
      return true;
    };
    let completions = 0;
    a.onPacket = () => {
      completions++;
      return true;
    };
    for (let i = 1; i <= 8; i++) a.sendInband(payload, i);
    b.handleInterrupt();
    assert.ok(handled < 8, 'b ran out of room and deferred');
    const deferredAt = handled;
    // a drains its inbound ring: b's pending_send_sz makes a signal b.
    a.handleInterrupt();
    b.handleInterrupt();
    await new Promise((resolve) => setImmediate(resolve));
    a.handleInterrupt();
    b.handleInterrupt();
    await new Promise((resolve) => setImmediate(resolve));
    a.handleInterrupt();
    assert.ok(handled > deferredAt);
    assert.equal(handled, 8);
    assert.equal(completions, 8);
  });
});

describe('payloads read in place', () => {
  it('hands large payloads over as views of the ring, small ones and wrapped ones as copies', () => {
    const { a, b, aToB } = pair(4096 * 4); // 12 KiB data area
    b.inPlaceAbove = 1024;
    const seen: { inPlace: boolean; first: number; length: number }[] = [];
    b.onPacket = (p) => {
      const payload = p.payload();
      seen.push({ inPlace: p.inPlace !== undefined, first: payload[0]!, length: p.payloadLength });
      return true;
    };
    const big = new Uint8Array(4000).fill(7);
    big[0] = 9;
    a.sendInband(big, 1);
    a.sendInband(new Uint8Array([5]), 2);
    b.handleInterrupt();
    assert.deepEqual(seen, [
      { inPlace: true, first: 9, length: 4000 },
      { inPlace: false, first: 5, length: 8 },
    ]);
    // Fill up to near the end so the next big packet wraps: it is copied instead.
    a.sendInband(new Uint8Array(4000), 3);
    a.sendInband(new Uint8Array(3000), 3);
    b.handleInterrupt();
    assert.ok(aToB.writeIndex + 4016 > 12288, 'the next big packet crosses the end');
    a.sendInband(big, 4);
    b.handleInterrupt();
    assert.equal(seen.at(-1)!.inPlace, false, 'a packet that wraps is copied');
    assert.equal(seen.at(-1)!.first, 9);
  });
});

describe('deferred packets', () => {
  it('a handler that defers without a full ring is not spun on; the packet waits for the next interrupt', () => {
    const { a, b } = pair();
    let calls = 0;
    let accept = false;
    b.onPacket = () => {
      calls++;
      return accept;
    };
    // An earlier refused send must not make a later deferral look retryable.
    a.sendInband(payload, 1);
    b.handleInterrupt();
    assert.equal(calls, 1, 'deferred once, not retried in a loop');
    accept = true;
    b.handleInterrupt();
    assert.equal(calls, 2, 'delivered on the next interrupt');
    assert.equal(b.stats.packetsReceived, 1);
  });
});

describe('a packet handler that throws', () => {
  it('loses that packet only: counted apart from bad input, reported, and the channel goes on', () => {
    const { a, b } = pair();
    const errors: string[] = [];
    const seen: number[] = [];
    b.onHandlerError = (error) => errors.push(error.message);
    b.onPacket = (p) => {
      if (p.transLo === 2) throw new RangeError('device bug');
      seen.push(p.transLo);
      return true;
    };
    for (let i = 1; i <= 3; i++) a.sendInband(payload, i);
    b.handleInterrupt();
    assert.deepEqual(seen, [1, 3], 'the packets around it are delivered');
    assert.deepEqual(errors, ['device bug']);
    assert.equal(b.stats.handlerErrors, 1);
    assert.equal(b.stats.badPackets, 0, "a device bug is not the peer's bad input");
    assert.equal(b.state, 'open');
  });
});
