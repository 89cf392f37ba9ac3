import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryDisk } from '../../../src/block/memory-disk.ts';
import { NtStatus, VmstorVersion, VstorOperation } from '../../../src/devices/storvsc/protocol.ts';
import { makeScsiRig } from './harness.ts';

const { Win10, Win8_1, Win8, Win7 } = VmstorVersion;

/** The host's record of the primary channel's control packets, as [operation, status, version?]. */
function hostLog(rig: Awaited<ReturnType<typeof makeScsiRig>>) {
  return rig.vsp.controlLog.map((e) =>
    e.version === undefined
      ? [VstorOperation[e.operation], e.status]
      : [VstorOperation[e.operation], e.status, e.version],
  );
}

describe('storvsc/storvsp handshake', () => {
  for (const { host, expect } of [
    { host: [Win10, Win8_1, Win8], expect: Win10 },
    { host: [Win8_1, Win8], expect: Win8_1 },
    { host: [Win8], expect: Win8 },
  ]) {
    it(`follows Linux's order against a host of ${host.map((v) => v.toString(16)).join('/')}`, async () => {
      const rig = await makeScsiRig({ host: { versions: host } });
      try {
        const c = rig.controller;
        assert.ok(c, `the probe succeeded: ${[...rig.driver.failures.values()]}`);
        assert.equal(c.version, expect);
        const refused = [Win10, Win8_1, Win8]
          .filter((v) => v > expect)
          .map((v) => ['QueryProtocolVersion', NtStatus.RevisionMismatch, v]);
        assert.deepEqual(hostLog(rig), [
          ['BeginInitialization', NtStatus.Success],
          ...refused,
          ['QueryProtocolVersion', NtStatus.Success, expect],
          ['QueryProperties', NtStatus.Success],
          ['EndInitialization', NtStatus.Success],
          ['CreateSubChannels', NtStatus.Success],
        ]);
        // Multi-channel from 5.1 on: the sub-channel was offered and opened.
        assert.equal(c.channels.size, 2);
        assert.deepEqual(
          c.channels.list().map((ch) => ch.index),
          [0, 1],
        );
        assert.equal(rig.vsp.channelCounters().length, 2);
        // The disk works over the negotiated protocol.
        const disk = c.disks.get(0)!;
        const data = new Uint8Array(8192).fill(0xa5);
        await disk.write(0, data);
        const back = new Uint8Array(8192);
        await disk.read(0, back);
        assert.deepEqual(back, data);
      } finally {
        await rig.close();
      }
    });
  }

  it('fails the probe with a clear error when the host refuses every version', async () => {
    const rig = await makeScsiRig({ host: { versions: [Win7] } });
    try {
      assert.equal(rig.controller, undefined);
      const [failure] = [...rig.driver.failures.values()];
      assert.match(
        failure ?? '',
        /the host refused every storage protocol version offered \(6\.2, 6\.0, 5\.1\); last status 0xc0000059/,
      );
      assert.ok(
        rig.bus.guestLog.some((l) => l.includes('storvsc probe') && l.includes('refused every')),
        rig.bus.guestLog.join('\n'),
      );
      assert.deepEqual(hostLog(rig), [
        ['BeginInitialization', NtStatus.Success],
        ['QueryProtocolVersion', NtStatus.RevisionMismatch, Win10],
        ['QueryProtocolVersion', NtStatus.RevisionMismatch, Win8_1],
        ['QueryProtocolVersion', NtStatus.RevisionMismatch, Win8],
      ]);
      // The guest closed the channel it had opened.
      assert.equal(rig.vsp.channelCounters().length, 0);
    } finally {
      await rig.close();
    }
  });

  it('speaks the pre-Windows-8 packet (48 bytes, 18 sense bytes) when 4.2 is negotiated', async () => {
    const disk = new MemoryDisk(1024 * 1024, { readOnly: true });
    const rig = await makeScsiRig({
      host: { versions: [Win7] },
      guest: { versionOrder: [Win10, Win8_1, Win8, Win7] },
      disks: [
        { lun: 0, device: new MemoryDisk(4 * 1024 * 1024) },
        { lun: 1, device: disk },
      ],
    });
    try {
      const c = rig.controller!;
      assert.ok(c, [...rig.driver.failures.values()].join());
      assert.equal(c.version, Win7);
      assert.equal(c.packetSize, 48);
      // No multi-channel before 5.1: no CREATE_SUB_CHANNELS, one channel.
      assert.equal(c.channels.size, 1);
      assert.ok(
        !hostLog(rig).some(([op]) => op === 'CreateSubChannels'),
        'no sub-channels asked for',
      );
      const primary = c.channels.list()[0]!.channel.queue;
      // Every packet the guest sent was 48 bytes of payload (16-byte descriptor + 48 [+ page list]).
      const before = primary.stats.bytesSent;
      const sent = primary.stats.packetsSent;
      const d0 = c.disks.get(0)!;
      const data = new Uint8Array(4096).map((_, i) => i);
      await d0.write(8192, data);
      const back = new Uint8Array(4096);
      await d0.read(8192, back);
      assert.deepEqual(back, data);
      assert.equal((primary.stats.bytesSent - before) / (primary.stats.packetsSent - sent), 48);
      // Completions come back 48 bytes long, sense clipped to the pre-Windows-8 18 bytes.
      const ro = c.disks.get(1)!;
      await assert.rejects(ro.write(0, new Uint8Array(512)), { code: 'EROFS' });
      const buffer = await c.buffers!.acquire(512);
      const result = await c.submit({
        lun: 1,
        cdb: Uint8Array.of(0x8a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0),
        direction: 'out',
        buffer,
      });
      buffer.release();
      assert.equal(result.sense.length, 18);
      assert.equal(result.sense[2]! & 0x0f, 0x07, 'DATA PROTECT');
      assert.equal(result.sense[12], 0x27);
    } finally {
      await rig.close();
    }
  });

  it('refuses packets out of order and sub-channels beyond what it offers', async () => {
    const rig = await makeScsiRig({ host: { maxSubchannels: 3 }, guest: { subchannels: 2 } });
    try {
      const c = rig.controller!;
      assert.equal(c.hostSubchannels, 3);
      assert.equal(c.channels.size, 3, 'the guest asked for 2 of the 3 it could have');
      const primary = c.channels.list()[0]!;
      const again = await primary.control(VstorOperation.BeginInitialization, () => {}, 2000);
      assert.equal(new DataView(again.buffer).getUint32(8, true), NtStatus.InvalidDeviceState);
      const tooMany = await primary.control(
        VstorOperation.CreateSubChannels,
        (v) => v.setUint16(12, 4, true),
        2000,
      );
      assert.equal(new DataView(tooMany.buffer).getUint32(8, true), NtStatus.InvalidParameter);
      const fc = await primary.control(VstorOperation.FchbaData, () => {}, 2000);
      assert.equal(new DataView(fc.buffer).getUint32(8, true), NtStatus.InvalidDeviceRequest);
      const reset = await primary.control(VstorOperation.ResetBus, () => {}, 2000);
      assert.equal(new DataView(reset.buffer).getUint32(8, true), NtStatus.Success);
      // A sub-channel may not run the handshake.
      const sub = c.channels.list()[1]!;
      const onSub = await sub.control(VstorOperation.QueryProperties, () => {}, 2000);
      assert.equal(new DataView(onSub.buffer).getUint32(8, true), NtStatus.InvalidDeviceState);
    } finally {
      await rig.close();
    }
  });
});
