import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { NetvscOptions } from '../../../src/devices/net/guest/netvsc.ts';
import { TapDevice } from '../../../src/devices/net/tap-device.ts';
import { addAddress, configureLink, moveLink } from '../../../src/vm/network/ip.ts';
import { makeNetRig, type NetRig } from './harness.ts';
import { requireRoot, serveFile, TestNamespaces, waitForPort } from './namespaces.ts';

/** Two namespaces joined by a NIC: a host TAP at 192.0.2.1 and the guest's eth0 at 192.0.2.2. */
async function tapRig(spaces: TestNamespaces, prefix: string, guest: NetvscOptions = {}) {
  const hostNs = await spaces.add(`${prefix}-host`);
  const guestNs = await spaces.add(`${prefix}-guest`);
  const hostTap = new TapDevice({
    name: `${prefix.slice(0, 5)}h${process.pid % 100000}`,
    accept: { checksum: false, segmentation: false },
  });
  await moveLink(hostTap.name, hostNs);
  await configureLink(hostTap.name, { mtu: 1500 }, hostNs);
  await addAddress(hostTap.name, '192.0.2.1/24', hostNs);
  const rig = await makeNetRig({
    host: { backend: hostTap, channels: 2 },
    guest: {
      receiveBufferBytes: 4 * 1024 * 1024,
      ...guest,
      onUp: async (nic) => {
        // The guest stack hands over TSO frames either way: with offloads off the NIC segments them.
        const tap = new TapDevice({
          name: `${prefix.slice(0, 5)}g${process.pid % 100000}`,
          accept: { checksum: true, segmentation: true },
        });
        await moveLink(tap.name, guestNs);
        await configureLink(
          tap.name,
          { rename: 'eth0', mac: nic.macString, mtu: nic.mtu },
          guestNs,
        );
        await addAddress('eth0', '192.0.2.2/24', guestNs);
        nic.attachPort(tap);
      },
    },
  });
  assert.ok(rig.nic, `the NIC came up: ${[...rig.driver.failures.values()]}`);
  return { rig, hostNs, guestNs };
}

/** iperf3 TCP from the guest namespace to the host side (or back); resolves with bit/s. */
async function iperf(spaces: TestNamespaces, hostNs: string, guestNs: string, reverse: boolean) {
  const server = spaces.spawn(hostNs, 'iperf3', ['-s', '-B', '192.0.2.1']);
  try {
    await waitForPort(spaces, guestNs, '192.0.2.1', 5201);
    const args = ['-c', '192.0.2.1', '-t', '2', '-J', ...(reverse ? ['-R'] : [])];
    const { stdout } = await spaces.exec(guestNs, 'iperf3', args);
    const report = JSON.parse(stdout);
    const bps = report.end?.sum_received?.bits_per_second as number | undefined;
    assert.ok(bps !== undefined, `iperf3 reported: ${report.error ?? stdout.slice(0, 200)}`);
    return bps;
  } finally {
    server.kill();
  }
}

describe('netvsc/netvsp between two TAP devices in namespaces', () => {
  const spaces = new TestNamespaces();
  let rig: NetRig | undefined;
  let hostNs = '';
  let guestNs = '';

  before(async () => {
    requireRoot();
    ({ rig, hostNs, guestNs } = await tapRig(spaces, 'hvkt'));
  });

  after(async () => {
    await rig?.close();
    await spaces.removeAll();
  });

  it('pings the host side from the guest namespace without loss', async () => {
    const { stdout } = await spaces.exec(guestNs, 'ping', [
      '-c',
      '10',
      '-i',
      '0.05',
      '-W',
      '2',
      '192.0.2.1',
    ]);
    assert.match(stdout, /10 packets transmitted, 10 received, 0% packet loss/);
    assert.ok((rig?.nic?.counters.rxFrames ?? 0) >= 10);
  });

  it('carries iperf3 TCP both ways, large sends crossing whole as LSOv2', async () => {
    for (const reverse of [false, true]) {
      const server = spaces.spawn(hostNs, 'iperf3', ['-s', '-B', '192.0.2.1']);
      try {
        await waitForPort(spaces, guestNs, '192.0.2.1', 5201);
        const args = ['-c', '192.0.2.1', '-t', '2', '-J', ...(reverse ? ['-R'] : [])];
        const { stdout } = await spaces.exec(guestNs, 'iperf3', args);
        const report = JSON.parse(stdout);
        const bps = report.end?.sum_received?.bits_per_second as number;
        assert.ok(bps !== undefined, `iperf3 reported: ${report.error ?? stdout.slice(0, 200)}`);
        assert.ok(bps > 1e6, `${reverse ? 'host to guest' : 'guest to host'} at ${bps} bit/s`);
      } finally {
        server.kill();
      }
    }
    const nic = rig?.nic;
    assert.ok(nic && nic.counters.txLso > 0, 'TCP segments crossed as large sends');
    assert.equal(rig?.vsp.counters.txSegmented, 0, 'nobody segmented in JavaScript');
  });

  it('fetches a 50 MiB file over HTTP with curl, the sha256 intact', async () => {
    const served = await serveFile(spaces, hostNs, '192.0.2.1', 8080, 50 * 1024 * 1024);
    try {
      await waitForPort(spaces, guestNs, '192.0.2.1', 8080);
      const { stdout } = await spaces.exec(
        guestNs,
        'sh',
        ['-c', 'curl -sS --fail http://192.0.2.1:8080/file | sha256sum'],
        60_000,
      );
      assert.equal(stdout.split(' ')[0], served.sha256);
    } finally {
      await served.close();
    }
  });
});

describe('the same TAPs with every offload off', () => {
  const spaces = new TestNamespaces();
  let rig: NetRig | undefined;

  after(async () => {
    await rig?.close();
    await spaces.removeAll();
  });

  it('still carries iperf3 both ways: the guest segments and checksums, the host sends MTU frames', async () => {
    requireRoot();
    const made = await tapRig(spaces, 'hvko', {
      offloads: { checksum: false, lso: false, rsc: false },
    });
    rig = made.rig;
    for (const reverse of [false, true]) {
      const bps = await iperf(spaces, made.hostNs, made.guestNs, reverse);
      assert.ok(bps > 1e6, `${reverse ? 'host to guest' : 'guest to host'} at ${bps} bit/s`);
    }
    const nic = rig.nic;
    assert.ok(nic);
    assert.equal(nic.counters.txLso, 0, 'no large send crossed');
    assert.ok(nic.counters.txSegmented > 0, 'the guest cut its TCP sends itself');
    assert.ok(nic.counters.txChecksumsFilled > 0, 'and computed their checksums');
    assert.equal(rig.vsp.counters.rxCoalesced, 0, 'nothing was coalesced for it');
  });
});
