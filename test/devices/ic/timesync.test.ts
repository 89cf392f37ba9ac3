import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { version } from '../../../src/devices/ic/protocol.ts';
import { GuestClock, referenceTime } from '../../../src/devices/ic/timesync/clock.ts';
import { TimesyncService } from '../../../src/devices/ic/timesync/vsc.ts';
import { TimesyncVsp } from '../../../src/devices/ic/timesync/vsp.ts';
import { IcDriver } from '../../../src/devices/ic/vsc.ts';
import { makeBus, until } from '../../vmbus/harness.ts';

/** 1.5 s ahead, in 100 ns units. */
const INJECTED_MS = 1500;
const INJECTED = BigInt(INJECTED_MS) * 10_000n;

/** A host that notes (on the shared reference clock) when it sends each sample. */
class TimedVsp extends TimesyncVsp {
  readonly sentAt: bigint[] = [];
  override sendSample(flags: Parameters<TimesyncVsp['sendSample']>[0]): void {
    this.sentAt.push(referenceTime());
    super.sendSample(flags);
  }
}

/** A guest clock that notes (on the same reference clock) when the guest reads it. */
class TimedClock extends GuestClock {
  readonly readAt: bigint[] = [];
  override now(): bigint {
    this.readAt.push(referenceTime());
    return super.now();
  }
}

/**
 * The delivery delays of the last `count` samples the service handled, in
 * ms, measured apart from what the service computes: from the host's send to
 * the guest's clock read. The clock is read once when the service starts and
 * once per sample, so read k + 1 belongs to sample k.
 */
function delays(vsp: TimedVsp, clock: TimedClock, handled: number, count: number): number[] {
  const out: number[] = [];
  for (let k = Math.max(0, handled - count); k < handled; k++) {
    out.push(Number(clock.readAt[k + 1]! - vsp.sentAt[k]!) / 10_000);
  }
  return out;
}

async function run(
  t: import('node:test').TestContext,
  serviceVersions: readonly number[] | undefined,
  adjust: boolean,
): Promise<{ service: TimesyncService; vsp: TimedVsp; clock: TimedClock }> {
  const bus = makeBus();
  const vsp = new TimedVsp({ intervalMs: 20, ...(serviceVersions ? { serviceVersions } : {}) });
  t.after(async () => {
    vsp.dispose();
    await bus.close();
  });
  bus.host.addDevice(vsp);
  const clock = new TimedClock(INJECTED);
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

  it('measures it from the older format (3.0 host): off by no more than the delivery delay', async (t) => {
    const { service, vsp, clock } = await run(t, [version(1, 0), version(3, 0)], false);
    assert.equal(vsp.versions?.service, version(3, 0));
    assert.equal(service.format, 'v1');
    // Without a reference time the sample is taken as current (as Linux
    // does), so the error is the time the sample took to arrive: the median
    // estimate lies within the spread of the delays measured alongside,
    // give or take the clocks' reading error (0.5 ms).
    const offsetMs = service.offsetNs()! / 1e6;
    const spread = delays(vsp, clock, service.samples, 9);
    const error = offsetMs - INJECTED_MS;
    t.diagnostic(
      `error ${error.toFixed(3)} ms; delivery delays ${Math.min(...spread).toFixed(3)}..${Math.max(...spread).toFixed(3)} ms`,
    );
    assert.ok(
      error >= Math.min(...spread) - 0.5 && error <= Math.max(...spread) + 0.5,
      `error ${error} ms outside the measured delays ${spread.join(', ')}`,
    );
  });

  it('steps the clock on SYNC when allowed to adjust, as Linux does', async (t) => {
    const { service, clock } = await run(t, undefined, true);
    assert.equal(service.steps, 1);
    assert.ok(clock.offset < 20_000n && clock.offset > -20_000n, `clock offset ${clock.offset}`);
    const offsetMs = service.offsetNs()! / 1e6;
    assert.ok(Math.abs(offsetMs) < 2, `measured ${offsetMs} ms after the step`);
  });
});
