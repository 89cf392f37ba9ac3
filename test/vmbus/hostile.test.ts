import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { HvMsr } from '../../src/hv/protocol.ts';
import { ChannelEndpoint } from '../../src/vmbus/channel.ts';
import { GpadlTable } from '../../src/vmbus/gpadl.ts';
import { GpaRangeList, PacketView, TransferPageRanges } from '../../src/vmbus/packet.ts';
import {
  CHANNELMSG_COUNT,
  ChannelMessageType,
  channelMessageHeader,
  initiateContactMessage,
  VmbusVersion,
} from '../../src/vmbus/protocol.ts';
import { Ring, RingReader } from '../../src/vmbus/ring.ts';
import { VmbusServer } from '../../src/vmbus/server/state.ts';
import { makeBus, until } from './harness.ts';

/** A channel message: a header with any type (valid ones likely), then any bytes. */
const channelMessage = fc
  .tuple(
    fc.oneof(
      fc.integer({ min: 0, max: CHANNELMSG_COUNT + 2 }),
      fc.integer({ min: 0, max: 0xffffffff }),
    ),
    fc.uint8Array({ minLength: 0, maxLength: 240 }),
  )
  .map(([type, body]) => {
    const out = new Uint8Array(Math.min(240, 8 + body.length));
    new DataView(out.buffer).setUint32(0, type, true);
    out.set(body.subarray(0, out.length - 8), 8);
    return out;
  });

const connectServer = (server: VmbusServer): void => {
  server.receive(
    4,
    initiateContactMessage.write({
      header: { msgtype: ChannelMessageType.InitiateContact },
      vmbus_version_requested: VmbusVersion.Win10V5_3,
      target_vcpu: 0,
      msg_sint: 2,
      msg_vtl: 0,
      monitor_page1: 0n,
      monitor_page2: 0n,
    }),
  );
};

describe('hostile guest: arbitrary channel messages to the server', () => {
  it('never throws; bad messages are counted and dropped; the server stays usable', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.tuple(
            fc.constantFrom(1, 4, 7),
            fc.oneof(channelMessage, fc.uint8Array({ maxLength: 300 })),
          ),
          {
            maxLength: 40,
          },
        ),
        fc.boolean(),
        (messages, connectFirst) => {
          const server = new VmbusServer({ vpCount: 1, guestPageCount: 256 });
          server.addOffer(1, {
            classId: '6a3a7a2c-5e0b-4d7b-9f3e-8f1c2d4b6e01',
            instanceId: crypto.randomUUID(),
          });
          if (connectFirst) connectServer(server);
          let actions = 0;
          for (const [connectionId, payload] of messages) {
            actions += server.receive(connectionId, payload).length;
          }
          assert.ok(server.stats.messagesIn === messages.length + (connectFirst ? 1 : 0));
          assert.ok(actions >= 0);
          for (const c of server.channelSummaries()) assert.ok(c.relid >= 1);
          // Whatever happened, a clean unload + negotiation still works.
          server.receive(
            server.connected?.messageConnectionId ?? 1,
            channelMessageHeader.write({ msgtype: ChannelMessageType.Unload }),
          );
        },
      ),
      { numRuns: 400 },
    );
  });

  it('keeps the GPADL table consistent under arbitrary header and body messages', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.tuple(
            fc.boolean(),
            fc.uint8Array({ minLength: 0, maxLength: 240 }),
            fc.integer({ min: 0, max: 3 }),
          ),
          { maxLength: 30 },
        ),
        (messages) => {
          const table = new GpadlTable(64);
          for (const [isHeader, body, handle] of messages) {
            const msg = new Uint8Array(Math.max(body.length, 16));
            msg.set(body);
            new DataView(msg.buffer).setUint32(12, handle, true);
            const event = isHeader ? table.header(msg) : table.body(msg);
            assert.ok(['created', 'pending', 'invalid'].includes(event.kind));
          }
          for (const g of table.all()) {
            assert.ok(
              g.pfns.every((pfn) => pfn < 64),
              'only pages inside guest memory',
            );
            assert.ok(g.ranges.length > 0);
          }
        },
      ),
      { numRuns: 400 },
    );
  });
});

describe('hostile peer: arbitrary ring headers and contents', () => {
  it('the reader never throws, terminates, and reports packets inside the ring or corruption', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 4096 + 64, maxLength: 4096 + 64 }),
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.integer({ min: 0, max: 64 }),
        (contents, writeIndex, readIndex8) => {
          const bytes = new Uint8Array(4096 + 4096);
          bytes.set(contents.subarray(0, 4096), 4096);
          const view = new DataView(bytes.buffer);
          view.setUint32(0, writeIndex % 3 === 0 ? writeIndex : writeIndex % 4096, true);
          view.setUint32(4, readIndex8 * 8, true);
          const ring = Ring.fromBytes(bytes);
          let reader: RingReader;
          try {
            reader = new RingReader(ring);
          } catch {
            return; // an invalid read index is refused at open
          }
          const buffer = new Uint8Array(4096);
          const packet = new PacketView(buffer);
          const ranges = new GpaRangeList();
          const xfer = new TransferPageRanges();
          let total = 0;
          for (let i = 0; i < 1000; i++) {
            const status = reader.next(buffer);
            if (status !== 'packet') break;
            assert.ok(reader.length >= 16 && reader.length <= 4096 - 8);
            total += reader.length + 8;
            assert.ok(total <= 4096, 'never reads more than the ring holds');
            if (packet.load(reader.length) === undefined) {
              assert.ok(packet.payloadOffset <= packet.length);
              ranges.parse(packet);
              xfer.parse(packet);
              for (let r = 0; r < ranges.count; r++) {
                assert.ok(ranges.pfnStart[r]! + ranges.pfnCount[r]! <= ranges.pfns.length);
              }
            }
          }
        },
      ),
      { numRuns: 500 },
    );
  });

  it('a corrupt inbound ring stops only its channel', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 4096, maxLength: 4096 }), fc.nat(), (contents, w) => {
        const inbound = Ring.fromBytes(new Uint8Array(8192));
        const outbound = Ring.fromBytes(new Uint8Array(8192));
        inbound.initialize();
        outbound.initialize();
        new Uint8Array(inbound.control.buffer).set(contents, 4096);
        inbound.writeIndex = w % 4096;
        const endpoint = new ChannelEndpoint(outbound, inbound, () => {}, 'fuzz');
        let seen = 0;
        endpoint.onPacket = (p) => {
          seen++;
          assert.ok(p.length <= 4096);
          return true;
        };
        endpoint.handleInterrupt();
        assert.ok(endpoint.state === 'open' || endpoint.state === 'failed');
        if (endpoint.state === 'failed') assert.match(endpoint.error, /fuzz: inbound ring/);
        assert.ok(seen < 4096 / 24 + 1);
      }),
      { numRuns: 500 },
    );
  });
});

describe('hostile host: arbitrary messages into the guest SynIC', () => {
  it('the guest drops what it cannot use, never throws, and still negotiates afterwards', async (t) => {
    const bus = makeBus({ memoryBytes: 8 * 1024 * 1024 });
    t.after(() => bus.close());
    const failures: unknown[] = [];
    const onRejection = (error: unknown): void => {
      failures.push(error);
    };
    process.on('unhandledRejection', onRejection);
    t.after(() => process.off('unhandledRejection', onRejection));
    bus.client.connection.start();
    const samples = fc.sample(channelMessage, { numRuns: 400, seed: 42 });
    // The SynIC delivers them one after another into SIMP slot 2.
    for (const payload of samples) bus.hostPartition.synic.postMessage(0, 2, 1, payload);
    // Also hypervisor-type messages and oversized payload_size claims.
    bus.hostPartition.synic.postMessage(0, 2, 0x80000010, new Uint8Array(24));
    await until(() => bus.hostPartition.synic.pendingMessages(0, 2) === 0, 10_000, 'all delivered');
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(failures, []);
    assert.ok(bus.client.connection.stats.messagesIn >= samples.length);
    assert.ok(bus.client.connection.stats.dropped > 0);
    // The offers that happened to be well-formed are tracked within relid bounds.
    for (const offer of bus.client.offers()) assert.ok(offer.relid > 0 && offer.relid < 2048);
    assert.equal(bus.guestPartition.vp0.readMsr(HvMsr.Simp) & 1n, 1n);
    // A real negotiation still succeeds.
    assert.equal(await bus.client.connect(), VmbusVersion.Win10V5_3);
  });
});
