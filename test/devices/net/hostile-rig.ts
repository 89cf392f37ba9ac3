/**
 * Two NICs on one in-thread bus for the hostile-input properties: the one
 * under attack and a bystander, each with recording ports on both ends, and
 * a check that a NIC still carries a frame both ways.
 */
import assert from 'node:assert/strict';
import { NetvscDriver, type NetvscNic } from '../../../src/devices/net/guest/netvsc.ts';
import { NetvspDevice } from '../../../src/devices/net/host/netvsp.ts';
import { makeBus, type TestBus, until } from '../../vmbus/harness.ts';
import { buildFrame, PEER_MAC } from './frame-builder.ts';
import { RecordingPort } from './harness.ts';

export interface NicEnds {
  readonly vsp: NetvspDevice;
  readonly hostPort: RecordingPort;
  readonly guestPort: RecordingPort;
  readonly nic: NetvscNic;
}

export interface TwoNics {
  readonly bus: TestBus;
  readonly target: NicEnds;
  readonly bystander: NicEnds;
  close(): Promise<void>;
}

const MACS = [Uint8Array.of(0, 0x15, 0x5d, 0, 0, 0x11), Uint8Array.of(0, 0x15, 0x5d, 0, 0, 0x22)];

export async function twoNics(channels = 2): Promise<TwoNics> {
  const bus = makeBus({ memoryBytes: 32 * 1024 * 1024, vpCount: 2 });
  const ports = MACS.map((_, i) => ({
    host: new RecordingPort(`host${i}`),
    guest: new RecordingPort(`guest${i}`),
  }));
  const vsps = MACS.map(
    (mac, i) =>
      new NetvspDevice({
        mac,
        backend: ports[i]!.host,
        channels,
        instanceId: `00000000-0000-4000-8000-0000000000${i}1`,
      }),
  );
  for (const vsp of vsps) bus.host.addDevice(vsp);
  const driver = new NetvscDriver(() => ({
    receiveBufferBytes: 1024 * 1024,
    sendBufferBytes: 256 * 1024,
    timeoutMs: 2000,
    onUp: (nic) => {
      const i = MACS.findIndex((m) => m[5] === nic.mac[5]);
      nic.attachPort(ports[i]!.guest);
    },
  }));
  bus.client.registerDriver(driver);
  await bus.client.connect();
  await bus.client.requestOffers();
  const nics = [...driver.nics.values()];
  const ends = (i: number): NicEnds => {
    const nic = nics.find((n) => n.mac[5] === MACS[i]![5]);
    assert.ok(nic, `NIC ${i} came up: ${[...driver.failures.values()]}`);
    return { vsp: vsps[i]!, hostPort: ports[i]!.host, guestPort: ports[i]!.guest, nic };
  };
  return {
    bus,
    target: ends(0),
    bystander: ends(1),
    async close() {
      await bus.client.unload().catch(() => {});
      await bus.close();
    },
  };
}

/** Asserts that a NIC carries a frame each way (within a short wait). */
export async function carriesFrames(ends: NicEnds, what: string): Promise<void> {
  const out = buildFrame({ protocol: 'udp', payload: 300, from: ends.nic.mac });
  const back = buildFrame({ protocol: 'udp', payload: 300, from: PEER_MAC, to: ends.nic.mac });
  const hostBefore = ends.hostPort.seen.length;
  const guestBefore = ends.guestPort.seen.length;
  ends.guestPort.inject(out);
  ends.hostPort.inject(back);
  await until(
    () => ends.hostPort.seen.length > hostBefore && ends.guestPort.seen.length > guestBefore,
    2000,
    `${what}: a frame each way`,
  );
  assert.deepEqual(ends.hostPort.seen.at(-1)?.frame, out, `${what}: the frame to the host`);
  assert.deepEqual(ends.guestPort.seen.at(-1)?.frame, back, `${what}: the frame to the guest`);
}
