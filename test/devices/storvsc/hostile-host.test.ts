import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { MemoryDisk } from '../../../src/block/memory-disk.ts';
import { StorvscController } from '../../../src/devices/storvsc/guest/storvsc.ts';
import type { SrbResult } from '../../../src/devices/storvsc/guest/storvsc-channel.ts';
import { StorvspDevice } from '../../../src/devices/storvsc/host/storvsp.ts';
import { VstorOperation } from '../../../src/devices/storvsc/protocol.ts';
import { Reach } from '../../hostile/mutate.ts';
import { withTimeout } from './harness.ts';
import { endpointPair, fakeDeviceBus, fakeGuestDevice, guestMemory } from './wire.ts';

fc.configureGlobal({ includeErrorInReport: true });

/**
 * A hostile host: a real storvsp whose completions pass through a filter
 * that mangles them — wrong, stale or repeated transaction ids, truncated
 * packets, random bytes over the request block (statuses, sense length,
 * byte counts), other operations, dropped answers, and unsolicited packets
 * of every kind. storvsc must not throw, must keep every result inside its
 * bounds, must settle every request once the controller stops (no hang),
 * and the other disk must keep working once the host behaves again.
 */

type Action =
  | { kind: 'pass' }
  | { kind: 'drop' }
  | { kind: 'duplicate' }
  | { kind: 'id'; lo: number; hi: number }
  | { kind: 'truncate'; length: number }
  | { kind: 'scribble'; at: number; bytes: Uint8Array }
  | { kind: 'inject'; lo: number; payload: Uint8Array };

const action: fc.Arbitrary<Action> = fc.oneof(
  fc.constant<Action>({ kind: 'pass' }),
  fc.constant<Action>({ kind: 'drop' }),
  fc.constant<Action>({ kind: 'duplicate' }),
  fc
    .record({
      lo: fc.oneof(fc.integer({ min: 0, max: 400 }), fc.integer({ min: 0, max: 0xffff_ffff })),
      hi: fc.constantFrom(0, 0, 1, 0xffff_ffff),
    })
    .map((r): Action => ({ kind: 'id', ...r })),
  fc.integer({ min: 0, max: 63 }).map((length): Action => ({ kind: 'truncate', length })),
  fc
    .record({
      at: fc.integer({ min: 0, max: 63 }),
      bytes: fc.uint8Array({ minLength: 1, maxLength: 24 }),
    })
    .map((r): Action => ({ kind: 'scribble', ...r })),
  fc
    .record({
      lo: fc.constantFrom(0, 0, 1, 2, 0xffff_fffd),
      payload: fc.oneof(
        fc.uint8Array({ minLength: 0, maxLength: 64 }),
        fc
          .constantFrom(
            VstorOperation.EnumerateBus,
            VstorOperation.RemoveDevice,
            VstorOperation.CompleteIo,
            VstorOperation.FchbaData,
          )
          .map((op) => {
            const p = new Uint8Array(64);
            new DataView(p.buffer).setUint32(0, op, true);
            return p;
          }),
      ),
    })
    .map((r): Action => ({ kind: 'inject', ...r })),
);

async function until(condition: () => boolean, ms: number): Promise<boolean> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > ms) return false;
    await new Promise((r) => setTimeout(r, 1));
  }
  return true;
}

describe('storvsc against a hostile host', () => {
  it('keeps results in bounds, settles every request, and recovers for the other disk', async (t) => {
    const reach = new Reach();
    await fc.assert(
      fc.asyncProperty(
        fc.array(action, { minLength: 1, maxLength: 40 }),
        fc.integer({ min: 1, max: 24 }),
        async (plan, requests) => {
          const mem = guestMemory(16 * 1024 * 1024);
          const pair = endpointPair(64 * 1024);
          const vsp = new StorvspDevice();
          vsp.attach(fakeDeviceBus(mem.memory));
          const disk0 = new MemoryDisk(1024 * 1024);
          const disk1 = new MemoryDisk(1024 * 1024);
          disk0.data.fill(0x11);
          disk1.data.fill(0x22);
          vsp.attachDisk(0, disk0, 'memory');
          vsp.attachDisk(1, disk1, 'memory');
          vsp.open(pair.hostQueue, {
            relid: 7,
            subchannelIndex: 0,
            targetVp: 0,
            userData: new Uint8Array(120),
          });
          const device = fakeGuestDevice(pair, mem);
          const controller = new StorvscController(device, {
            bufferBytes: 2 * 1024 * 1024,
            timeoutMs: 2000,
          });
          await controller.start();
          assert.deepEqual([...controller.disks.keys()], [0, 1]);

          // From now on every completion of the host goes through the plan.
          const send = pair.host.sendCompletion.bind(pair.host);
          let step = 0;
          let hostile = true;
          pair.host.sendCompletion = (lo, hi, payload) => {
            if (!hostile) return send(lo, hi, payload);
            const a = plan[step++ % plan.length]!;
            switch (a.kind) {
              case 'pass':
                return send(lo, hi, payload);
              case 'drop':
                return 'ok';
              case 'duplicate':
                send(lo, hi, payload);
                return send(lo, hi, payload);
              case 'id':
                return send(a.lo, a.hi, payload);
              case 'truncate':
                return send(lo, hi, payload.subarray(0, a.length));
              case 'scribble': {
                const copy = payload.slice();
                copy.set(
                  a.bytes.subarray(0, Math.max(0, copy.length - a.at)),
                  Math.min(a.at, copy.length),
                );
                return send(lo, hi, copy);
              }
              case 'inject':
                pair.host.sendInband(a.payload, a.lo, 0, false);
                return send(lo, hi, payload);
            }
          };

          const before = vsp.totals().requests;
          const settled: (SrbResult | Error | undefined)[] = new Array(requests).fill(undefined);
          const lengths: number[] = [];
          const work = Array.from({ length: requests }, async (_, i) => {
            const length = 512 * (1 + (i % 16));
            lengths.push(length);
            const buffer = await controller.buffers!.acquire(length);
            const cdb = new Uint8Array(16);
            cdb[0] = i % 3 === 0 ? 0x8a : 0x88;
            new DataView(cdb.buffer).setBigUint64(2, BigInt(i * 16));
            new DataView(cdb.buffer).setUint32(10, length / 512);
            try {
              settled[i] = await controller.submit({
                lun: 0,
                cdb,
                direction: i % 3 === 0 ? 'out' : 'in',
                buffer,
              });
            } catch (error) {
              settled[i] = error as Error;
            } finally {
              buffer.release();
            }
          });
          // Wait until the host has answered (in its fashion) everything it received.
          await until(() => {
            const t = vsp.totals();
            return t.requests >= before + requests && t.inFlight === 0;
          }, 2000);
          await new Promise((r) => setTimeout(r, 2));
          reach.run();
          for (const [i, s] of settled.entries()) {
            if (s instanceof Error) reach.hit('request-failed');
            if (!s || s instanceof Error) continue;
            reach.hit('result-checked');
            const length = 512 * (1 + (i % 16));
            assert.ok(s.transferred <= length, `request ${i}: ${s.transferred} bytes > ${length}`);
            assert.ok(s.sense.length <= 20, `request ${i}: ${s.sense.length} sense bytes`);
          }
          // The host behaves again: the other disk works (requests whose answers were lost still wait).
          hostile = false;
          const d1 = controller.disks.get(1);
          if (d1 && !d1.removed) {
            reach.hit('other-disk-checked');
            const data = new Uint8Array(4096).fill(0x5c);
            await d1.write(4096, data);
            const back = new Uint8Array(4096);
            await d1.read(4096, back);
            assert.deepEqual(back, data);
            assert.ok(
              disk1.data.subarray(4096, 8192).every((b) => b === 0x5c),
              'reached the backend',
            );
          }
          // Stopping fails whatever is still waiting: nothing hangs.
          await controller.stop();
          await withTimeout(Promise.all(work), 2000, 'a request never settled');
          assert.ok(
            settled.every((s) => s !== undefined),
            'every request settled',
          );
          assert.equal(device.closed, 1);
          assert.equal(pair.guestQueue.stats.handlerErrors, 0, 'storvsc never threw');
        },
      ),
      { numRuns: 80 },
    );
    t.diagnostic(`reach: ${reach.describe()}`);
    reach.assertAtLeast('result-checked', 0.5);
    reach.assertAtLeast('request-failed', 0.25);
    reach.assertAtLeast('other-disk-checked', 0.7);
  });
});
