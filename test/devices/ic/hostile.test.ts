/**
 * Arbitrary IC messages against both ends: the guest services never throw
 * or hang and answer or drop every message; the host services never throw
 * anything but their own IcError and every request settles.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { FcopyService } from '../../../src/devices/ic/fcopy/vsc.ts';
import { FcopyVsp } from '../../../src/devices/ic/fcopy/vsp.ts';
import { buildIcMessage } from '../../../src/devices/ic/framing.ts';
import { HeartbeatService } from '../../../src/devices/ic/heartbeat/vsc.ts';
import { HeartbeatVsp } from '../../../src/devices/ic/heartbeat/vsp.ts';
import { KvpPools } from '../../../src/devices/ic/kvp/pool-file.ts';
import { KvpService } from '../../../src/devices/ic/kvp/vsc.ts';
import { KvpVsp } from '../../../src/devices/ic/kvp/vsp.ts';
import { answerNegotiate, buildNegotiate } from '../../../src/devices/ic/negotiate.ts';
import {
  HOST_IC_VERSIONS,
  IcHeaderFlags,
  IcMessageType,
  LINUX_IC_VERSIONS,
} from '../../../src/devices/ic/protocol.ts';
import { ShutdownService } from '../../../src/devices/ic/shutdown/vsc.ts';
import { ShutdownVsp } from '../../../src/devices/ic/shutdown/vsp.ts';
import { GuestClock } from '../../../src/devices/ic/timesync/clock.ts';
import { TimesyncService } from '../../../src/devices/ic/timesync/vsc.ts';
import { TimesyncVsp } from '../../../src/devices/ic/timesync/vsp.ts';
import { IcDriver, type IcGuestService } from '../../../src/devices/ic/vsc.ts';
import { IcError, type IcVsp } from '../../../src/devices/ic/vsp.ts';
import { VssService } from '../../../src/devices/ic/vss/vsc.ts';
import { VssVsp } from '../../../src/devices/ic/vss/vsp.ts';
import { ChannelEndpoint } from '../../../src/vmbus/channel.ts';
import type { GuestDevice, GuestOffer } from '../../../src/vmbus/device.ts';
import { Queue } from '../../../src/vmbus/queue.ts';
import { Ring } from '../../../src/vmbus/ring.ts';
import { PacketType } from '../../../src/vmbus/ring-protocol.ts';
import { until } from '../../vmbus/harness.ts';

/** Host and guest endpoints over two 16 KiB rings; signals arrive as microtasks. */
function pair(): { host: ChannelEndpoint; guest: ChannelEndpoint } {
  const toGuest = Ring.fromBytes(new Uint8Array(new SharedArrayBuffer(16384)));
  const toHost = Ring.fromBytes(new Uint8Array(new SharedArrayBuffer(16384)));
  toGuest.initialize();
  toHost.initialize();
  const ends: { host?: ChannelEndpoint; guest?: ChannelEndpoint } = {};
  ends.host = new ChannelEndpoint(
    toGuest,
    toHost,
    () => queueMicrotask(() => ends.guest!.handleInterrupt()),
    'host',
  );
  ends.guest = new ChannelEndpoint(
    toHost,
    toGuest,
    () => queueMicrotask(() => ends.host!.handleInterrupt()),
    'guest',
  );
  return { host: ends.host, guest: ends.guest };
}

function fakeDevice(endpoint: ChannelEndpoint, classId: string): GuestDevice {
  const offer = {
    relid: 1,
    classId,
    instanceId: crypto.randomUUID(),
    subchannelIndex: 0,
  } as GuestOffer;
  return {
    offer,
    version: 0x50003,
    open: async () => {
      const queue = new Queue(endpoint, { name: 'guest', log: () => {} });
      return { offer, queue, close: async () => queue.close() };
    },
    onSubchannel: () => {},
    createGpadl: () => Promise.reject(new Error('not used')),
    teardownGpadl: () => Promise.reject(new Error('not used')),
    memory: {
      allocate: () => 0,
      free: () => {},
      bytes: () => new Uint8Array(0),
    },
  };
}

interface GuestCase {
  readonly name: string;
  readonly type: IcMessageType;
  readonly hostVersions: readonly number[];
  readonly make: (dir: string) => IcGuestService;
}

const guestCases: GuestCase[] = [
  {
    name: 'heartbeat',
    type: IcMessageType.Heartbeat,
    hostVersions: HOST_IC_VERSIONS.heartbeat,
    make: () => new HeartbeatService(),
  },
  {
    name: 'shutdown',
    type: IcMessageType.Shutdown,
    hostVersions: HOST_IC_VERSIONS.shutdown,
    make: () => new ShutdownService({ onShutdown: () => {} }),
  },
  {
    name: 'timesync',
    type: IcMessageType.Timesync,
    hostVersions: HOST_IC_VERSIONS.timesync,
    make: () => new TimesyncService({ clock: new GuestClock(), adjust: true }),
  },
  {
    name: 'kvp',
    type: IcMessageType.KvpExchange,
    hostVersions: HOST_IC_VERSIONS.kvp,
    make: (dir) => new KvpService(new KvpPools(join(dir, 'kvp'))),
  },
  {
    name: 'fcopy',
    type: IcMessageType.Fcopy,
    hostVersions: HOST_IC_VERSIONS.fcopy,
    make: (dir) => new FcopyService(join(dir, 'root')),
  },
  {
    name: 'vss',
    type: IcMessageType.Vss,
    hostVersions: HOST_IC_VERSIONS.vss,
    make: () => new VssService({ freeze: [], thaw: [], hookTimeoutMs: 1000 }),
  },
];

/** A message: raw bytes, or a header of the service's (or any) type with an arbitrary body. */
const guestMessage = (type: IcMessageType) =>
  fc.oneof(
    fc.uint8Array({ maxLength: 200 }),
    fc.record({
      type: fc.oneof(
        fc.constant(type),
        fc.constant(IcMessageType.Negotiate),
        fc.integer({ min: 0, max: 0xffff }),
      ),
      body: fc.oneof(
        fc.uint8Array({ maxLength: 64 }),
        fc.uint8Array({ minLength: 1000, maxLength: 8000 }),
        // Plausible bodies: an operation byte in range, zeros, then noise.
        fc
          .tuple(
            fc.integer({ min: 0, max: 7 }),
            fc.integer({ min: 0, max: 8000 }),
            fc.uint8Array({ maxLength: 32 }),
          )
          .map(([op, length, noise]) => {
            const b = new Uint8Array(length);
            if (length > 0) b[0] = op;
            b.set(noise.subarray(0, Math.max(0, length - 1)), Math.min(1, length));
            return b;
          }),
      ),
      completion: fc.boolean(),
    }),
  );

describe('hostile input to the IC guest services', () => {
  for (const c of guestCases) {
    it(`${c.name}: every message is answered in place or dropped; nothing throws or hangs`, async () => {
      const dir = mkdtempSync(join(tmpdir(), `hvkit-ic-fuzz-${c.name}-`));
      try {
        await fc.assert(
          fc.asyncProperty(
            fc.array(guestMessage(c.type), { minLength: 1, maxLength: 6 }),
            async (messages) => {
              const { host, guest } = pair();
              const driver = new IcDriver(c.make(dir));
              await driver.probe(fakeDevice(guest, driver.classId));
              const answers: { transLo: number; length: number; flags: number }[] = [];
              host.onPacket = (p) => {
                const bytes = p.payload();
                answers.push({
                  transLo: p.transLo,
                  length: p.payloadLength,
                  flags: bytes[25] ?? -1,
                });
                return true;
              };
              // Negotiate first, so service messages reach the service.
              const sentLength = new Map<number, number>();
              const negotiate = buildNegotiate(HOST_IC_VERSIONS.framework, c.hostVersions);
              host.sendInband(negotiate, 1);
              sentLength.set(1, negotiate.length);
              let sent = 1;
              for (const m of messages) {
                const id = ++sent;
                if (m instanceof Uint8Array) {
                  host.sendInband(m, id);
                  sentLength.set(id, m.length);
                } else {
                  const bytes = buildIcMessage(
                    { type: m.type, framework: 0x30000, messageVersion: 0x30000 },
                    m.body,
                  );
                  if (m.completion) host.sendCompletion(id, 0, bytes);
                  else host.sendInband(bytes, id);
                  sentLength.set(id, bytes.length);
                }
                await until(
                  () => driver.stats.replies + driver.stats.dropped === id,
                  5000,
                  'answer or drop',
                );
              }
              for (const a of answers) {
                assert.equal(a.flags, IcHeaderFlags.Transaction | IcHeaderFlags.Response);
                // In place: as long as the message (both padded to 8 by the ring).
                assert.equal(
                  a.length,
                  (sentLength.get(a.transLo)! + 7) & ~7,
                  `answer to ${a.transLo}`,
                );
              }
              assert.equal(answers.length, driver.stats.replies);
              await driver.remove(fakeDevice(guest, driver.classId));
            },
          ),
          { numRuns: c.name === 'kvp' || c.name === 'fcopy' ? 40 : 80 },
        );
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});

interface HostCase {
  readonly name: string;
  readonly guestFramework: readonly number[];
  readonly guestVersions: readonly number[];
  readonly make: () => IcVsp;
  /** Starts what the host does with the service; resolves when it settled. */
  readonly act: (vsp: IcVsp) => Promise<unknown>;
}

const hostCases: HostCase[] = [
  {
    name: 'kvp',
    guestFramework: LINUX_IC_VERSIONS.framework,
    guestVersions: LINUX_IC_VERSIONS.kvp,
    make: () => new KvpVsp({ timeoutMs: 30, negotiateTimeoutMs: 30 }),
    act: async (vsp) => {
      const kvp = vsp as KvpVsp;
      await kvp.get(0, 'key');
      await kvp.list(1);
      await kvp.getIpInfo('00:11:22:33:44:55');
    },
  },
  {
    name: 'fcopy',
    guestFramework: LINUX_IC_VERSIONS.fcopyFramework,
    guestVersions: LINUX_IC_VERSIONS.fcopy,
    make: () => new FcopyVsp({ timeoutMs: 30, negotiateTimeoutMs: 30 }),
    act: async (vsp) => {
      const fcopy = vsp as FcopyVsp;
      await fcopy.start({ directory: '/d', fileName: 'f', size: 10 }).catch(async (e) => {
        await fcopy.cancel();
        throw e;
      });
      await fcopy.write(0, new Uint8Array(10));
      await fcopy.complete();
    },
  },
  {
    name: 'vss',
    guestFramework: LINUX_IC_VERSIONS.vssFramework,
    guestVersions: LINUX_IC_VERSIONS.vss,
    make: () => new VssVsp({ negotiateTimeoutMs: 30 }),
    act: (vsp) => (vsp as VssVsp).backup({ timeoutMs: 30 }),
  },
  {
    name: 'shutdown',
    guestFramework: LINUX_IC_VERSIONS.framework,
    guestVersions: LINUX_IC_VERSIONS.shutdown,
    make: () => new ShutdownVsp({ negotiateTimeoutMs: 30 }),
    act: (vsp) => (vsp as ShutdownVsp).shutdown({ answerTimeoutMs: 30, message: 'bye' }),
  },
  {
    name: 'heartbeat',
    guestFramework: LINUX_IC_VERSIONS.framework,
    guestVersions: LINUX_IC_VERSIONS.heartbeat,
    make: () => new HeartbeatVsp({ intervalMs: 10, negotiateTimeoutMs: 30 }),
    act: () => new Promise((resolve) => setTimeout(resolve, 40)),
  },
  {
    name: 'timesync',
    guestFramework: LINUX_IC_VERSIONS.framework,
    guestVersions: LINUX_IC_VERSIONS.timesync,
    make: () => new TimesyncVsp({ intervalMs: 10, negotiateTimeoutMs: 30 }),
    act: () => new Promise((resolve) => setTimeout(resolve, 40)),
  },
];

/** How the hostile guest answers one host message. */
const answerPlan = fc.record({
  negotiateProperly: fc.boolean(),
  flips: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }),
  cut: fc.option(fc.nat({ max: 8000 }), { nil: undefined }),
  extra: fc.uint8Array({ maxLength: 16 }),
  transLo: fc.oneof(fc.constant('same' as const), fc.nat()),
  completion: fc.boolean(),
  silent: fc.boolean(),
});

describe('hostile answers to the IC host services', () => {
  for (const c of hostCases) {
    it(`${c.name}: arbitrary answers never throw anything but IcError, and every request settles`, async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(answerPlan, { minLength: 1, maxLength: 12 }), async (plans) => {
          const { host, guest } = pair();
          const vsp = c.make();
          let answered = 0;
          let packets = 0;
          guest.onPacket = (p) => {
            const plan = plans[answered++ % plans.length]!;
            const message = new Uint8Array(Math.max(p.payloadLength, 44));
            message.set(p.payload().subarray(0, p.payloadLength));
            let bytes = message.subarray(0, p.payloadLength);
            if (answered === 1 && plan.negotiateProperly) {
              answerNegotiate(message, p.payloadLength, c.guestFramework, c.guestVersions);
              bytes[25] = IcHeaderFlags.Transaction | IcHeaderFlags.Response;
            } else {
              if (plan.silent) return true;
              bytes[25] = IcHeaderFlags.Transaction | IcHeaderFlags.Response;
              for (const [at, value] of plan.flips)
                if (bytes.length > 0) bytes[at % bytes.length] = value;
              if (plan.cut !== undefined)
                bytes = bytes.subarray(0, Math.min(bytes.length, plan.cut));
              const grown = new Uint8Array(bytes.length + plan.extra.length);
              grown.set(bytes);
              grown.set(plan.extra, bytes.length);
              bytes = grown;
            }
            const transLo = plan.transLo === 'same' ? p.transLo : plan.transLo;
            packets++;
            if (plan.completion && answered > 1) guest.sendCompletion(transLo, 0, bytes);
            else guest.sendInband(bytes, transLo, 0, false);
            return true;
          };
          const hostQueue = new Queue(host, { name: 'host', log: () => {} });
          vsp.open(hostQueue);
          try {
            await until(() => vsp.state !== 'negotiating', 2000, 'negotiation settled');
            if (vsp.state === 'ready') {
              try {
                await c.act(vsp);
              } catch (error) {
                assert.ok(
                  error instanceof IcError,
                  `${(error as Error).name}: ${(error as Error).message}`,
                );
              }
            }
          } finally {
            vsp.close(hostQueue);
            (vsp as { dispose?: () => void }).dispose?.();
          }
          const s = vsp.stats;
          await until(
            () => s.answers + s.drained + s.unexpected + s.bad === packets || host.state !== 'open',
            1000,
            'counted',
          ).catch(() => {});
          assert.ok(s.answers + s.drained + s.unexpected + s.bad <= packets);
        }),
        { numRuns: 30 },
      );
    });
  }
});

// Keep the PacketType import meaningful: completions are what the guest must drop.
assert.equal(PacketType.Completion, 11);
