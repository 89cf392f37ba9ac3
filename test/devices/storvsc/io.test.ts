import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import type { WriteOptions } from '../../../src/block/block-device.ts';
import { MemoryDisk } from '../../../src/block/memory-disk.ts';
import { makeScsiRig, withTimeout } from './harness.ts';

const MiB = 1024 * 1024;

/** A memory disk that counts flushes and FUA writes and can be slowed down. */
class CountingDisk extends MemoryDisk {
  flushes = 0;
  fuaWrites = 0;
  delayMs = 0;
  override async flush(): Promise<void> {
    this.flushes++;
    await super.flush();
  }
  override async write(offset: number, source: Uint8Array, options?: WriteOptions): Promise<void> {
    if (options?.fua) this.fuaWrites++;
    if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
    return super.write(offset, source, options);
  }
}

describe('I/O through storvsc and storvsp', () => {
  it('keeps many requests in flight over both channels and returns every byte', async () => {
    const backend = new MemoryDisk(16 * MiB);
    const rig = await makeScsiRig({ disks: [{ lun: 0, device: backend }] });
    try {
      const c = rig.controller!;
      const disk = c.disks.get(0)!;
      assert.equal(disk.size, 16 * MiB);
      // 256 writes of 4 KiB..256 KiB at distinct offsets, all at once.
      const writes = Array.from({ length: 256 }, (_, i) => {
        const size = 4096 * (1 + (i % 64));
        return { offset: i * 64 * 1024, data: randomBytes(Math.min(size, 64 * 1024)) };
      });
      await Promise.all(writes.map((w) => disk.write(w.offset, w.data)));
      for (const w of writes) {
        assert.deepEqual(
          backend.data.subarray(w.offset, w.offset + w.data.length),
          new Uint8Array(w.data),
        );
      }
      const back = await Promise.all(
        writes.map(async (w) => {
          const b = new Uint8Array(w.data.length);
          await disk.read(w.offset, b);
          return b;
        }),
      );
      for (const [i, w] of writes.entries()) assert.deepEqual(back[i], new Uint8Array(w.data));
      const counters = c.channelCounters();
      assert.equal(counters.length, 2);
      for (const ch of counters) {
        assert.ok(ch.requests > 100, `channel ${ch.index} carried ${ch.requests} requests`);
        assert.ok(
          ch.maxInFlight > 4,
          `channel ${ch.index} had ${ch.maxInFlight} in flight at once`,
        );
        assert.equal(ch.badPackets, 0);
        assert.equal(ch.errors, 0);
      }
      const host = rig.vsp.totals();
      assert.equal(host.requests, host.completions);
      assert.equal(
        host.bytesWritten,
        writes.reduce((n, w) => n + w.data.length, 0),
      );
      assert.equal(host.rejected + host.badPackets + host.errors, 0);
    } finally {
      await rig.close();
    }
  });

  it('splits a transfer larger than the maximum and moves it across several requests', async () => {
    const backend = new MemoryDisk(8 * MiB);
    const rig = await makeScsiRig({
      host: { maxTransferBytes: 64 * 1024 },
      disks: [{ lun: 0, device: backend }],
    });
    try {
      const c = rig.controller!;
      assert.equal(c.maxTransfer, 64 * 1024);
      const disk = c.disks.get(0)!;
      const data = randomBytes(3 * MiB + 4096);
      const before = rig.vsp.totals().writes;
      // Three source buffers of odd sizes, written at an odd (but aligned) offset.
      const parts = [
        data.subarray(0, 1000 * 512),
        data.subarray(1000 * 512, 5001 * 512),
        data.subarray(5001 * 512),
      ];
      await disk.writev(512 * 77, parts);
      assert.equal(rig.vsp.totals().writes - before, Math.ceil(data.length / (64 * 1024)));
      assert.deepEqual(
        backend.data.subarray(512 * 77, 512 * 77 + data.length),
        new Uint8Array(data),
      );
      const a = new Uint8Array(512 * 3000);
      const b = new Uint8Array(data.length - a.length);
      await disk.readv(512 * 77, [a, b]);
      assert.deepEqual(Buffer.concat([a, b]), data);
      await assert.rejects(disk.read(8 * MiB - 512, new Uint8Array(1024)), { code: 'ERANGE' });
      await assert.rejects(disk.read(100, new Uint8Array(512)), { code: 'EINVAL' });
    } finally {
      await rig.close();
    }
  });

  it('flushes, writes FUA, unmaps and zeroes on the backend', async () => {
    const backend = new CountingDisk(4 * MiB);
    const rig = await makeScsiRig({ disks: [{ lun: 0, device: backend }] });
    try {
      const disk = rig.controller!.disks.get(0)!;
      assert.equal(disk.canDiscard, true);
      backend.data.fill(0xee);
      await disk.flush();
      assert.equal(backend.flushes, 1);
      await disk.write(0, new Uint8Array(4096).fill(1), { fua: true });
      assert.equal(backend.fuaWrites, 1);
      await disk.discard(MiB, 64 * 1024);
      assert.ok(backend.data.subarray(MiB, MiB + 64 * 1024).every((b) => b === 0));
      await disk.writeZeroes(2 * MiB, 2 * MiB, { mayUnmap: false });
      assert.ok(backend.data.subarray(2 * MiB, 4 * MiB).every((b) => b === 0));
      assert.equal(backend.data[MiB - 1], 0xee, 'nothing outside the ranges changed');
    } finally {
      await rig.close();
    }
  });

  it('fails I/O on a hot-removed disk without hanging and loses no acknowledged write', async () => {
    const keep = new MemoryDisk(4 * MiB);
    const going = new CountingDisk(8 * MiB);
    going.delayMs = 2;
    const rig = await makeScsiRig({
      disks: [
        { lun: 0, device: keep },
        { lun: 1, device: going },
      ],
    });
    try {
      const c = rig.controller!;
      const disk = c.disks.get(1)!;
      const acked: { offset: number; byte: number }[] = [];
      let failures = 0;
      const writer = async (id: number): Promise<void> => {
        // Each writer runs until its I/O fails (the disk goes away under it).
        for (let i = 0; ; i++) {
          const offset = ((id * 97 + i * 13) % 2048) * 4096;
          const byte = (id * 31 + i) & 0xff || 1;
          try {
            await disk.write(offset, new Uint8Array(4096).fill(byte));
            acked.push({ offset, byte });
          } catch (error) {
            failures++;
            assert.match((error as Error).message, /LUN 1 was removed|removed/);
            return;
          }
        }
      };
      const load = Array.from({ length: 16 }, (_, i) => writer(i));
      await new Promise((r) => setTimeout(r, 100));
      const detached = await rig.vsp.detachDisk(1);
      assert.equal(detached.device, going);
      // The writers keep going until their I/O fails: every one of them must end, with an error.
      await withTimeout(Promise.all(load), 5000, 'I/O hung after removal');
      assert.equal(failures, 16, 'every writer saw its I/O fail');
      assert.ok(acked.length > 0, 'some writes completed before the removal');
      // Every acknowledged write is on the backend (a later write to the same block may have replaced it).
      const last = new Map<number, number>();
      for (const a of acked) last.set(a.offset, a.byte);
      for (const [offset, byte] of last)
        assert.equal(going.data[offset], byte, `block at ${offset}`);
      const start = Date.now();
      while (c.disks.has(1) && Date.now() - start < 3000)
        await new Promise((r) => setTimeout(r, 5));
      assert.equal(c.disks.has(1), false, 'the guest dropped the disk');
      await assert.rejects(disk.read(0, new Uint8Array(512)), /removed/);
      // The other disk keeps working.
      const data = randomBytes(64 * 1024);
      await c.disks.get(0)!.write(0, data);
      assert.deepEqual(keep.data.subarray(0, data.length), new Uint8Array(data));
    } finally {
      await rig.close();
    }
  });
});
