/**
 * Hostile input to the bus itself: channel messages from a hostile guest to
 * the server, GPADL descriptions, ring images from a hostile peer, and
 * messages from a hostile host into the guest's SynIC. Every generator
 * starts from well-formed input built from the oracle's layouts (never by
 * the encoders under test) and mutates it; each property asserts how many
 * runs reached the path it is about, so a generator that stops reaching it
 * fails the test.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';

fc.configureGlobal({ includeErrorInReport: true });

import { HvMsr } from '../../src/hv/protocol.ts';
import { ChannelEndpoint } from '../../src/vmbus/channel.ts';
import { GpadlTable } from '../../src/vmbus/gpadl.ts';
import { GpaRangeList, PacketView, TransferPageRanges } from '../../src/vmbus/packet.ts';
import { VmbusVersion } from '../../src/vmbus/protocol.ts';
import { Ring, RingCorruptError, RingReader } from '../../src/vmbus/ring.ts';
import type { ServerAction } from '../../src/vmbus/server/actions.ts';
import { VmbusServer } from '../../src/vmbus/server/state.ts';
import { applyMutation, fieldsOf, mutation, Reach } from '../hostile/mutate.ts';
import { build, concat, u64s } from '../hostile/oracle-builder.ts';
import { makeBus, until } from './harness.ts';

const PAGE = 4096;
const GUEST_PAGES = 256;
const VP_COUNT = 2;
const CLASS_ID = '6a3a7a2c-5e0b-4d7b-9f3e-8f1c2d4b6e01';

/** Channel message types (the oracle's CHANNELMSG_*). */
const Msg = {
  Offer: 1,
  Rescind: 2,
  RequestOffers: 3,
  OpenChannel: 5,
  CloseChannel: 7,
  GpadlHeader: 8,
  GpadlBody: 9,
  GpadlTeardown: 11,
  RelidReleased: 13,
  InitiateContact: 14,
  VersionResponse: 15,
  Unload: 16,
  UnloadResponse: 17,
  ModifyChannel: 22,
} as const;

/** A channel message of `struct` with its header's msgtype set. */
function message(
  struct: string,
  type: number,
  values: Record<string, number | bigint | Uint8Array> = {},
  tail?: Uint8Array,
): Uint8Array {
  const bytes = build(struct, values, tail);
  new DataView(bytes.buffer).setUint32(0, type, true);
  return bytes;
}

function typeOf(payload: Uint8Array): number {
  return payload.length >= 4
    ? new DataView(payload.buffer, payload.byteOffset).getUint32(0, true)
    : -1;
}

// --- a hostile guest's session with the server ---------------------------------

interface Step {
  readonly struct: string;
  readonly bytes: Uint8Array;
}

const versions = [
  VmbusVersion.Win10V5_3,
  VmbusVersion.Win10V5_2,
  VmbusVersion.Win10V5,
  VmbusVersion.Win10,
  VmbusVersion.Win8_1,
  VmbusVersion.Win8,
  VmbusVersion.Win7,
];

/** A GPADL of these pages: a header, and bodies for what does not fit it. */
function gpadlMessages(handle: number, pfns: readonly number[]): Step[] {
  const headerPfns = pfns.slice(0, 26);
  const header = message(
    'vmbus_channel_gpadl_header',
    Msg.GpadlHeader,
    { child_relid: 1, gpadl: handle, range_buflen: 8 + 8 * pfns.length, rangecount: 1 },
    concat(
      build('gpa_range', { byte_count: pfns.length * PAGE, byte_offset: 0 }),
      u64s(headerPfns),
    ),
  );
  const steps: Step[] = [{ struct: 'vmbus_channel_gpadl_header', bytes: header }];
  // Bodies of at most 28 PFNs (16 + 28 * 8 = MAX_SIZE_CHANNEL_MESSAGE); Linux leaves msgnumber 0.
  for (let at = 26; at < pfns.length; at += 28) {
    steps.push({
      struct: 'vmbus_channel_gpadl_body',
      bytes: message(
        'vmbus_channel_gpadl_body',
        Msg.GpadlBody,
        { msgnumber: 0, gpadl: handle },
        u64s(pfns.slice(at, at + 28)),
      ),
    });
  }
  return steps;
}

/** A plausible guest session: contact, offers, a ring GPADL, open, and some of the rest. */
const session = fc
  .record({
    version: fc.constantFrom(...versions),
    pages: fc.integer({ min: 4, max: 40 }),
    firstPfn: fc.oneof(
      { weight: 5, arbitrary: fc.integer({ min: 1, max: GUEST_PAGES - 41 }) },
      { weight: 1, arbitrary: fc.integer({ min: GUEST_PAGES - 41, max: GUEST_PAGES + 4 }) },
    ),
    // Where the host-to-guest ring starts: usually a valid split (2 pages or more each side).
    split: fc.oneof(
      { weight: 4, arbitrary: fc.double({ min: 0, max: 1, noNaN: true }) },
      { weight: 1, arbitrary: fc.constant(-1) },
    ),
    targetVp: fc.constantFrom(0, 0, 0, 1, 2),
    tail: fc.array(
      fc.constantFrom('close', 'teardown', 'released', 'modify', 'unload', 'requestoffers'),
      { maxLength: 4 },
    ),
  })
  .map(({ version, pages, firstPfn, split, targetVp, tail }): Step[] => {
    const downstream = split < 0 ? pages : 2 + Math.floor(split * Math.max(0, pages - 3));
    const handle = 0xe1e10;
    const pfns = Array.from({ length: pages }, (_, i) => firstPfn + i);
    const steps: Step[] = [
      {
        struct: 'vmbus_channel_initiate_contact',
        bytes: message('vmbus_channel_initiate_contact', Msg.InitiateContact, {
          vmbus_version_requested: version,
          target_vcpu: 0,
          msg_sint: 2,
        }),
      },
      {
        struct: 'vmbus_channel_message_header',
        bytes: message('vmbus_channel_message_header', Msg.RequestOffers),
      },
      ...gpadlMessages(handle, pfns),
      {
        struct: 'vmbus_channel_open_channel',
        bytes: message('vmbus_channel_open_channel', Msg.OpenChannel, {
          child_relid: 1,
          openid: 1,
          ringbuffer_gpadlhandle: handle,
          target_vp: targetVp,
          downstream_ringbuffer_pageoffset: downstream,
        }),
      },
    ];
    const more: Record<string, Step> = {
      close: {
        struct: 'vmbus_channel_close_channel',
        bytes: message('vmbus_channel_close_channel', Msg.CloseChannel, { child_relid: 1 }),
      },
      teardown: {
        struct: 'vmbus_channel_gpadl_teardown',
        bytes: message('vmbus_channel_gpadl_teardown', Msg.GpadlTeardown, {
          child_relid: 1,
          gpadl: handle,
        }),
      },
      released: {
        struct: 'vmbus_channel_relid_released',
        bytes: message('vmbus_channel_relid_released', Msg.RelidReleased, { child_relid: 1 }),
      },
      modify: {
        struct: 'vmbus_channel_modifychannel',
        bytes: message('vmbus_channel_modifychannel', Msg.ModifyChannel, {
          child_relid: 1,
          target_vp: 1,
        }),
      },
      unload: {
        struct: 'vmbus_channel_message_header',
        bytes: message('vmbus_channel_message_header', Msg.Unload),
      },
      requestoffers: {
        struct: 'vmbus_channel_message_header',
        bytes: message('vmbus_channel_message_header', Msg.RequestOffers),
      },
    };
    for (const t of tail) steps.push(more[t]!);
    return steps;
  });

/** A session with each message possibly mutated, sent on the right connection id or another. */
const hostileSession = session.chain((steps) =>
  fc.tuple(
    fc.constant(steps),
    fc.array(
      fc.tuple(
        mutation(30),
        fc.oneof(
          { weight: 12, arbitrary: fc.constant('right' as const) },
          { weight: 1, arbitrary: fc.constantFrom(1, 4, 7) },
        ),
      ),
      {
        minLength: steps.length,
        maxLength: steps.length,
      },
    ),
  ),
);

const ACTION_KINDS = new Set([
  'send',
  'open-channel',
  'close-channel',
  'modify-channel',
  'connected',
  'disconnected',
  'dropped',
]);

function checkActions(actions: readonly ServerAction[]): void {
  for (const a of actions) {
    assert.ok(ACTION_KINDS.has(a.kind), `unknown action ${a.kind}`);
    if (a.kind === 'send') {
      assert.ok(
        a.payload.length >= 8 && a.payload.length <= 240,
        'a channel message fits its slot',
      );
      assert.ok(
        typeOf(a.payload) > 0 && typeOf(a.payload) < 25,
        `message type ${typeOf(a.payload)}`,
      );
      assert.ok(a.vp >= 0 && a.vp < VP_COUNT, `message to VP ${a.vp}, which does not exist`);
    }
    if (a.kind === 'open-channel') {
      for (const pfn of a.gpadl.pfns)
        assert.ok(pfn < GUEST_PAGES, 'ring pages inside guest memory');
      assert.ok(a.downstreamPageOffset > 0 && a.downstreamPageOffset < a.gpadl.pfns.length);
    }
  }
}

describe('hostile guest: channel messages to the server', () => {
  it('never throws; bad messages are dropped; sessions get as far as their messages allow; unload and renegotiation work', (t) => {
    const reach = new Reach();
    fc.assert(
      fc.property(hostileSession, ([steps, plan]) => {
        reach.run();
        const server = new VmbusServer({ vpCount: VP_COUNT, guestPageCount: GUEST_PAGES });
        server.addOffer(1, { classId: CLASS_ID, instanceId: crypto.randomUUID() });
        const sent: Uint8Array[] = [];
        let negotiated = false;
        const version = new DataView(steps[0]!.bytes.buffer).getUint32(8, true);
        steps.forEach((step, i) => {
          const [m, where] = plan[i]!;
          const bytes = applyMutation(step.bytes, m, fieldsOf(step.struct));
          // The right connection id: the negotiated one, or for INITIATE_CONTACT
          // the one its version uses (4 from VMBus 5.0 on, else 1).
          const contact = i === 0 ? (version >= VmbusVersion.Win10V5 ? 4 : 1) : 1;
          const connection =
            where === 'right' ? (server.connected?.messageConnectionId ?? contact) : Number(where);
          const actions = server.receive(connection, bytes);
          if (server.connected) negotiated = true;
          checkActions(actions);
          for (const a of actions) {
            if (a.kind === 'send') sent.push(a.payload);
            // Carry out what the host bus would: opens succeed, closes complete.
            if (a.kind === 'open-channel') {
              reach.hit('open-channel');
              checkActions(server.openCompleted(a.relid, true));
            }
            if (a.kind === 'close-channel') checkActions(server.closeCompleted(a.relid));
            if (a.kind === 'dropped') reach.hit('dropped');
          }
          if (server.gpadls.all().length > 0) reach.hit('gpadl-created');
        });
        if (negotiated) reach.hit('negotiated');
        assert.equal(server.stats.messagesIn, steps.length);
        for (const g of server.gpadls.all()) {
          assert.ok(
            g.pfns.every((pfn) => pfn < GUEST_PAGES),
            'GPADL pages inside guest memory',
          );
        }
        for (const c of server.channelSummaries()) assert.ok(c.relid >= 1 && c.relid < 2048);

        // Whatever happened, UNLOAD and a fresh INITIATE_CONTACT bring the bus back.
        const unload = server.receive(
          server.connected?.messageConnectionId ?? 4,
          message('vmbus_channel_message_header', Msg.Unload),
        );
        checkActions(unload);
        for (const a of unload) {
          if (a.kind === 'close-channel') checkActions(server.closeCompleted(a.relid));
        }
        const again = server.receive(
          4,
          message('vmbus_channel_initiate_contact', Msg.InitiateContact, {
            vmbus_version_requested: VmbusVersion.Win10V5_3,
            msg_sint: 2,
          }),
        );
        checkActions(again);
        const answer = again.find(
          (a) => a.kind === 'send' && typeOf(a.payload) === Msg.VersionResponse,
        );
        assert.ok(answer && answer.kind === 'send', 'a VERSION_RESPONSE after the unload');
        assert.equal(answer.payload[8], 1, 'version 5.3 is accepted again');
        assert.equal(server.connected?.version, VmbusVersion.Win10V5_3);
      }),
      { numRuns: 400 },
    );
    t.diagnostic(`reach: ${reach.describe()}`);
    reach.assertAtLeast('negotiated', 0.7);
    reach.assertAtLeast('gpadl-created', 0.45);
    reach.assertAtLeast('open-channel', 0.2);
    reach.assertAtLeast('dropped', 0.5);
  });

  it('keeps the GPADL table to pages inside guest memory under well-formed and mutated descriptions', (t) => {
    const reach = new Reach();
    const description = fc
      .record({
        handle: fc.integer({ min: 1, max: 3 }),
        pages: fc.integer({ min: 1, max: 60 }),
        first: fc.integer({ min: 0, max: 70 }),
      })
      .map(({ handle, pages, first }) =>
        gpadlMessages(
          handle,
          Array.from({ length: pages }, (_, i) => first + i),
        ),
      );
    fc.assert(
      fc.property(
        fc.array(fc.tuple(description, fc.array(mutation(5), { minLength: 3, maxLength: 3 })), {
          minLength: 1,
          maxLength: 4,
        }),
        (gpadls) => {
          reach.run();
          const table = new GpadlTable(64);
          let created = 0;
          for (const [steps, mutations] of gpadls) {
            steps.forEach((step, i) => {
              const bytes = applyMutation(step.bytes, mutations[i]!, fieldsOf(step.struct));
              const event =
                step.struct === 'vmbus_channel_gpadl_header'
                  ? table.header(bytes)
                  : table.body(bytes);
              assert.ok(['created', 'pending', 'invalid'].includes(event.kind));
              if (event.kind === 'created' && event.status === 0) {
                created++;
                const pfns = table.get(event.handle)?.pfns ?? [];
                assert.ok(pfns.length > 0, 'a created GPADL is in the table');
                assert.ok(
                  pfns.every((pfn) => pfn < 64),
                  'a created GPADL lies inside memory',
                );
              }
              if (event.kind === 'invalid') reach.hit('refused');
            });
          }
          if (created > 0) reach.hit('created');
          for (const g of table.all()) {
            assert.ok(
              g.pfns.every((pfn) => pfn < 64),
              'only pages inside guest memory',
            );
            assert.ok(g.ranges.length > 0);
            reach.hit('in-table');
          }
        },
      ),
      { numRuns: 400 },
    );
    t.diagnostic(`reach: ${reach.describe()}`);
    reach.assertAtLeast('created', 0.3);
    reach.assertAtLeast('refused', 0.3);
  });

  it('creates exactly the described GPADL from an intact description', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 60 }),
        fc.integer({ min: 0, max: 3 }),
        (pages, first) => {
          const table = new GpadlTable(64);
          const pfns = Array.from({ length: pages }, (_, i) => first + i);
          let last: ReturnType<GpadlTable['header']> | undefined;
          for (const step of gpadlMessages(7, pfns)) {
            last =
              step.struct === 'vmbus_channel_gpadl_header'
                ? table.header(step.bytes)
                : table.body(step.bytes);
          }
          assert.equal(last?.kind, 'created');
          const g = table.get(7)!;
          assert.deepEqual([...g.pfns], pfns);
          assert.equal(g.ranges[0]!.byteCount, pages * PAGE);
        },
      ),
      { numRuns: 100 },
    );
  });
});

// --- ring images from a hostile peer ---------------------------------------------

const RING_DATA = 4096;

interface Written {
  readonly type: number;
  readonly offset8: number;
  readonly trans: number;
  readonly payload: Uint8Array;
}

/**
 * A ring image (header page + 4 KiB data) holding `packets` written the way
 * Linux's ring_buffer.c writes them: descriptor, payload padded to 8, the u64
 * trailer holding the packet's start << 32, wrapping at the end of the data
 * area; read_index where the first packet starts, write_index after the last.
 */
function ringImage(start8: number, packets: readonly Written[]): Uint8Array {
  const image = new Uint8Array(PAGE + RING_DATA);
  const data = image.subarray(PAGE);
  const start = (start8 * 8) % RING_DATA;
  let at = start;
  const put = (bytes: Uint8Array): void => {
    for (const b of bytes) {
      data[at] = b;
      at = (at + 1) % RING_DATA;
    }
  };
  for (const p of packets) {
    const begin = at;
    const len = (16 + p.payload.length + 7) & ~7;
    put(
      build('vmpacket_descriptor', {
        type: p.type,
        offset8: p.offset8,
        len8: len / 8,
        flags: 0,
        trans_id: p.trans,
      }),
    );
    put(p.payload);
    put(new Uint8Array(len - 16 - p.payload.length));
    put(u64s([BigInt(begin) << 32n]));
  }
  const view = new DataView(image.buffer);
  view.setUint32(0, at, true); // write_index
  view.setUint32(4, start, true); // read_index
  return image;
}

const writtenPackets = fc.array(
  fc.record({
    type: fc.constantFrom(6, 6, 7, 9, 11),
    offset8: fc.constant(2),
    trans: fc.nat(),
    payload: fc.uint8Array({ maxLength: 300 }),
  }),
  { minLength: 1, maxLength: 10 },
);

/** Where a mutation of the ring image goes: the header's indices or a packet's descriptor. */
const ringSpots = [
  { offset: 0, size: 4 as const },
  { offset: 4, size: 4 as const },
];

describe('hostile peer: ring images', () => {
  it('the reader returns exactly what was written, or stops at corruption without reading outside the ring', (t) => {
    const reach = new Reach();
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: RING_DATA / 8 - 1 }),
        writtenPackets,
        mutation(5),
        fc.oneof(
          { weight: 3, arbitrary: fc.constant<[number, number][]>([]) },
          {
            weight: 1,
            arbitrary: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), {
              minLength: 1,
              maxLength: 3,
            }),
          },
        ),
        (start8, packets, m, flips) => {
          reach.run();
          let total = 0;
          const fitting: Written[] = [];
          for (const p of packets) {
            const bytes = ((16 + p.payload.length + 7) & ~7) + 8;
            if (total + bytes >= RING_DATA) break;
            total += bytes;
            fitting.push(p);
          }
          let image = ringImage(start8, fitting);
          // Mutate the indices (boundary values, off by one) or nothing.
          image = applyMutation(
            image,
            m.kind === 'truncate' || m.kind === 'extend' ? { kind: 'keep' } : m,
            ringSpots,
          );
          // And sometimes a few bytes of the data area (a descriptor's len8, say).
          for (const [at, value] of flips) image[PAGE + (at % RING_DATA)] = value;
          const intact = m.kind === 'keep' && flips.length === 0;
          const ring = Ring.fromBytes(image);
          let reader: RingReader;
          try {
            reader = new RingReader(ring);
          } catch (error) {
            if (!(error instanceof RingCorruptError)) throw error;
            assert.ok(!intact, 'an intact image has a valid read index');
            reach.hit('refused-at-open');
            return;
          }
          const buffer = new Uint8Array(RING_DATA);
          const packet = new PacketView(buffer);
          const ranges = new GpaRangeList();
          const xfer = new TransferPageRanges();
          const seen: { trans: number; payload: Uint8Array }[] = [];
          let consumed = 0;
          let status: ReturnType<RingReader['next']> = 'empty';
          for (let i = 0; i < 1000; i++) {
            status = reader.next(buffer);
            if (status !== 'packet') break;
            assert.ok(reader.length >= 16 && reader.length <= RING_DATA - 8);
            consumed += reader.length + 8;
            assert.ok(consumed < RING_DATA, 'never reads more than the ring holds');
            if (packet.load(reader.length) === undefined) {
              assert.ok(packet.payloadOffset <= packet.length);
              seen.push({ trans: packet.transLo, payload: packet.payload().slice() });
              if (ranges.parse(packet) === undefined) {
                for (let r = 0; r < ranges.count; r++) {
                  assert.ok(ranges.pfnStart[r]! + ranges.pfnCount[r]! <= ranges.pfns.length);
                }
              }
              xfer.parse(packet);
            }
          }
          assert.ok(status === 'empty' || status === 'corrupt');
          if (seen.length > 0) reach.hit('parsed-packets');
          if (status === 'corrupt') reach.hit('corrupt');
          if (intact) {
            reach.hit('intact');
            assert.equal(status, 'empty', reader.error);
            assert.equal(seen.length, fitting.length);
            seen.forEach((s, i) => {
              const p = fitting[i]!;
              assert.equal(s.trans, p.trans % 0x1_0000_0000);
              assert.deepEqual(s.payload.subarray(0, p.payload.length), p.payload);
            });
          }
        },
      ),
      { numRuns: 500 },
    );
    t.diagnostic(`reach: ${reach.describe()}`);
    reach.assertAtLeast('parsed-packets', 0.5);
    reach.assertAtLeast('intact', 0.2);
    reach.assertAtLeast('corrupt', 0.08);
  });

  it('a corrupt inbound ring stops only its channel; the other channel keeps working', (t) => {
    const reach = new Reach();
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: RING_DATA / 8 - 1 }),
        writtenPackets,
        mutation(3),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 3 }),
        (start8, packets, m, flips) => {
          reach.run();
          const fitting = packets.slice(0, 6).filter((p) => p.payload.length <= 200);
          let image = ringImage(start8, fitting);
          image = applyMutation(
            image,
            m.kind === 'truncate' || m.kind === 'extend' ? { kind: 'keep' } : m,
            ringSpots,
          );
          for (const [at, value] of flips) image[PAGE + (at % RING_DATA)] = value;
          const fuzzed = Ring.fromBytes(image);
          const out = Ring.fromBytes(new Uint8Array(PAGE + RING_DATA));
          out.initialize();
          let endpoint: ChannelEndpoint;
          try {
            endpoint = new ChannelEndpoint(out, fuzzed, () => {}, 'fuzzed');
          } catch (error) {
            if (!(error instanceof RingCorruptError)) throw error;
            reach.hit('refused-at-open');
            return;
          }
          // A healthy second channel beside it.
          const a = Ring.fromBytes(new Uint8Array(PAGE + RING_DATA));
          const b = Ring.fromBytes(new Uint8Array(PAGE + RING_DATA));
          a.initialize();
          b.initialize();
          const healthy = new ChannelEndpoint(a, b, () => {}, 'healthy');
          const peer = new ChannelEndpoint(b, a, () => {}, 'peer');
          let handled = 0;
          endpoint.onPacket = (p) => {
            handled++;
            assert.ok(p.length <= RING_DATA);
            return true;
          };
          const got: number[] = [];
          peer.onPacket = (p) => {
            got.push(p.transLo);
            return true;
          };
          endpoint.handleInterrupt();
          if (handled > 0) reach.hit('handler-ran');
          assert.ok(endpoint.state === 'open' || endpoint.state === 'failed');
          if (endpoint.state === 'failed') {
            reach.hit('failed');
            assert.match(endpoint.error, /fuzzed: inbound ring/);
          }
          assert.equal(endpoint.stats.handlerErrors, 0);
          // The other channel is untouched by what happened to this one.
          assert.equal(healthy.sendInband(new Uint8Array(8), 77), 'ok');
          peer.handleInterrupt();
          assert.deepEqual(got, [77]);
          assert.equal(healthy.state, 'open');
        },
      ),
      { numRuns: 500 },
    );
    t.diagnostic(`reach: ${reach.describe()}`);
    reach.assertAtLeast('handler-ran', 0.5);
    reach.assertAtLeast('failed', 0.1);
  });
});

// --- a hostile host's messages into the guest -------------------------------------

/** A GUID's 16 bytes as Windows and Linux store them (the first three fields little-endian). */
function guidBytes(text: string): Uint8Array {
  const h = text.replace(/-/g, '');
  const b = Uint8Array.from(h.match(/../g)!.map((x) => Number.parseInt(x, 16)));
  return Uint8Array.of(b[3]!, b[2]!, b[1]!, b[0]!, b[5]!, b[4]!, b[7]!, b[6]!, ...b.subarray(8));
}

/** The text of a GUID stored as `guidBytes` stores it. */
function guidText(bytes: Uint8Array): string {
  const b = [
    bytes[3],
    bytes[2],
    bytes[1],
    bytes[0],
    bytes[5],
    bytes[4],
    bytes[7],
    bytes[6],
    ...bytes.subarray(8),
  ];
  const h = b.map((x) => x!.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** An offer as the host builds it, for relid `relid`. */
function offer(relid: number, instance: Uint8Array, subchannel: number): Uint8Array {
  return message('vmbus_channel_offer_channel', Msg.Offer, {
    'offer.if_type': guidBytes(CLASS_ID),
    'offer.if_instance': instance,
    'offer.sub_channel_index': subchannel,
    child_relid: relid,
    is_dedicated_interrupt: 1,
    connection_id: 0x100 + relid,
  });
}

describe('hostile host: messages into the guest SynIC', () => {
  it('the guest tracks the well-formed offers, drops the rest, never throws, and still negotiates', async (t) => {
    const bus = makeBus({ memoryBytes: 8 * 1024 * 1024 });
    t.after(() => bus.close());
    const failures: unknown[] = [];
    const onRejection = (error: unknown): void => {
      failures.push(error);
    };
    process.on('unhandledRejection', onRejection);
    t.after(() => process.off('unhandledRejection', onRejection));
    // A negotiated bus, so offers mean something to the guest.
    assert.equal(await bus.client.connect(), VmbusVersion.Win10V5_3);
    const samples = fc.sample(
      fc.record({
        instance: fc.uint8Array({ minLength: 16, maxLength: 16 }),
        subchannel: fc.constantFrom(0, 0, 0, 1),
        m: mutation(5),
      }),
      { numRuns: 300, seed: 42 },
    );
    const fields = fieldsOf('vmbus_channel_offer_channel');
    const intact = new Map<number, Uint8Array>();
    samples.forEach((s, i) => {
      // Even relids, one per offer: a mutated relid (a boundary value, or off by
      // one) never lands on another offer's relid.
      const relid = 300 + 2 * i;
      const bytes = applyMutation(offer(relid, s.instance, s.subchannel), s.m, fields);
      if (s.m.kind === 'keep') intact.set(relid, s.instance);
      bus.hostPartition.synic.postMessage(0, 2, 1, bytes);
    });
    // Also a hypervisor-type message and an oversized payload claim.
    bus.hostPartition.synic.postMessage(0, 2, 0x80000010, new Uint8Array(24));
    await until(() => bus.hostPartition.synic.pendingMessages(0, 2) === 0, 10_000, 'all delivered');
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(failures, []);
    const stats = bus.client.connection.stats;
    assert.ok(stats.dropped > 0, 'the malformed ones were dropped');
    const offers = bus.client.offers();
    t.diagnostic(
      `${offers.length} of ${samples.length} offers tracked, ${stats.dropped} messages dropped`,
    );
    for (const o of offers) assert.ok(o.relid > 0 && o.relid < 2048);
    // Every intact offer is tracked as sent (the first one per relid wins).
    assert.ok(intact.size >= 20, `only ${intact.size} intact offers were generated`);
    for (const [relid, instance] of intact) {
      const tracked = offers.find((o) => o.relid === relid);
      assert.ok(tracked, `the intact offer of relid ${relid} is tracked`);
      assert.equal(tracked.classId, CLASS_ID);
      assert.equal(tracked.instanceId, guidText(instance));
    }
    assert.equal(bus.guestPartition.vp0.readMsr(HvMsr.Simp) & 1n, 1n);
    // An unload and a real negotiation still succeed.
    await bus.client.unload();
    assert.equal(await bus.client.connect(), VmbusVersion.Win10V5_3);
  });
});
