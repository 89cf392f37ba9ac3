import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HeartbeatService } from '../../../src/devices/ic/heartbeat/vsc.ts';
import { HeartbeatVsp } from '../../../src/devices/ic/heartbeat/vsp.ts';
import { IcDriver } from '../../../src/devices/ic/vsc.ts';
import { makeBus, until } from '../../vmbus/harness.ts';

describe('heartbeat', () => {
  it('reports a stalled guest late, then lost within three intervals, and healthy when it resumes', async (t) => {
    const bus = makeBus();
    const intervalMs = 100;
    const vsp = new HeartbeatVsp({ intervalMs });
    t.after(async () => {
      vsp.dispose();
      await bus.close();
    });
    bus.host.addDevice(vsp);
    const service = new HeartbeatService();
    const driver = new IcDriver(service);
    bus.client.registerDriver(driver);
    await bus.client.connect();
    await bus.client.requestOffers();
    await until(() => vsp.health === 'healthy', 5000, 'first answer');
    assert.equal(vsp.versions?.service, 0x30000);
    await until(() => vsp.answered >= 3, 5000, 'three answers');
    assert.equal(vsp.applicationState, 'Healthy');
    assert.equal(vsp.wrongSequence, 0);

    driver.pause();
    await until(() => vsp.health === 'late', 5000, 'late');
    await until(() => vsp.health === 'lost', 5000, 'lost');
    // The guest is reported late and lost in that order, within three intervals of
    // its last answer (bounded loosely here: the machine is noisy).
    const states = vsp.history.map((h) => h.health);
    assert.deepEqual(states.slice(-3), ['healthy', 'late', 'lost']);
    // Counted in heartbeats, not milliseconds: lost is declared when the third
    // heartbeat after the last answer is due, i.e. within three intervals.
    const lost = vsp.history.at(-1)!;
    assert.ok(
      lost.sent - vsp.sentAtLastAnswer <= 3,
      `lost after ${lost.sent - vsp.sentAtLastAnswer} heartbeats`,
    );

    const before = service.answered;
    driver.resume();
    await until(() => vsp.health === 'healthy', 5000, 'healthy again');
    assert.ok(service.answered > before, 'the guest answered the heartbeats waiting in its ring');
    assert.equal(vsp.wrongSequence, 0);
    assert.equal(driver.stats.dropped, 0);
  });
});
