import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IcStatus, shutdownMsgData, version } from '../../../src/devices/ic/protocol.ts';
import { type ShutdownRequest, ShutdownService } from '../../../src/devices/ic/shutdown/vsc.ts';
import { ShutdownVsp } from '../../../src/devices/ic/shutdown/vsp.ts';
import { IcDriver } from '../../../src/devices/ic/vsc.ts';
import { makeBus, until } from '../../vmbus/harness.ts';

async function setup(t: import('node:test').TestContext, refuse = false) {
  const bus = makeBus();
  const vsp = new ShutdownVsp();
  t.after(() => bus.close());
  bus.host.addDevice(vsp);
  const requests: ShutdownRequest[] = [];
  const service = new ShutdownService({ refuse, onShutdown: (r) => requests.push(r) });
  bus.client.registerDriver(new IcDriver(service));
  await bus.client.connect();
  await bus.client.requestOffers();
  await vsp.whenReady();
  return { vsp, service, requests };
}

describe('shutdown', () => {
  it('answers each flag value as Linux does, and starts the shutdown only after answering', async (t) => {
    const { vsp, service, requests } = await setup(t);
    assert.equal(vsp.versions?.service, version(3, 2));
    const ask = async (flags: number): Promise<number> => {
      const body = shutdownMsgData.write({
        reason_code: 0x80000000,
        timeout_seconds: 30,
        flags,
        display_message: new Uint8Array(0),
      });
      return (await vsp.request(body, 2000)).status;
    };
    const expected: [number, number][] = [
      [0, IcStatus.S_OK],
      [1, IcStatus.S_OK],
      [2, IcStatus.S_OK],
      [3, IcStatus.S_OK],
      [4, IcStatus.E_FAIL], // hibernate: not supported by this guest
      [5, IcStatus.E_FAIL],
      [8, IcStatus.E_FAIL],
      [0xffffffff, IcStatus.E_FAIL],
    ];
    for (const [flags, status] of expected)
      assert.equal(await ask(flags), status, `flags ${flags}`);
    await until(() => requests.length === 4, 2000, 'four shutdowns started');
    assert.deepEqual(
      requests.map((r) => [r.restart, r.force]),
      [
        [false, false],
        [false, true],
        [true, false],
        [true, true],
      ],
    );
    assert.equal(service.last?.flags, 0xffffffff);
  });

  it('carries the reason, timeout and UTF-16 message; a refusing guest answers E_FAIL and does nothing', async (t) => {
    const { vsp, requests } = await setup(t);
    const result = await vsp.shutdown({
      restart: true,
      message: 'Wartung — 5 min',
      timeoutSeconds: 300,
      reasonCode: 0x80020003,
    });
    assert.equal(result.accepted, true);
    await until(() => requests.length === 1, 2000, 'the shutdown started');
    assert.deepEqual(requests[0], {
      restart: true,
      force: false,
      reasonCode: 0x80020003,
      timeoutSeconds: 300,
      message: 'Wartung — 5 min',
    });
    await assert.rejects(
      vsp.shutdown({ restart: true, hibernate: true }),
      /cannot both restart and hibernate/,
    );
    await assert.rejects(vsp.shutdown({ message: 'x'.repeat(1024) }), /at most 1023/);

    const refusing = await setup(t, true);
    const refused = await refusing.vsp.shutdown({});
    assert.equal(refused.accepted, false);
    assert.equal(refused.statusName, 'E_FAIL (0x80004005)');
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(refusing.requests.length, 0);
  });
});
