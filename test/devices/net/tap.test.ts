import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { TapDevice } from '../../../src/devices/net/tap-device.ts';
import { addAddress, configureLink, moveLink } from '../../../src/vm/network/ip.ts';
import { makeNetRig, type NetRig } from './harness.ts';
import { requireRoot, serveFile, TestNamespaces, waitForPort } from './namespaces.ts';

describe('netvsc/netvsp between two TAP devices in namespaces', () => {
  const spaces = new TestNamespaces();
  let rig: NetRig | undefined;
  let hostNs = '';
  let guestNs = '';

  before(async () => {
    requireRoot();
    hostNs = await spaces.add('hvkt-host');
    guestNs = await spaces.add('hvkt-guest');
    const hostTap = new TapDevice({
      name: `hvkth${process.pid % 100000}`,
      accept: { checksum: false, segmentation: false },
    });
    await moveLink(hostTap.name, hostNs);
    await configureLink(hostTap.name, { mtu: 1500 }, hostNs);
    await addAddress(hostTap.name, '192.0.2.1/24', hostNs);
    rig = await makeNetRig({
      host: { backend: hostTap, channels: 2 },
      guest: {
        receiveBufferBytes: 4 * 1024 * 1024,
        onUp: async (nic) => {
          const tap = new TapDevice({
            name: `hvktg${process.pid % 100000}`,
            accept: { checksum: true, segmentation: true },
          });
          await moveLink(tap.name, guestNs);
          await configureLink(
            tap.name,
            {
              rename: 'eth0',
              mac: nic.macString,
              mtu: nic.mtu,
              gsoMaxSize: nic.offloads.lsoMaxSize,
            },
            guestNs,
          );
          await addAddress('eth0', '192.0.2.2/24', guestNs);
          nic.attachPort(tap);
        },
      },
    });
    assert.ok(rig.nic, `the NIC came up: ${[...rig.driver.failures.values()]}`);
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
