import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { FcopyService } from '../../../src/devices/ic/fcopy/vsc.ts';
import { FcopyVsp } from '../../../src/devices/ic/fcopy/vsp.ts';
import { readIcHeader } from '../../../src/devices/ic/framing.ts';
import { HeartbeatService } from '../../../src/devices/ic/heartbeat/vsc.ts';
import { HeartbeatVsp } from '../../../src/devices/ic/heartbeat/vsp.ts';
import {
  answerNegotiate,
  buildNegotiate,
  readNegotiateAnswer,
} from '../../../src/devices/ic/negotiate.ts';
import { HOST_IC_VERSIONS, LINUX_IC_VERSIONS, version } from '../../../src/devices/ic/protocol.ts';
import { ShutdownService } from '../../../src/devices/ic/shutdown/vsc.ts';
import { ShutdownVsp } from '../../../src/devices/ic/shutdown/vsp.ts';
import { IcDriver } from '../../../src/devices/ic/vsc.ts';
import type { IcVsp } from '../../../src/devices/ic/vsp.ts';
import { VssService } from '../../../src/devices/ic/vss/vsc.ts';
import { VssVsp } from '../../../src/devices/ic/vss/vsp.ts';
import { makeBus, until } from '../../vmbus/harness.ts';

type V = [number, number];

/**
 * A host NEGOTIATE message built by hand from the C layout (offsets written
 * out, not taken from the declarations under test).
 */
function hostNegotiate(fw: V[], srv: V[], counts?: [number, number]): Uint8Array {
  const n = fw.length + srv.length;
  const bytes = new Uint8Array(36 + 4 * n);
  const v = new DataView(bytes.buffer);
  v.setUint32(0, 1, true); // pipe: data
  v.setUint32(4, bytes.length - 8, true);
  const lastFw = fw.at(-1) ?? [0, 0];
  const lastSrv = srv.at(-1) ?? [0, 0];
  v.setUint16(8, lastFw[0], true);
  v.setUint16(10, lastFw[1], true);
  v.setUint16(12, 0, true); // NEGOTIATE
  v.setUint16(14, lastSrv[0], true);
  v.setUint16(16, lastSrv[1], true);
  v.setUint16(18, 8 + 4 * n, true);
  bytes[25] = 1 | 2; // TRANSACTION | REQUEST
  v.setUint16(28, counts?.[0] ?? fw.length, true);
  v.setUint16(30, counts?.[1] ?? srv.length, true);
  [...fw, ...srv].forEach(([major, minor], i) => {
    v.setUint16(36 + 4 * i, major, true);
    v.setUint16(38 + 4 * i, minor, true);
  });
  return bytes;
}

/** The counts and the two version slots of an answer, read by hand. */
function answerOf(bytes: Uint8Array): { counts: V; fw: V; srv: V; icmsgsize: number } {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return {
    counts: [v.getUint16(28, true), v.getUint16(30, true)],
    fw: [v.getUint16(36, true), v.getUint16(38, true)],
    srv: [v.getUint16(40, true), v.getUint16(42, true)],
    icmsgsize: v.getUint16(18, true),
  };
}

function guestAnswers(message: Uint8Array, fw: readonly number[], srv: readonly number[]) {
  const buffer = new Uint8Array(Math.max(message.length, 44));
  buffer.set(message);
  const result = answerNegotiate(buffer, message.length, fw, srv);
  return { result, answer: answerOf(buffer), reply: buffer.subarray(0, message.length) };
}

const split = (value: number): V => [value >>> 16, value & 0xffff];
const hyperV = (list: readonly number[]): V[] => list.map(split);

const services = [
  {
    name: 'heartbeat',
    guest: LINUX_IC_VERSIONS.heartbeat,
    fw: LINUX_IC_VERSIONS.framework,
    host: HOST_IC_VERSIONS.heartbeat,
    picks: [3, 0],
  },
  {
    name: 'shutdown',
    guest: LINUX_IC_VERSIONS.shutdown,
    fw: LINUX_IC_VERSIONS.framework,
    host: HOST_IC_VERSIONS.shutdown,
    picks: [3, 2],
  },
  {
    name: 'timesync',
    guest: LINUX_IC_VERSIONS.timesync,
    fw: LINUX_IC_VERSIONS.framework,
    host: HOST_IC_VERSIONS.timesync,
    picks: [4, 0],
  },
  {
    name: 'kvp',
    guest: LINUX_IC_VERSIONS.kvp,
    fw: LINUX_IC_VERSIONS.framework,
    host: HOST_IC_VERSIONS.kvp,
    picks: [4, 0],
  },
  {
    name: 'fcopy',
    guest: LINUX_IC_VERSIONS.fcopy,
    fw: LINUX_IC_VERSIONS.fcopyFramework,
    host: HOST_IC_VERSIONS.fcopy,
    picks: [1, 1],
  },
  {
    name: 'vss',
    guest: LINUX_IC_VERSIONS.vss,
    fw: LINUX_IC_VERSIONS.vssFramework,
    host: HOST_IC_VERSIONS.vss,
    picks: [5, 0],
  },
] as const;

describe('IC version negotiation (the guest answers as vmbus_prep_negotiate_resp does)', () => {
  for (const s of services) {
    it(`${s.name}: a Hyper-V-like host's lists give framework 3.0 and ${s.picks.join('.')}`, () => {
      const message = hostNegotiate(hyperV(HOST_IC_VERSIONS.framework), hyperV(s.host));
      const { result, answer } = guestAnswers(message, s.fw, s.guest);
      assert.equal(result.ok, true);
      assert.deepEqual(answer.counts, [1, 1]);
      assert.deepEqual(answer.fw, [3, 0]);
      assert.deepEqual(answer.srv, [...s.picks]);
      assert.equal(answer.icmsgsize, 0x10);
      // The host reads the answer back and learns the same versions.
      const { reply } = guestAnswers(message, s.fw, s.guest);
      assert.deepEqual(
        readNegotiateAnswer(reply.subarray(28), HOST_IC_VERSIONS.framework, s.host),
        {
          framework: version(3, 0),
          service: version(s.picks[0], s.picks[1]),
        },
      );
    });
  }

  it('a framework 1.0-only host gets framework 1.0; the util services keep their versions', () => {
    for (const s of services) {
      const message = hostNegotiate([[1, 0]], hyperV(s.host));
      const { result, answer } = guestAnswers(message, s.fw, s.guest);
      if (s.name === 'fcopy' || s.name === 'vss') {
        // These speak framework 3.0 only: no match, counts 0/0, and the quirk
        // puts the host's counts in the version slots.
        assert.equal(result.ok, false, s.name);
        assert.deepEqual(answer.counts, [0, 0]);
        assert.deepEqual(answer.fw, [1, 0]);
        assert.deepEqual(answer.srv, [s.host.length, 0]);
        assert.match(
          (result as { reason: string }).reason,
          /no common framework version: host offers 1\.0, guest supports 3\.0/,
        );
      } else {
        assert.equal(result.ok, true, s.name);
        assert.deepEqual(answer.fw, [1, 0]);
        assert.deepEqual(answer.srv, [...s.picks]);
      }
    }
  });

  it('a Windows Server 2008 host (framework 1.0, services 1.0) gets 1.0/1.0', () => {
    for (const s of services.filter((x) => x.fw.includes(version(1, 0)))) {
      const { result, answer } = guestAnswers(hostNegotiate([[1, 0]], [[1, 0]]), s.fw, s.guest);
      assert.equal(result.ok, true, s.name);
      assert.deepEqual(
        [answer.fw, answer.srv],
        [
          [1, 0],
          [1, 0],
        ],
      );
    }
  });

  it('disjoint service lists: counts 0/0, the framework in slot 0 and the host count in slot 1', () => {
    const { result, answer } = guestAnswers(
      hostNegotiate(
        [[3, 0]],
        [
          [2, 0],
          [9, 9],
        ],
      ),
      LINUX_IC_VERSIONS.framework,
      LINUX_IC_VERSIONS.heartbeat,
    );
    assert.equal(result.ok, false);
    assert.match(
      (result as { reason: string }).reason,
      /no common service version: host offers 2\.0, 9\.9, guest supports 3\.0, 1\.0/,
    );
    assert.deepEqual(answer.counts, [0, 0]);
    assert.deepEqual(answer.fw, [3, 0]);
    assert.deepEqual(answer.srv, [2, 0]);
  });

  it('disjoint frameworks: counts 0/0 and both slots hold the host counts', () => {
    const { result, answer } = guestAnswers(
      hostNegotiate(
        [
          [2, 0],
          [4, 0],
        ],
        [[3, 0]],
      ),
      LINUX_IC_VERSIONS.framework,
      LINUX_IC_VERSIONS.heartbeat,
    );
    assert.equal(result.ok, false);
    assert.deepEqual(answer.counts, [0, 0]);
    assert.deepEqual(answer.fw, [2, 0]);
    assert.deepEqual(answer.srv, [1, 0]);
  });

  it('refuses counts over 100 or beyond the message, answering the quirk values', () => {
    const tooMany = guestAnswers(
      hostNegotiate([[3, 0]], [[3, 0]], [101, 1]),
      LINUX_IC_VERSIONS.framework,
      LINUX_IC_VERSIONS.heartbeat,
    );
    assert.equal(tooMany.result.ok, false);
    assert.deepEqual(
      [tooMany.answer.counts, tooMany.answer.fw, tooMany.answer.srv],
      [
        [0, 0],
        [101, 0],
        [1, 0],
      ],
    );
    const beyond = guestAnswers(
      hostNegotiate([[3, 0]], [[3, 0]], [1, 5]),
      LINUX_IC_VERSIONS.framework,
      LINUX_IC_VERSIONS.heartbeat,
    );
    assert.equal(beyond.result.ok, false);
    assert.match(
      (beyond.result as { reason: string }).reason,
      /invalid negotiate message: 1 framework and 5 service versions in 44 bytes/,
    );
    assert.deepEqual(beyond.answer.counts, [0, 0]);
  });

  it('leaves a message too short for the counts as it was', () => {
    const message = hostNegotiate([[3, 0]], [[3, 0]]).slice(0, 31);
    const before = message.slice();
    const buffer = new Uint8Array(44);
    buffer.set(message);
    const result = answerNegotiate(
      buffer,
      message.length,
      LINUX_IC_VERSIONS.framework,
      LINUX_IC_VERSIONS.heartbeat,
    );
    assert.equal(result.ok, false);
    assert.deepEqual(buffer.subarray(0, 31), before);
  });

  it("builds the host's request like the hand-built one", () => {
    const ours = buildNegotiate(HOST_IC_VERSIONS.framework, HOST_IC_VERSIONS.shutdown);
    const theirs = hostNegotiate(
      hyperV(HOST_IC_VERSIONS.framework),
      hyperV(HOST_IC_VERSIONS.shutdown),
    );
    assert.deepEqual(ours, theirs);
    const header = readIcHeader(ours);
    assert.ok(typeof header !== 'string');
    assert.equal(header.type, 0);
  });

  it('the host checks the answer: counts, and versions it offered', () => {
    const answer = (counts: V, fw: V, srv: V): Uint8Array => {
      const b = new Uint8Array(16);
      const v = new DataView(b.buffer);
      v.setUint16(0, counts[0], true);
      v.setUint16(2, counts[1], true);
      v.setUint16(8, fw[0], true);
      v.setUint16(10, fw[1], true);
      v.setUint16(12, srv[0], true);
      v.setUint16(14, srv[1], true);
      return b;
    };
    const fw = HOST_IC_VERSIONS.framework;
    const srv = HOST_IC_VERSIONS.kvp;
    assert.deepEqual(readNegotiateAnswer(answer([1, 1], [3, 0], [4, 0]), fw, srv), {
      framework: version(3, 0),
      service: version(4, 0),
    });
    assert.match(
      String(readNegotiateAnswer(answer([0, 0], [1, 0], [4, 0]), fw, srv)),
      /supports none of the offered versions/,
    );
    assert.match(
      String(readNegotiateAnswer(answer([2, 1], [3, 0], [4, 0]), fw, srv)),
      /counts 2\/1/,
    );
    assert.match(
      String(readNegotiateAnswer(answer([1, 1], [3, 0], [6, 0]), fw, srv)),
      /service version 6\.0, which was not offered/,
    );
    assert.match(
      String(readNegotiateAnswer(new Uint8Array(5), fw, srv)),
      /shorter than icmsg_negotiate/,
    );
  });
});

describe('negotiation over the bus', () => {
  it('a framework 1.0-only host: the util services come up, fcopy and VSS fail with a clear error', async (t) => {
    const bus = makeBus();
    const root = mkdtempSync(join(tmpdir(), 'hvkit-ic-nego-'));
    const old = { frameworkVersions: [version(1, 0)] };
    const heartbeat = new HeartbeatVsp({ intervalMs: 1000, ...old });
    const shutdown = new ShutdownVsp(old);
    const fcopy = new FcopyVsp(old);
    const vss = new VssVsp(old);
    t.after(async () => {
      heartbeat.dispose();
      await bus.close();
      rmSync(root, { recursive: true, force: true });
    });
    const vsps: IcVsp[] = [heartbeat, shutdown, fcopy, vss];
    for (const vsp of vsps) bus.host.addDevice(vsp);
    const fcopyDriver = new IcDriver(new FcopyService(root));
    bus.client.registerDriver(new IcDriver(new HeartbeatService()));
    bus.client.registerDriver(new IcDriver(new ShutdownService({ onShutdown: () => {} })));
    bus.client.registerDriver(fcopyDriver);
    bus.client.registerDriver(
      new IcDriver(new VssService({ freeze: [], thaw: [], hookTimeoutMs: 1000 })),
    );
    await bus.client.connect();
    await bus.client.requestOffers();
    await until(
      () => vsps.every((v) => v.state === 'ready' || v.state === 'failed'),
      5000,
      'negotiation',
    );
    assert.equal(heartbeat.state, 'ready');
    assert.deepEqual(heartbeat.versions, { framework: version(1, 0), service: version(3, 0) });
    assert.deepEqual(shutdown.versions, { framework: version(1, 0), service: version(3, 2) });
    assert.equal(fcopy.state, 'failed');
    assert.match(
      fcopy.error,
      /fcopy negotiation failed: the guest supports none of the offered versions \(framework 1\.0; service 1\.1\)/,
    );
    assert.match(fcopyDriver.negotiationError, /no common framework version/);
    assert.equal(vss.state, 'failed');
    await assert.rejects(
      fcopy.start({ directory: '/', fileName: 'x', size: 0 }),
      /fcopy negotiation failed/,
    );
    await assert.rejects(vss.backup({ timeoutMs: 1000 }), /vss negotiation failed/);
    // A service that is not negotiated refuses requests rather than guessing.
    assert.equal(fcopyDriver.stats.messages, 1);
  });
});
