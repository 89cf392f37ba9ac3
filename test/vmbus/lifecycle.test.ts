import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EchoDriver } from '../../src/echo/vsc.ts';
import { EchoVsp } from '../../src/echo/vsp.ts';
import { VmbusVersion } from '../../src/vmbus/protocol.ts';
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
