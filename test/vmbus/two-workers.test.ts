import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createPartition } from '../../src/hv/partition.ts';
import { startTsWorker } from '../../src/vm/worker-launch.ts';
import { VmbusVersion } from '../../src/vmbus/protocol.ts';
import { RpcClient } from './workers/rpc.ts';

/**
 * The lifecycle again, with the host and the guest in two worker threads
 * that share nothing but guest memory and the hypervisor's state.
 */
describe('VMBus lifecycle across two workers', () => {
  let host: RpcClient;
  let guest: RpcClient;

  before(async () => {
    const handles = createPartition({ memoryBytes: 64 * 1024 * 1024, vpCount: 2 });
    host = new RpcClient(
      startTsWorker(new URL('./workers/host-worker.ts', import.meta.url), { handles }),
    );
    await host.ready;
    guest = new RpcClient(
      startTsWorker(new URL('./workers/guest-worker.ts', import.meta.url), { handles }),
    );
    await guest.ready;
  });

  after(async () => {
    await guest?.worker.terminate();
    await host?.worker.terminate();
  });

  let echoDevice = 0;
  let mapperDevice = 0;

  it('negotiates 5.3, gets offers and opens the echo channel', async () => {
    echoDevice = await host.call<number>('addEcho');
    mapperDevice = await host.call<number>('addMapper');
    assert.equal(await guest.call('connect'), VmbusVersion.Win10V5_3);
    await guest.call('requestOffers');
    assert.deepEqual(await guest.call('bound'), [1]);
  });

  it('carries traffic both ways', async () => {
    assert.equal(await guest.call('echo', 500, 200), 500);
    assert.equal(await guest.call('echo', 20, 8000), 20);
    assert.equal(await host.call('echoed', echoDevice), 520);
  });

  it('establishes a 120-page GPADL the host can write into, torn down after the host releases it', async () => {
    const { handle, first } = await guest.call<{ handle: number; first: number }>(
      'createGpadl',
      120,
    );
    const pfns = await host.call<number[]>('gpadlPfns', handle);
    assert.equal(pfns.length, 120);
    assert.equal(pfns[0], first);
    assert.equal(await host.call('map', mapperDevice, handle), 120 * 4096);
    assert.equal(
      await guest.call('peekLastByte', handle, 120),
      0x5a,
      'host wrote into guest memory',
    );
    let done = false;
    const teardown = guest.call('teardownGpadl', handle).then(() => {
      done = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(done, false, 'waits for the host view');
    await host.call('release', handle);
    await teardown;
  });

  it('opens and closes a channel repeatedly without leaking guest pages or GPADLs', async () => {
    const before = await guest.call<number>('freePages');
    assert.equal(await guest.call('reopen', 5), before);
    await host.call('settle');
    assert.equal(await host.call('gpadlCount'), 1, 'only the echo ring GPADL remains');
  });

  it('retargets the echo channel to VP 1 with MODIFYCHANNEL', async () => {
    assert.equal(await guest.call('modify', 1), 0);
    const channels = await host.call<{ relid: number; vp: number }[]>('channels');
    assert.equal(channels.find((c) => c.relid === 1)?.vp, 1);
    assert.equal(await guest.call('echo', 50, 64), 50);
  });

  it('survives a rescind while traffic flows', async () => {
    await guest.call('startTraffic');
    await new Promise((resolve) => setTimeout(resolve, 200));
    await host.call('remove', echoDevice);
    const result = await guest.call<{ completed: number; error: string }>('trafficResult');
    assert.ok(result.completed > 0, 'traffic flowed before the rescind');
    // The request in flight failed with the removal (rescind/close), not a timeout.
    assert.match(result.error, /echo device removed|closed/);
    assert.doesNotMatch(result.error, /time/);
    for (let i = 0; i < 100; i++) {
      const channels = await host.call<{ relid: number }[]>('channels');
      if (!channels.some((c) => c.relid === 1)) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.deepEqual(
      await host.call('channels'),
      [{ relid: 2, phase: 'offered', vp: 0 }],
      'relid 1 released',
    );
    assert.deepEqual(await guest.call('offers'), [2]);
  });

  it('unloads and reconnects', async () => {
    await guest.call('unload');
    await host.call('settle');
    assert.equal((await host.call<{ state: string }>('state')).state, 'disconnected');
    assert.equal(await host.call('gpadlCount'), 0);
    const id = await host.call<number>('addEcho');
    assert.equal(await guest.call('connect'), VmbusVersion.Win10V5_3);
    await guest.call('requestOffers');
    assert.equal(await guest.call('echo', 10, 100), 10);
    assert.equal(await host.call('echoed', id), 10);
    const stats = await host.call<{ state: string; stats: { dropped: number } }>('state');
    assert.equal(stats.state, 'connected');
  });
});
