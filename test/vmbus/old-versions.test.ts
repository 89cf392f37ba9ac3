import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EchoDriver } from '../../src/devices/echo/vsc.ts';
import { EchoVsp } from '../../src/devices/echo/vsp.ts';
import { FREEBSD_VERSION_ORDER, VmbusVersion, versionString } from '../../src/vmbus/protocol.ts';
import { makeBus, until } from './harness.ts';

/**
 * Before Windows 8 the host flags channels in the guest's interrupt page
 * (receive half) plus SIEFP bit 0; WS2008 guests flag the send half and
 * signal connection id 2 because offers carry no dedicated connection id.
 */
describe('channel interrupts on pre-Windows 8 protocol versions', () => {
  for (const version of [VmbusVersion.Ws2008, VmbusVersion.Win7, VmbusVersion.Win8]) {
    it(`carries traffic on a ${versionString(version)} host`, async (t) => {
      const bus = makeBus({ hostVersions: [version], guestOrder: FREEBSD_VERSION_ORDER });
      t.after(() => bus.close());
      bus.host.addDevice(new EchoVsp());
      const driver = new EchoDriver();
      bus.client.registerDriver(driver);
      assert.equal(await bus.client.connect(), version);
      await bus.client.requestOffers();
      const [offer] = bus.client.offers();
      assert.equal(offer!.dedicatedInterrupt, version >= VmbusVersion.Win7);
      assert.equal(offer!.connectionId, version >= VmbusVersion.Win7 ? 0x2001 : 2);
      const echo = [...driver.bound.values()][0]!;
      for (let i = 0; i < 100; i++) {
        const back = await echo.echo(new Uint8Array([i, i + 1]));
        assert.deepEqual([...back.subarray(0, 2)], [i, i + 1]);
      }
      assert.equal(bus.host.server.stats.dropped, 0);
      await bus.client.unload();
      // WS2008 hosts do not answer UNLOAD (the guest does not wait); later ones do.
      await until(() => bus.host.server.state === 'disconnected', 2000, 'unload');
    });
  }
});
