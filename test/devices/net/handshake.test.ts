import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  ALL_NVSP_VERSIONS,
  LINUX_NVSP_VERSION_ORDER,
  NvspMessageType,
  NvspStatus,
  NvspVersion,
  nvspVersionString,
} from '../../../src/devices/net/protocol.ts';
import { Oid } from '../../../src/devices/net/rndis-protocol.ts';
import { makeNetRig } from './harness.ts';

const { V1, V2, V4, V5, V6, V61 } = NvspVersion;

/** The OIDs Linux's rndis_filter_device_add, rndis_set_subchannel and rndis_filter_open use, in order. */
function linuxOids(version: number, subchannels: boolean): number[] {
  const oids = [
    Oid.GenMaximumFrameSize,
    Oid.Ieee8023PermanentAddress,
    Oid.GenFriendlyName,
    Oid.TcpOffloadHardwareCapabilities,
    Oid.TcpOffloadParameters,
    Oid.GenMediaConnectStatus,
  ];
  if (version >= V5) oids.push(Oid.GenLinkSpeed, Oid.GenReceiveScaleCapabilities);
  if (subchannels) oids.push(Oid.GenReceiveScaleParameters, Oid.GenReceiveScaleParameters);
  oids.push(Oid.GenCurrentPacketFilter);
  return oids;
}

describe('netvsc/netvsp handshake', () => {
  it("follows Linux's init sequence, step by step, on both ends", async () => {
    const rig = await makeNetRig({ host: { channels: 2 } });
    try {
      const nic = rig.nic;
      assert.ok(nic, `the probe succeeded: ${[...rig.driver.failures.values()]}`);
      assert.equal(nic.state, 'ready');
      assert.deepEqual(
        nic.steps.map((s) => s.step),
        [
          'INIT',
          'NDIS_CONFIG',
          'NDIS_VERSION',
          'SEND_RECV_BUF',
          'SEND_SEND_BUF',
          'INITIALIZE',
          'QUERY GenMaximumFrameSize',
          'QUERY Ieee8023PermanentAddress',
          'QUERY GenFriendlyName',
          'QUERY TcpOffloadHardwareCapabilities',
          'SET TcpOffloadParameters',
          'QUERY GenMediaConnectStatus',
          'QUERY GenLinkSpeed',
          'QUERY GenReceiveScaleCapabilities',
          'SUBCHANNEL',
          'SET GenReceiveScaleParameters',
          'SET GenReceiveScaleParameters',
          'SET GenCurrentPacketFilter',
        ],
      );
      // NDIS_CONFIG carries the MTU plus the Ethernet header.
      assert.equal(nic.steps[1]?.value, 1514);
      assert.deepEqual(
        rig.vsp.events.map((e) => [e.type, e.status]),
        [
          [NvspMessageType.Init, NvspStatus.Success],
          [NvspMessageType.SendNdisConfig, NvspStatus.Success],
          [NvspMessageType.SendNdisVersion, NvspStatus.Success],
          [NvspMessageType.SendReceiveBuffer, NvspStatus.Success],
          [NvspMessageType.SendSendBuffer, NvspStatus.Success],
          [NvspMessageType.Subchannel, NvspStatus.Success],
        ],
      );
      assert.deepEqual(rig.vsp.rndis.oids, linuxOids(V61, true));
      assert.equal(rig.vsp.guestMtu, 1500);
      assert.equal(rig.vsp.rndis.packetFilter, 0x0d);
      assert.equal(nic.macString, '00:15:5d:00:00:01');
      assert.equal(nic.friendlyName, 'hvkit Network Adapter');
      assert.equal(nic.channels.size, 2);
      // The send table came after the sub-channels: 16 entries over the two channels.
      assert.deepEqual(
        nic.sendTable,
        Array.from({ length: 16 }, (_, i) => i % 2),
      );
      assert.equal(rig.vsp.rndis.rssTable.length, 128);
      assert.deepEqual([...rig.vsp.rndis.rssTable.slice(0, 4)], [0, 1, 0, 1]);
      // The receive buffer's layout, as the guest checked it.
      assert.ok(nic.receiveSectionSize >= 1514 && nic.receiveSectionCount >= 2);
      assert.ok(nic.receiveSectionSize * nic.receiveSectionCount <= 2 * 1024 * 1024);
      assert.equal(nic.sections?.sectionSize, 6144);
      assert.ok(rig.guestPort.started, 'the port was attached when the NIC came up');
    } finally {
      await rig.close();
    }
  });

  /** The version a guest of `guestMax` and a host of `hostMax` agree on: the newest both have. */
  const agreed = (guestMax: number, hostMax: number) =>
    Math.max(...ALL_NVSP_VERSIONS.filter((v) => v <= Math.min(guestMax, hostMax)));

  it('agrees the version Linux would for each guest and host maximum, with the NDIS version by NVSP', async () => {
    for (const guestMax of ALL_NVSP_VERSIONS) {
      for (const hostMax of ALL_NVSP_VERSIONS) {
        const rig = await makeNetRig({
          host: { versions: ALL_NVSP_VERSIONS.filter((v) => v <= hostMax), channels: 2 },
          guest: { versionOrder: LINUX_NVSP_VERSION_ORDER.filter((v) => v <= guestMax) },
        });
        const label = `guest ${nvspVersionString(guestMax)} / host ${nvspVersionString(hostMax)}`;
        try {
          const nic = rig.nic;
          assert.ok(nic, `${label}: ${[...rig.driver.failures.values()]}`);
          const expected = agreed(guestMax, hostMax);
          assert.equal(nic.version, expected, label);
          assert.equal(rig.vsp.version, expected, label);
          const ndis = expected <= V4 ? 0x0006_0001 : 0x0006_001e;
          assert.equal(nic.ndisVersion, ndis, label);
          assert.equal(rig.vsp.ndisVersion, ndis, label);
          // One refused INIT per version above the agreed one, newest first, then the accepted one.
          const inits = nic.steps.filter((s) => s.step === 'INIT');
          const tried = LINUX_NVSP_VERSION_ORDER.filter((v) => v <= guestMax && v >= expected);
          assert.deepEqual(
            inits.map((s) => [s.value, s.status]),
            tried.map((v) => [v, v === expected ? NvspStatus.Success : NvspStatus.Failure]),
            label,
          );
          // NVSP 1 has no NDIS_CONFIG; sub-channels and RSS come from NVSP 5.
          assert.equal(
            nic.steps.some((s) => s.step === 'NDIS_CONFIG'),
            expected >= V2,
            label,
          );
          assert.equal(nic.channels.size, expected >= V5 ? 2 : 1, label);
          assert.deepEqual(rig.vsp.rndis.oids, linuxOids(expected, expected >= V5), label);
          // UDP checksum offload only from NVSP 5 (Linux clears it up to NVSP 4).
          assert.equal(nic.offloads.udp4, expected > V4, label);
          assert.equal(nic.state, 'ready', label);
        } finally {
          await rig.close();
        }
      }
    }
  });

  it('gives a clear failure when the host refuses every version offered', async () => {
    const rig = await makeNetRig({
      host: { versions: [V61, V6] },
      guest: { versionOrder: [V5, V4, V2, V1] },
    });
    try {
      assert.equal(rig.nic, undefined);
      const [failure] = [...rig.driver.failures.values()];
      assert.match(failure ?? '', /the host refused every NVSP version offered \(5, 4, 2, 1\)/);
      // Each version was tried once, min = max, and nothing after INIT happened.
      assert.deepEqual(
        rig.vsp.events.map((e) => [e.type, e.version]),
        [V5, V4, V2, V1].map((v) => [NvspMessageType.Init, v]),
      );
      assert.equal(rig.vsp.receiveBuffer, undefined);
    } finally {
      await rig.close();
    }
  });

  it('uses a smaller MTU from the host, and sizes jumbo receive sections by the MTU', async () => {
    const rig = await makeNetRig({ host: { mtu: 1400 }, guest: { mtu: 9000 } });
    try {
      const nic = rig.nic;
      assert.ok(nic);
      // NDIS_CONFIG said 9000; the host held it to its 1400, and MAXIMUM_FRAME_SIZE told the guest.
      assert.equal(nic.steps.find((s) => s.step === 'NDIS_CONFIG')?.value, 9014);
      assert.equal(rig.vsp.guestMtu, 1400);
      assert.equal(nic.mtu, 1400);
      // Sections never go below Linux's 1728 bytes.
      assert.equal(nic.receiveSectionSize, 1728);
    } finally {
      await rig.close();
    }
  });

  it('takes jumbo frames: sections grow with a 9000-byte MTU', async () => {
    const rig = await makeNetRig({ host: { mtu: 9000 }, guest: { mtu: 9000 } });
    try {
      const nic = rig.nic;
      assert.ok(nic);
      assert.equal(nic.mtu, 9000);
      assert.ok(nic.receiveSectionSize >= 9014 + 44, `section ${nic.receiveSectionSize}`);
    } finally {
      await rig.close();
    }
  });

  it('takes no more sub-channels than the host grants', async () => {
    const rig = await makeNetRig({ host: { channels: 3 }, guest: { channels: 8 } });
    try {
      const nic = rig.nic;
      assert.ok(nic);
      assert.equal(nic.channels.size, 3);
      assert.equal(nic.steps.find((s) => s.step === 'SUBCHANNEL')?.value, 2);
      assert.equal(rig.vsp.openChannels, 3);
      assert.ok(rig.vsp.rndis.rssTable.every((c) => c < 3));
    } finally {
      await rig.close();
    }
  });

  it('removes cleanly: packet filter 0, HALT, buffers revoked, channels closed', async () => {
    const rig = await makeNetRig({ host: { channels: 2 } });
    const nic = rig.nic;
    assert.ok(nic);
    await rig.driver.remove(nic.device);
    assert.equal(nic.state, 'removed');
    assert.equal(rig.vsp.rndis.packetFilter, 0);
    const tail = rig.vsp.events.slice(-2).map((e) => e.type);
    assert.deepEqual(tail, [NvspMessageType.RevokeReceiveBuffer, NvspMessageType.RevokeSendBuffer]);
    assert.equal(rig.vsp.openChannels, 0);
    assert.equal(rig.guestPort.started, false, 'the port was closed');
    await rig.close();
  });
});
