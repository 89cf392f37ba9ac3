/**
 * Hostile IC messages against both ends. The guest services get a proper
 * negotiation and then well-formed requests of their service (built from the
 * oracle's layouts and the uapi header's, not by the code under test), each
 * possibly mutated; they must answer in place or drop, never throw or hang,
 * and most requests must reach the service and be answered S_OK. The host
 * services get answers built the way Linux's hv_util builds them (the request
 * turned around in place), each possibly mutated; every request must settle
 * with an answer or an IcError, and most runs must get past negotiation. No
 * handler may throw: the queues' handlerErrors stay 0.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { FcopyService } from '../../../src/devices/ic/fcopy/vsc.ts';
import { FcopyVsp } from '../../../src/devices/ic/fcopy/vsp.ts';
import { HeartbeatService } from '../../../src/devices/ic/heartbeat/vsc.ts';
import { HeartbeatVsp } from '../../../src/devices/ic/heartbeat/vsp.ts';
import { KvpPools } from '../../../src/devices/ic/kvp/pool-file.ts';
import { KvpService } from '../../../src/devices/ic/kvp/vsc.ts';
import { KvpVsp } from '../../../src/devices/ic/kvp/vsp.ts';
import { HOST_IC_VERSIONS, LINUX_IC_VERSIONS } from '../../../src/devices/ic/protocol.ts';
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
import { oracleConstant } from '../../conformance/oracle.ts';
import { applyMutation, type FieldSpot, fieldsOf, mutation, Reach } from '../../hostile/mutate.ts';
import { build, concat, offsetOf, sizeOf } from '../../hostile/oracle-builder.ts';
import { until } from '../../vmbus/harness.ts';

fc.configureGlobal({ includeErrorInReport: true });

const c = (name: string): number => Number(oracleConstant('icmsg', name));
const MSG = {
  negotiate: c('ICMSGTYPE_NEGOTIATE'),
  heartbeat: c('ICMSGTYPE_HEARTBEAT'),
  kvp: c('ICMSGTYPE_KVPEXCHANGE'),
  shutdown: c('ICMSGTYPE_SHUTDOWN'),
  timesync: c('ICMSGTYPE_TIMESYNC'),
  vss: c('ICMSGTYPE_VSS'),
  fcopy: c('ICMSGTYPE_FCOPY'),
};
const TRANSACTION = c('ICMSGHDRFLAG_TRANSACTION');
const REQUEST = c('ICMSGHDRFLAG_REQUEST');
const RESPONSE = c('ICMSGHDRFLAG_RESPONSE');
const S_OK = c('HV_S_OK');
const PIPE = sizeOf('vmbuspipe_hdr');
const HDR = PIPE + sizeOf('icmsg_hdr');
const FLAGS_AT = PIPE + offsetOf('icmsg_hdr', 'icflags');
const STATUS_AT = PIPE + offsetOf('icmsg_hdr', 'status');
const TYPE_AT = PIPE + offsetOf('icmsg_hdr', 'icmsgtype');

// --- an independent IC message builder ---------------------------------------------

const version = (v: number): Uint8Array =>
  build('ic_version', { major: v >>> 16, minor: v & 0xffff });

/** Pipe header + IC header (+ body), as the host sends a request. */
function icMessage(type: number, framework: number, service: number, body: Uint8Array): Uint8Array {
  const pipe = build('vmbuspipe_hdr', { flags: 1, msgsize: sizeOf('icmsg_hdr') + body.length });
  const header = build('icmsg_hdr', {
    icverframe: version(framework),
    icmsgtype: type,
    icvermsg: version(service),
    icmsgsize: body.length,
    icflags: TRANSACTION | REQUEST,
  });
  return concat(pipe, header, body);
}

/** A negotiation request offering these versions. */
function negotiateRequest(frameworks: readonly number[], services: readonly number[]): Uint8Array {
  const body = concat(
    build('icmsg_negotiate', { icframe_vercnt: frameworks.length, icmsg_vercnt: services.length }),
    ...frameworks.map(version),
    ...services.map(version),
  );
  return icMessage(MSG.negotiate, 0, 0, body);
}

/** The negotiation answer Linux's vmbus_prep_negotiate_resp writes: one version of each. */
function negotiateAnswer(request: Uint8Array, framework: number, service: number): Uint8Array {
  const answer = request.slice();
  const body = PIPE + sizeOf('icmsg_hdr');
  const view = new DataView(answer.buffer);
  view.setUint16(body, 1, true);
  view.setUint16(body + 2, 1, true);
  answer.set(version(framework), body + 8);
  answer.set(version(service), body + 12);
  answer[FLAGS_AT] = TRANSACTION | RESPONSE;
  view.setUint32(STATUS_AT, S_OK, true);
  return answer;
}

/** A request turned around in place, as hv_util.c answers: same bytes, status, response flag. */
function inPlaceAnswer(request: Uint8Array, status = S_OK): Uint8Array {
  const answer = request.slice();
  answer[FLAGS_AT] = TRANSACTION | RESPONSE;
  new DataView(answer.buffer).setUint32(STATUS_AT, status >>> 0, true);
  return answer;
}

const utf16z = (text: string): Uint8Array => {
  const out = new Uint8Array(2 * (text.length + 1));
  for (let i = 0; i < text.length; i++) out[2 * i] = text.charCodeAt(i);
  return out;
};

// Not in the oracle (include/uapi/linux/hyperv.h, all packed): hv_fcopy_hdr is
// operation u32 + two 16-byte service ids; hv_start_fcopy follows it with
// file_name[260] and path_name[260] (UTF-16), copy_flags u32, file_size u64;
// hv_do_fcopy with pad u32, offset u64, size u32, data[6 KiB]. hv_vss_msg is
// operation u8 + 7 reserved, then a u32 of flags.
const FCOPY_HDR = 36;
function fcopyStart(name: string, size: number): Uint8Array {
  const b = new Uint8Array(FCOPY_HDR + 520 + 520 + 4 + 8);
  const v = new DataView(b.buffer);
  v.setUint32(0, 0, true);
  b.set(utf16z(name), FCOPY_HDR);
  b.set(utf16z('/'), FCOPY_HDR + 520);
  v.setUint32(FCOPY_HDR + 1040, 3, true); // OVER_WRITE | CREATE_PATH
  v.setBigUint64(FCOPY_HDR + 1044, BigInt(size), true);
  return b;
}
function fcopyWrite(offset: number, data: Uint8Array): Uint8Array {
  const b = new Uint8Array(FCOPY_HDR + 4 + 8 + 4 + 6 * 1024);
  const v = new DataView(b.buffer);
  v.setUint32(0, 1, true);
  v.setBigUint64(FCOPY_HDR + 4, BigInt(offset), true);
  v.setUint32(FCOPY_HDR + 12, data.length, true);
  b.set(data, FCOPY_HDR + 16);
  return b;
}
function fcopyOp(op: 2 | 3): Uint8Array {
  const b = new Uint8Array(FCOPY_HDR);
  new DataView(b.buffer).setUint32(0, op, true);
  return b;
}
function vssOp(op: number): Uint8Array {
  const b = new Uint8Array(12);
  b[0] = op;
  return b;
}

const KVP = {
  get: Number(oracleConstant('kvp', 'KVP_OP_GET')),
  set: Number(oracleConstant('kvp', 'KVP_OP_SET')),
  delete: Number(oracleConstant('kvp', 'KVP_OP_DELETE')),
  enumerate: Number(oracleConstant('kvp', 'KVP_OP_ENUMERATE')),
};
const KVP_BODY = offsetOf('hv_kvp_msg', 'body');
function kvpMessage(op: number, pool: number, key: string, value: string, index = 0): Uint8Array {
  const msg = build('hv_kvp_msg', { 'kvp_hdr.operation': op, 'kvp_hdr.pool': pool });
  const v = new DataView(msg.buffer);
  const keyBytes = utf16z(key);
  const valueBytes = utf16z(value);
  if (op === KVP.delete) {
    v.setUint32(KVP_BODY, keyBytes.length, true);
    msg.set(keyBytes, KVP_BODY + 4);
  } else {
    const at = KVP_BODY + (op === KVP.enumerate ? 4 : 0);
    if (op === KVP.enumerate) v.setUint32(KVP_BODY, index, true);
    const data = build('hv_kvp_exchg_msg_value', {
      value_type: 1,
      key_size: keyBytes.length,
      value_size: valueBytes.length,
      key: keyBytes,
      value: valueBytes,
    });
    msg.set(data, at);
  }
  return msg;
}

/** Pieces of the IC header a mutation may hit, plus the body's own fields. */
function spots(bodyStruct?: string): FieldSpot[] {
  return [
    ...fieldsOf('vmbuspipe_hdr'),
    ...fieldsOf('icmsg_hdr', PIPE),
    ...(bodyStruct ? fieldsOf(bodyStruct, HDR) : []),
  ];
}

// --- both ends over two rings -------------------------------------------------------

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

/** A guest device whose channel is `endpoint`; `queues` collects the queue the driver gets. */
function fakeDevice(endpoint: ChannelEndpoint, classId: string, queues: Queue[]): GuestDevice {
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
      queues.push(queue);
      return { offer, queue, close: async () => queue.close() };
    },
    onSubchannel: () => {},
    createGpadl: () => Promise.reject(new Error('not used')),
    teardownGpadl: () => Promise.reject(new Error('not used')),
    memory: { allocate: () => 0, free: () => {}, bytes: () => new Uint8Array(0) },
  };
}

// --- the guest services --------------------------------------------------------------

interface Request {
  readonly body: Uint8Array;
  readonly struct?: string;
}

interface GuestCase {
  readonly name: string;
  readonly type: number;
  readonly hostVersions: readonly number[];
  readonly make: (dir: string) => IcGuestService;
  /** Well-formed requests of the service, in an order that makes sense. */
  readonly requests: fc.Arbitrary<Request[]>;
  /** Share of runs in which some intact request must be answered S_OK. */
  readonly okShare: number;
}

const guestCases: GuestCase[] = [
  {
    name: 'heartbeat',
    type: MSG.heartbeat,
    hostVersions: HOST_IC_VERSIONS.heartbeat,
    make: () => new HeartbeatService(),
    requests: fc.array(
      fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }).map((seq) => ({
        body: build('heartbeat_msg_data', { seq_num: seq }),
        struct: 'heartbeat_msg_data',
      })),
      { minLength: 1, maxLength: 5 },
    ),
    okShare: 0.5,
  },
  {
    name: 'shutdown',
    type: MSG.shutdown,
    hostVersions: HOST_IC_VERSIONS.shutdown,
    make: () => new ShutdownService({ onShutdown: () => {} }),
    requests: fc.array(
      fc
        .record({ flags: fc.constantFrom(0, 1, 2, 3, 4), reason: fc.nat(), timeout: fc.nat() })
        .map(({ flags, reason, timeout }) => ({
          body: build('shutdown_msg_data', {
            flags,
            reason_code: reason,
            timeout_seconds: timeout,
            display_message: utf16z('hostile'),
          }),
          struct: 'shutdown_msg_data',
        })),
      { minLength: 1, maxLength: 4 },
    ),
    okShare: 0.4,
  },
  {
    name: 'timesync',
    type: MSG.timesync,
    hostVersions: HOST_IC_VERSIONS.timesync,
    make: () => new TimesyncService({ clock: new GuestClock(), adjust: true }),
    requests: fc.array(
      fc
        .record({ flags: fc.constantFrom(0, 1, 2), t: fc.bigInt({ min: 0n, max: 1n << 60n }) })
        .map(({ flags, t }) => ({
          body: build('ictimesync_ref_data', { parenttime: t, vmreferencetime: t, flags }),
          struct: 'ictimesync_ref_data',
        })),
      { minLength: 1, maxLength: 5 },
    ),
    okShare: 0.5,
  },
  {
    name: 'kvp',
    type: MSG.kvp,
    hostVersions: HOST_IC_VERSIONS.kvp,
    make: (dir) => new KvpService(new KvpPools(join(dir, `kvp-${crypto.randomUUID()}`))),
    requests: fc
      .array(
        fc.record({
          op: fc.constantFrom(KVP.set, KVP.set, KVP.get, KVP.delete, KVP.enumerate),
          pool: fc.constantFrom(0, 1, 2, 3, 4),
          key: fc.stringMatching(/^[a-z]{1,12}$/),
          value: fc.stringMatching(/^[ -~]{0,40}$/),
        }),
        { minLength: 1, maxLength: 5 },
      )
      .map((list) =>
        list.map((r) => ({ body: kvpMessage(r.op, r.pool, r.key, r.value), struct: 'hv_kvp_hdr' })),
      ),
    okShare: 0.25,
  },
  {
    name: 'fcopy',
    type: MSG.fcopy,
    hostVersions: HOST_IC_VERSIONS.fcopy,
    make: (dir) => new FcopyService(join(dir, 'root')),
    requests: fc
      .record({ name: fc.stringMatching(/^[a-z]{1,10}$/), data: fc.uint8Array({ maxLength: 300 }) })
      .map(({ name, data }) => [
        { body: fcopyStart(`${name}.bin`, data.length) },
        { body: fcopyWrite(0, data) },
        { body: fcopyOp(2) },
      ]),
    okShare: 0.4,
  },
  {
    name: 'vss',
    type: MSG.vss,
    hostVersions: HOST_IC_VERSIONS.vss,
    make: () => new VssService({ freeze: [], thaw: [], hookTimeoutMs: 1000 }),
    requests: fc.constantFrom(
      [{ body: vssOp(2) }],
      [{ body: vssOp(2) }, { body: vssOp(5) }, { body: vssOp(6) }],
      [{ body: vssOp(5) }, { body: vssOp(6) }],
    ),
    okShare: 0.4,
  },
];

describe('hostile input to the IC guest services', () => {
  for (const gc of guestCases) {
    it(`${gc.name}: every message is answered in place or dropped; most reach the service`, async (t) => {
      const dir = mkdtempSync(join(tmpdir(), `hvkit-ic-fuzz-${gc.name}-`));
      const reach = new Reach();
      try {
        await fc.assert(
          fc.asyncProperty(
            gc.requests.chain((requests) =>
              fc.tuple(
                fc.constant(requests),
                fc.array(mutation(5), { minLength: requests.length, maxLength: requests.length }),
              ),
            ),
            async ([requests, mutations]) => {
              reach.run();
              const { host, guest } = pair();
              const queues: Queue[] = [];
              const driver = new IcDriver(gc.make(dir));
              const device = fakeDevice(guest, driver.classId, queues);
              await driver.probe(device);
              const answers = new Map<number, { status: number; flags: number; length: number }>();
              host.onPacket = (p) => {
                const bytes = p.payload();
                const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
                answers.set(p.transLo, {
                  status: bytes.length >= HDR ? v.getUint32(STATUS_AT, true) : -1,
                  flags: bytes[FLAGS_AT] ?? -1,
                  length: p.payloadLength,
                });
                return true;
              };
              const sentLength = new Map<number, number>();
              const send = async (id: number, bytes: Uint8Array): Promise<void> => {
                sentLength.set(id, bytes.length);
                assert.equal(host.sendInband(bytes, id), 'ok');
                await until(
                  () => driver.stats.replies + driver.stats.dropped >= id,
                  5000,
                  `answer or drop of message ${id}`,
                );
              };
              await send(1, negotiateRequest(HOST_IC_VERSIONS.framework, gc.hostVersions));
              assert.ok(driver.versions, `negotiated: ${driver.negotiationError}`);
              reach.hit('negotiated');
              const v = driver.versions;
              let intactOk = false;
              for (const [i, request] of requests.entries()) {
                const m = mutations[i]!;
                const bytes = applyMutation(
                  icMessage(gc.type, v.framework, v.service, request.body),
                  m,
                  spots(request.struct),
                );
                await send(i + 2, bytes);
                const answer = answers.get(i + 2);
                if (m.kind === 'keep' && answer?.status === S_OK) intactOk = true;
                if (answer) reach.hit('answered');
              }
              if (intactOk) reach.hit('intact-answered-ok');
              for (const [id, a] of answers) {
                assert.equal(a.flags, TRANSACTION | RESPONSE, `answer ${id} is marked a response`);
                // In place: as long as the message (both padded to 8 by the ring).
                assert.equal(a.length, (sentLength.get(id)! + 7) & ~7, `answer ${id} is in place`);
              }
              assert.equal(answers.size, driver.stats.replies);
              assert.equal(queues[0]!.stats.handlerErrors, 0, 'no service threw');
              await driver.remove(device);
            },
          ),
          { numRuns: gc.name === 'kvp' || gc.name === 'fcopy' ? 60 : 100 },
        );
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
      t.diagnostic(`reach: ${reach.describe()}`);
      reach.assertAtLeast('negotiated', 1);
      reach.assertAtLeast('intact-answered-ok', gc.okShare);
    });
  }
});

// --- the host services ---------------------------------------------------------------

interface HostCase {
  readonly name: string;
  readonly type: number;
  readonly guestFramework: readonly number[];
  readonly guestVersions: readonly number[];
  readonly make: () => IcVsp;
  /** Starts what the host does with the service; resolves when it settled. */
  readonly act: (vsp: IcVsp) => Promise<unknown>;
}

const hostCases: HostCase[] = [
  {
    name: 'kvp',
    type: MSG.kvp,
    guestFramework: LINUX_IC_VERSIONS.framework,
    guestVersions: LINUX_IC_VERSIONS.kvp,
    make: () => new KvpVsp({ timeoutMs: 50, negotiateTimeoutMs: 50 }),
    act: async (vsp) => {
      const kvp = vsp as KvpVsp;
      await kvp.get(0, 'key');
      await kvp.list(1);
      await kvp.getIpInfo('00:11:22:33:44:55');
    },
  },
  {
    name: 'fcopy',
    type: MSG.fcopy,
    guestFramework: LINUX_IC_VERSIONS.fcopyFramework,
    guestVersions: LINUX_IC_VERSIONS.fcopy,
    make: () => new FcopyVsp({ timeoutMs: 50, negotiateTimeoutMs: 50 }),
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
    type: MSG.vss,
    guestFramework: LINUX_IC_VERSIONS.vssFramework,
    guestVersions: LINUX_IC_VERSIONS.vss,
    make: () => new VssVsp({ negotiateTimeoutMs: 50 }),
    act: (vsp) => (vsp as VssVsp).backup({ timeoutMs: 50 }),
  },
  {
    name: 'shutdown',
    type: MSG.shutdown,
    guestFramework: LINUX_IC_VERSIONS.framework,
    guestVersions: LINUX_IC_VERSIONS.shutdown,
    make: () => new ShutdownVsp({ negotiateTimeoutMs: 50 }),
    act: (vsp) => (vsp as ShutdownVsp).shutdown({ answerTimeoutMs: 50, message: 'bye' }),
  },
  {
    name: 'heartbeat',
    type: MSG.heartbeat,
    guestFramework: LINUX_IC_VERSIONS.framework,
    guestVersions: LINUX_IC_VERSIONS.heartbeat,
    make: () => new HeartbeatVsp({ intervalMs: 10, negotiateTimeoutMs: 50 }),
    act: () => new Promise((resolve) => setTimeout(resolve, 45)),
  },
  {
    name: 'timesync',
    type: MSG.timesync,
    guestFramework: LINUX_IC_VERSIONS.framework,
    guestVersions: LINUX_IC_VERSIONS.timesync,
    make: () => new TimesyncVsp({ intervalMs: 10, negotiateTimeoutMs: 50 }),
    act: () => new Promise((resolve) => setTimeout(resolve, 45)),
  },
];

/** The highest version of `ours` the host also offers (what Linux's negotiation picks). */
function pick(offered: Uint8Array, count: number, at: number, ours: readonly number[]): number {
  const view = new DataView(offered.buffer, offered.byteOffset);
  const theirs: number[] = [];
  for (let i = 0; i < count && at + 4 * i + 4 <= offered.length; i++) {
    theirs.push((view.getUint16(at + 4 * i, true) << 16) | view.getUint16(at + 4 * i + 2, true));
  }
  return ours.find((v) => theirs.includes(v)) ?? ours[0]!;
}

/** How the hostile guest answers one host message. */
const answerPlan = fc.record({
  /** A negotiation answer is left intact in most runs, so the services get to work. */
  negotiation: fc.oneof(
    { weight: 5, arbitrary: fc.constant('intact' as const) },
    { weight: 1, arbitrary: fc.constant('hostile' as const) },
  ),
  m: mutation(10),
  transLo: fc.oneof(
    { weight: 8, arbitrary: fc.constant('same' as const) },
    { weight: 1, arbitrary: fc.nat() },
  ),
  completion: fc.oneof(
    { weight: 8, arbitrary: fc.constant(false) },
    { weight: 1, arbitrary: fc.constant(true) },
  ),
  silent: fc.oneof(
    { weight: 9, arbitrary: fc.constant(false) },
    { weight: 1, arbitrary: fc.constant(true) },
  ),
  status: fc.oneof({ weight: 8, arbitrary: fc.constant(S_OK) }, { weight: 2, arbitrary: fc.nat() }),
});

describe('hostile answers to the IC host services', () => {
  for (const hc of hostCases) {
    it(`${hc.name}: every request settles with an answer or an IcError; most runs get past negotiation`, async (t) => {
      const reach = new Reach();
      await fc.assert(
        fc.asyncProperty(fc.array(answerPlan, { minLength: 1, maxLength: 12 }), async (plans) => {
          reach.run();
          const { host, guest } = pair();
          const vsp = hc.make();
          let answered = 0;
          guest.onPacket = (p) => {
            const plan = plans[answered++ % plans.length]!;
            const request = p.payload().slice(0, p.payloadLength);
            const type =
              request.length >= HDR ? new DataView(request.buffer).getUint16(TYPE_AT, true) : -1;
            const intact = type === MSG.negotiate && plan.negotiation === 'intact';
            if (plan.silent && !intact) return true;
            let bytes: Uint8Array;
            if (type === MSG.negotiate) {
              const body = HDR;
              const view = new DataView(request.buffer);
              const frames = view.getUint16(body, true);
              const services = view.getUint16(body + 2, true);
              const fw = pick(request, frames, body + 8, hc.guestFramework);
              const sv = pick(request, services, body + 8 + 4 * frames, hc.guestVersions);
              bytes = negotiateAnswer(request, fw, sv);
            } else {
              // KVP enumeration ends where Linux's does: "no more" after a few records.
              const enumerating =
                type === MSG.kvp &&
                request[HDR + offsetOf('hv_kvp_msg', 'kvp_hdr.operation')] === KVP.enumerate;
              const index = enumerating
                ? new DataView(request.buffer).getUint32(HDR + KVP_BODY, true)
                : 0;
              bytes = inPlaceAnswer(
                request,
                enumerating && index >= 3
                  ? Number(oracleConstant('icmsg', 'HV_S_CONT'))
                  : plan.status,
              );
            }
            if (!intact) bytes = applyMutation(bytes, plan.m, spots());
            const transLo = plan.transLo === 'same' || intact ? p.transLo : plan.transLo;
            if (plan.completion && !intact) guest.sendCompletion(transLo, 0, bytes);
            else guest.sendInband(bytes, transLo, 0, false);
            return true;
          };
          const hostQueue = new Queue(host, { name: 'host', log: () => {} });
          vsp.open(hostQueue);
          try {
            await until(() => vsp.state !== 'negotiating', 2000, 'negotiation settled');
            if (vsp.state === 'ready') {
              reach.hit('negotiated');
              try {
                await hc.act(vsp);
                reach.hit('act-succeeded');
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
          if (s.answers + s.drained > 0) reach.hit('answers-accepted');
          // Beyond the negotiation: an answer to a service request or a posted message.
          if (s.answers > 1 || s.drained > 0) reach.hit('service-answered');
          assert.equal(hostQueue.stats.handlerErrors, 0, 'no host service threw');
        }),
        { numRuns: 60 },
      );
      t.diagnostic(`reach: ${reach.describe()}`);
      reach.assertAtLeast('negotiated', 0.7);
      reach.assertAtLeast('answers-accepted', 0.6);
      reach.assertAtLeast('service-answered', 0.35);
    });
  }
});
