import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { EchoDriver } from '../../src/devices/echo/vsc.ts';
import { EchoVsp } from '../../src/devices/echo/vsp.ts';
import type {
  DeviceBus,
  GuestDevice,
  OfferParameters,
  VmbusDevice,
  VmbusDriver,
} from '../../src/vmbus/device.ts';
import { VmbusVersion } from '../../src/vmbus/protocol.ts';
import type { Queue } from '../../src/vmbus/queue.ts';

import { makeBus, until } from './harness.ts';

describe('VMBus lifecycle (host and guest in one thread)', () => {
  it('connects, offers, opens, echoes, closes and unloads', async (t) => {
    const bus = makeBus();
    t.after(() => bus.close());
    const vsp = new EchoVsp();
    bus.host.addDevice(vsp);
    const driver = new EchoDriver();
    bus.client.registerDriver(driver);

    const version = await bus.client.connect();
    assert.equal(version, VmbusVersion.Win10V5_3);
    await bus.client.requestOffers();
    assert.equal(driver.bound.size, 1);
    const [echo] = [...driver.bound.values()];
    for (let i = 0; i < 200; i++) {
      const payload = new Uint8Array(1 + (i % 97)).fill(i & 0xff);
      const back = await echo!.echo(payload);
      assert.deepEqual(back.subarray(0, payload.length), payload);
    }
    assert.equal(vsp.stats.echoed, 200);
    assert.equal(bus.host.server.gpadls.size, 1, 'ring GPADL established');

    await bus.client.unload();
    await bus.host.settle();
    assert.equal(bus.host.server.state, 'disconnected');
    assert.equal(bus.host.server.gpadls.size, 0, 'GPADLs gone after unload');
    assert.deepEqual(bus.hostLog, []);
    assert.equal(bus.client.connection.stats.dropped, 0);
  });
});

/** A host device that records what happens to it and lets the test map GPADLs. */
class ProbeVsp implements VmbusDevice {
  readonly offer: OfferParameters;
  bus: DeviceBus | undefined;
  readonly opened: number[] = [];
  readonly closed: number[] = [];
  constructor(classId: string) {
    this.offer = { classId, instanceId: crypto.randomUUID(), maxSubchannels: 4 };
  }
  attach(bus: DeviceBus): void {
    this.bus = bus;
  }
  open(channel: Queue, request: { relid: number }): void {
    this.opened.push(request.relid);
    channel.onPacket = () => {};
  }
  close(_channel: Queue, request: { relid: number }): void {
    this.closed.push(request.relid);
  }
}

/** A guest driver that just remembers the devices it was given. */
class ProbeDriver implements VmbusDriver {
  readonly name = 'probe';
  readonly devices: GuestDevice[] = [];
  readonly removed: GuestDevice[] = [];
  constructor(readonly classId: string) {}
  async probe(device: GuestDevice): Promise<void> {
    this.devices.push(device);
  }
  async remove(device: GuestDevice): Promise<void> {
    this.removed.push(device);
  }
}

const PROBE_CLASS = '0bd1d2a3-1111-4222-8333-444455556666';

/** A bus with one ProbeVsp offered, bound by a ProbeDriver, connected and offers delivered. */
async function probeBus(t: TestContext, options: Parameters<typeof makeBus>[0] = {}) {
  const bus = makeBus(options);
  t.after(() => bus.close());
  const vsp = new ProbeVsp(PROBE_CLASS);
  bus.host.addDevice(vsp);
  const driver = new ProbeDriver(PROBE_CLASS);
  bus.client.registerDriver(driver);
  await bus.client.connect();
  await bus.client.requestOffers();
  return { bus, vsp, driver };
}

describe('GPADLs', () => {
  it('sends a 150-page GPADL as a header and body messages, and tears it down only after the host lets go', async (t) => {
    const { bus, vsp, driver } = await probeBus(t);
    const device = driver.devices[0]!;

    const pages = 150;
    const first = bus.allocator.allocate(pages);
    const pfns = Array.from({ length: pages }, (_, i) => first + i);
    const before = bus.host.server.stats.messagesIn;
    const handle = await device.createGpadl(pfns);
    // 26 PFNs in the header, 28 per body: 1 + ceil(124 / 28) = 6 messages.
    assert.equal(bus.host.server.stats.messagesIn - before, 6);
    const gpadl = bus.host.server.gpadls.get(handle)!;
    assert.deepEqual(gpadl.pfns, pfns);
    assert.deepEqual(
      gpadl.ranges.map((r) => [r.byteOffset, r.byteCount]),
      [[0, pages * 4096]],
    );

    // The host device maps it and writes through the view; the guest sees the bytes.
    const mapped = vsp.bus!.mapGpadl(handle)!;
    assert.equal(mapped.byteCount, pages * 4096);
    mapped.views[149]![7] = 0xab;
    assert.equal(bus.guestPartition.memory.u8[(first + 149) * 4096 + 7], 0xab);

    let torndown = false;
    const teardown = device.teardownGpadl(handle).then(() => {
      torndown = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(torndown, false, 'teardown waits for the mapped view');
    mapped.release();
    await teardown;
    assert.equal(bus.host.server.gpadls.size, 0);
  });

  it('refuses GPADLs naming pages outside guest memory', async (t) => {
    const { bus, driver } = await probeBus(t, { memoryBytes: 4 * 1024 * 1024 });
    await assert.rejects(driver.devices[0]!.createGpadl([5, 6, 1 << 20]), /host refused GPADL/);
    assert.equal(bus.host.server.gpadls.size, 0);
  });
});

describe('channel lifecycle', () => {
  it('closes and reopens a channel, tearing down its ring GPADL each time', async (t) => {
    const { bus, vsp, driver } = await probeBus(t);
    const device = driver.devices[0]!;
    const free = bus.allocator.freePages;
    for (let round = 0; round < 3; round++) {
      const channel = await device.open({ sendRingBytes: 16384, receiveRingBytes: 32768 });
      assert.equal(channel.queue.occupancy().outboundSize, 12288);
      assert.equal(channel.queue.occupancy().inboundSize, 28672);
      await channel.close();
      await bus.host.settle();
    }
    assert.deepEqual(vsp.opened, [1, 1, 1]);
    assert.deepEqual(vsp.closed, [1, 1, 1]);
    assert.equal(bus.host.server.gpadls.size, 0);
    assert.equal(bus.allocator.freePages, free, 'ring pages returned');
  });

  it('offers sub-channels that the guest opens alongside the primary', async (t) => {
    const { vsp, driver } = await probeBus(t);
    const subs: GuestDevice[] = [];
    driver.devices[0]!.onSubchannel((d) => subs.push(d));
    vsp.bus!.offerSubchannels(2);
    await until(() => subs.length === 2, 2000, 'sub-channel offers');
    assert.deepEqual(
      subs.map((s) => s.offer.subchannelIndex),
      [1, 2],
    );
    assert.ok(subs.every((s) => s.offer.instanceId === driver.devices[0]!.offer.instanceId));
    const channels = await Promise.all(
      subs.map((s) => s.open({ sendRingBytes: 8192, receiveRingBytes: 8192 })),
    );
    assert.equal(vsp.opened.length, 2);
    await Promise.all(channels.map((c) => c.close()));
  });

  it('moves a channel to another VP with MODIFYCHANNEL, acknowledged on 5.3', async (t) => {
    const bus = makeBus({ vpCount: 2 });
    t.after(() => bus.close());
    bus.host.addDevice(new EchoVsp());
    const driver = new EchoDriver();
    bus.client.registerDriver(driver);
    await bus.client.connect();
    await bus.client.requestOffers();
    const [relid, echo] = [...driver.bound.entries()][0]!;
    assert.equal(await bus.client.modifyChannel(relid, 1), 0);
    assert.equal(bus.host.server.interruptTarget(relid)?.vp, 1);
    // Interrupts now arrive on VP 1 and the channel keeps working.
    const back = await echo.echo(new Uint8Array([1, 2, 3]));
    assert.deepEqual(back.subarray(0, 3), new Uint8Array([1, 2, 3]));
    assert.notEqual(
      await bus.client.modifyChannel(relid, 7),
      0,
      'a VP that does not exist is refused',
    );
  });

  it('sends MODIFYCHANNEL without waiting for an answer below 5.3', async (t) => {
    const bus = makeBus({
      vpCount: 2,
      hostVersions: [VmbusVersion.Win10V4_1, VmbusVersion.Win10V5_2],
    });
    t.after(() => bus.close());
    bus.host.addDevice(new EchoVsp());
    const driver = new EchoDriver();
    bus.client.registerDriver(driver);
    assert.equal(await bus.client.connect(), VmbusVersion.Win10V5_2);
    await bus.client.requestOffers();
    const [relid] = [...driver.bound.keys()];
    assert.equal(await bus.client.modifyChannel(relid!, 1), 0);
    await until(() => bus.host.server.interruptTarget(relid!)?.vp === 1, 2000, 'retarget');
  });

  it('survives a rescind while traffic flows: the guest closes, tears down and releases the relid', async (t) => {
    const bus = makeBus();
    t.after(() => bus.close());
    const vsp = new EchoVsp();
    const deviceId = bus.host.addDevice(vsp);
    const driver = new EchoDriver();
    bus.client.registerDriver(driver);
    await bus.client.connect();
    await bus.client.requestOffers();
    const [relid, echo] = [...driver.bound.entries()][0]!;
    const free = bus.allocator.freePages;

    let completed = 0;
    let failure: Error | undefined;
    const traffic = (async () => {
      for (let i = 0; i < 5000; i++) {
        try {
          await echo.echo(new Uint8Array(64).fill(i & 0xff));
          completed++;
        } catch (error) {
          failure = error as Error;
          return;
        }
      }
    })();
    await until(() => completed > 50, 5000, 'some traffic');
    bus.host.removeDevice(deviceId);
    await traffic;
    await until(() => bus.host.server.channelSummaries().length === 0, 5000, 'relid released');
    assert.ok(completed > 50);
    // The loop ends on the request the rescind cut short, with the removal's
    // error (not a timeout), long before its 5000 requests.
    assert.ok(completed < 5000, 'the rescind stopped the traffic');
    assert.ok(failure, 'the request in flight failed');
    assert.match(failure.message, /echo device removed|closed/);
    assert.equal(driver.bound.size, 0, 'driver removed');
    assert.equal(bus.host.server.gpadls.size, 0, 'ring GPADL torn down');
    assert.equal(bus.allocator.freePages, free + 32, 'ring pages freed (2 x 64 KiB)');
    assert.equal(bus.client.offers().length, 0);

    // The relid can be reused once released.
    const again = new EchoVsp();
    bus.host.addDevice(again);
    await until(() => driver.bound.size === 1, 5000, 'new offer bound');
    assert.equal([...driver.bound.keys()][0], relid);
  });

  it('unloads and reconnects, re-offering the same devices', async (t) => {
    const bus = makeBus();
    t.after(() => bus.close());
    const vsp = new EchoVsp();
    bus.host.addDevice(vsp);
    const driver = new EchoDriver();
    bus.client.registerDriver(driver);
    for (let round = 0; round < 3; round++) {
      assert.equal(await bus.client.connect(), VmbusVersion.Win10V5_3);
      await bus.client.requestOffers();
      const echo = [...driver.bound.values()][0]!;
      const back = await echo.echo(new Uint8Array([round]));
      assert.equal(back[0], round);
      await bus.client.unload();
      await bus.host.settle();
      assert.equal(driver.bound.size, 0);
      assert.equal(bus.host.server.state, 'disconnected');
    }
    assert.equal(bus.host.server.stats.unloads, 3);
    assert.equal(vsp.stats.echoed, 3);
  });
});
