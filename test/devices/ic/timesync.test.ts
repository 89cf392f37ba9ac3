import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { version } from '../../../src/devices/ic/protocol.ts';
import { GuestClock } from '../../../src/devices/ic/timesync/clock.ts';
import { TimesyncService } from '../../../src/devices/ic/timesync/vsc.ts';
import { TimesyncVsp } from '../../../src/devices/ic/timesync/vsp.ts';
import { IcDriver } from '../../../src/devices/ic/vsc.ts';
import { makeBus, until } from '../../vmbus/harness.ts';

/** 1.5 s ahead, in 100 ns units. */
const INJECTED_MS = 1500;
const INJECTED = BigInt(INJECTED_MS) * 10_000n;

async function run(
  t: import('node:test').TestContext,
  serviceVersions: readonly number[] | undefined,
  adjust: boolean,
): Promise<{ service: TimesyncService; vsp: TimesyncVsp; clock: GuestClock }> {
  const bus = makeBus();
  const vsp = new TimesyncVsp({ intervalMs: 20, ...(serviceVersions ? { serviceVersions } : {}) });
  t.after(async () => {
    vsp.dispose();
    await bus.close();
  });
  bus.host.addDevice(vsp);
  const clock = new GuestClock(INJECTED);
  const service = new TimesyncService({ clock, adjust });
  bus.client.registerDriver(new IcDriver(service));
  await bus.client.connect();
  await bus.client.requestOffers();
  await until(() => service.samples >= 12, 5000, 'samples');
  return { service, vsp, clock };
}

describe('time sync', () => {
  it('measures an injected guest clock offset from 4.0 samples (within 2 ms)', async (t) => {
    const { service, vsp } = await run(t, undefined, false);
    assert.equal(vsp.versions?.service, version(4, 0));
    assert.equal(service.format, 'v4');
    assert.equal(service.syncs, 1, 'the first message after negotiation is a SYNC');
    const offsetMs = service.offsetNs()! / 1e6;
    assert.ok(Math.abs(offsetMs - INJECTED_MS) < 2, `measured ${offsetMs} ms`);
    await until(() => vsp.stats.drained >= 12, 5000, 'the host drained the answers');
    assert.equal(vsp.stats.bad + vsp.stats.unexpected, 0);
  });

  it('measures it from the older format (3.0 host; within 20 ms: no reference time)', async (t) => {
    const { service, vsp } = await run(t, [version(1, 0), version(3, 0)], false);
    assert.equal(vsp.versions?.service, version(3, 0));
    assert.equal(service.format, 'v1');
    const offsetMs = service.offsetNs()! / 1e6;
    assert.ok(Math.abs(offsetMs - INJECTED_MS) < 20, `measured ${offsetMs} ms`);
  });

  it('steps the clock on SYNC when allowed to adjust, as Linux does', async (t) => {
    const { service, clock } = await run(t, undefined, true);
    assert.equal(service.steps, 1);
    assert.ok(clock.offset < 20_000n && clock.offset > -20_000n, `clock offset ${clock.offset}`);
    const offsetMs = service.offsetNs()! / 1e6;
    assert.ok(Math.abs(offsetMs) < 2, `measured ${offsetMs} ms after the step`);
  });
});
