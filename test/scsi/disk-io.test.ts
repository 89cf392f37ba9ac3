import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Asc } from '../../src/scsi/codes.ts';
import { ScsiDisk, type ScsiDiskOptions } from '../../src/scsi/target/disk.ts';
import {
  fromHex,
  guardedViews,
  hex,
  patterned,
  RecordingDisk,
  run,
  senseTriple,
} from './scsi-harness.ts';

/**
 * SCSI data commands against a recording MemoryDisk: data really moves (and
 * only between the initiator's views and the backend), FUA reaches the
 * backend, UNMAP and WRITE SAME really zero, read-only disks refuse writes,
 * backend failures become the right sense data with the failing LBA.
 */

const BS = 512;
const SIZE = 1 << 20; // 2048 blocks

function setup(options: ScsiDiskOptions = {}, diskOptions: { readOnly?: boolean } = {}) {
  const backend = new RecordingDisk(SIZE, { contents: patterned(SIZE), ...diskOptions });
  const disk = new ScsiDisk(backend, options);
  return { backend, disk };
}

const be32 = (n: number) => n.toString(16).padStart(8, '0');
const be16 = (n: number) => n.toString(16).padStart(4, '0');
const be64 = (n: number) => n.toString(16).padStart(16, '0');
const read10 = (lba: number, blocks: number, flags = 0) =>
  `28 ${flags.toString(16).padStart(2, '0')} ${be32(lba)} 00 ${be16(blocks)} 00`;
const write10 = (lba: number, blocks: number, flags = 0) =>
  `2a ${flags.toString(16).padStart(2, '0')} ${be32(lba)} 00 ${be16(blocks)} 00`;

function fill(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 13 + seed) & 0xff;
  return out;
}

describe('READ and WRITE', () => {
  it('WRITE(10) then READ(10) over a split scatter/gather list', async () => {
    const { backend, disk } = setup();
    const data = fill(4 * BS, 9);
    const w = await run(disk, write10(10, 4), { out: data, split: [100, 1000, 1] });
    assert.equal(w.result.status, 0);
    assert.equal(w.result.transferred, 4 * BS);
    assert.deepEqual(backend.data.subarray(10 * BS, 14 * BS), data);
    // neighbours untouched
    assert.deepEqual(
      backend.data.subarray(9 * BS, 10 * BS),
      patterned(SIZE).subarray(9 * BS, 10 * BS),
    );
    assert.deepEqual(
      backend.data.subarray(14 * BS, 15 * BS),
      patterned(SIZE).subarray(14 * BS, 15 * BS),
    );
    const r = await run(disk, read10(10, 4), { length: 4 * BS, split: [7, 513, 0, 900] });
    assert.equal(r.result.status, 0);
    assert.deepEqual(r.data, data);
  });

  it('READ(6) with transfer length 0 reads 256 blocks', async () => {
    const { disk } = setup();
    const r = await run(disk, '08 00 00 02 00 00', { length: 256 * BS });
    assert.equal(r.result.status, 0);
    assert.equal(r.result.transferred, 256 * BS);
    assert.deepEqual(r.data, patterned(SIZE).subarray(2 * BS, 258 * BS));
  });

  it('READ(12), READ(16), WRITE(6), WRITE(12), WRITE(16) address the same blocks', async () => {
    const { backend, disk } = setup();
    const expected = patterned(SIZE).subarray(100 * BS, 103 * BS);
    const r12 = await run(disk, `a8 00 ${be32(100)} ${be32(3)} 00 00`, { length: 3 * BS });
    const r16 = await run(disk, `88 00 ${be64(100)} ${be32(3)} 00 00`, { length: 3 * BS });
    assert.deepEqual(r12.data, expected);
    assert.deepEqual(r16.data, expected);
    for (const [cdb, lba] of [
      ['0a 00 00 05 01 00', 5],
      [`aa 00 ${be32(6)} ${be32(1)} 00 00`, 6],
      [`8a 00 ${be64(7)} ${be32(1)} 00 00`, 7],
    ] as const) {
      const block = fill(BS, lba);
      const w = await run(disk, cdb, { out: block });
      assert.equal(w.result.status, 0, cdb);
      assert.deepEqual(backend.data.subarray(lba * BS, (lba + 1) * BS), block);
    }
  });

  it('moves data straight between the guest views and the backend (no intermediate copy)', async () => {
    const { backend, disk } = setup();
    const { views } = guardedViews([BS, 2 * BS]);
    const result = await disk.execute({
      cdb: fromHex(read10(0, 3)),
      direction: 'in',
      buffers: views,
    });
    assert.equal(result.status, 0);
    const call = backend.calls.find((c) => c.op === 'readv');
    assert.ok(call?.views);
    assert.equal(call.views.length, 2);
    assert.equal(call.views[0], views[0]);
    assert.equal(call.views[1], views[1]);
    const wviews = guardedViews([BS, 3 * BS]).views;
    await disk.execute({ cdb: fromHex(write10(0, 2)), direction: 'out', buffers: wviews });
    const wcall = backend.calls.find((c) => c.op === 'writev');
    assert.ok(wcall?.views);
    assert.equal(wcall.views[0], wviews[0]);
    // the second view is cut to the transfer: same memory, shorter
    assert.equal(wcall.views[1]?.buffer, wviews[1]?.buffer);
    assert.equal(wcall.views[1]?.byteOffset, wviews[1]?.byteOffset);
    assert.equal(wcall.views[1]?.length, BS);
  });

  it('a buffer larger than the transfer: only the transfer moves', async () => {
    const { disk } = setup();
    const r = await run(disk, read10(0, 1), { length: 3 * BS });
    assert.equal(r.result.transferred, BS);
    assert.deepEqual(r.data.subarray(0, BS), patterned(SIZE).subarray(0, BS));
    assert.ok(r.data.subarray(BS).every((b) => b === 0));
  });

  it('FUA reaches the backend; WCE off makes every write FUA', async () => {
    const { backend, disk } = setup();
    await run(disk, write10(0, 1, 0x08), { out: fill(BS, 1) });
    await run(disk, write10(1, 1), { out: fill(BS, 2) });
    await run(disk, `8a 08 ${be64(2)} ${be32(1)} 00 00`, { out: fill(BS, 3) });
    const writes = backend.calls.filter((c) => c.op === 'writev').map((c) => c.fua);
    assert.deepEqual(writes, [true, false, true]);

    const wceOff = setup({ writeCacheEnabled: false });
    await run(wceOff.disk, write10(0, 1), { out: fill(BS, 1) });
    assert.deepEqual(
      wceOff.backend.calls.filter((c) => c.op === 'writev').map((c) => c.fua),
      [true],
    );
    const ms = await run(wceOff.disk, '1a 08 08 00 ff 00', { length: 255 });
    assert.equal((ms.data[4 + 2] ?? 0) & 0x04, 0, 'WCE reads back clear');
  });

  it('refuses a transfer above the maximum transfer length', async () => {
    const { disk } = setup({ maxTransferBytes: 8 * BS });
    const ok = await run(disk, read10(0, 8), { length: 8 * BS });
    assert.equal(ok.result.status, 0);
    const r = await run(disk, read10(0, 9), { length: 9 * BS });
    assert.deepEqual(senseTriple(r.result), [5, 0x24, 0]);
    assert.equal(hex(r.result.sense!.subarray(15, 18)), 'c00007');
    const b0 = await run(disk, '12 01 b0 00 40 00', { length: 64 });
    assert.equal(hex(b0.data.subarray(8, 12)), '00000008');
  });

  it('many commands in flight on one LUN', async () => {
    const { backend, disk } = setup();
    let open!: () => void;
    backend.gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const writes = Array.from({ length: 64 }, (_, i) =>
      run(disk, write10(i * 4, 4), { out: fill(4 * BS, i) }),
    );
    const reads = Array.from({ length: 64 }, (_, i) =>
      run(disk, read10(1024 + i, 1), { length: BS }),
    );
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(
      backend.calls.length,
      128,
      'all 128 commands reached the backend before any completed',
    );
    open();
    const done = await Promise.all([...writes, ...reads]);
    assert.ok(done.every((d) => d.result.status === 0));
    for (let i = 0; i < 64; i++) {
      assert.deepEqual(backend.data.subarray(i * 4 * BS, (i * 4 + 4) * BS), fill(4 * BS, i));
      assert.deepEqual(
        done[64 + i]?.data,
        patterned(SIZE).subarray((1024 + i) * BS, (1025 + i) * BS),
      );
    }
  });
});

describe('UNMAP and WRITE SAME', () => {
  const unmapList = (ranges: Array<[number, number]>) => {
    const bdl = ranges.length * 16;
    return `${be16(bdl + 6)} ${be16(bdl)} 00000000 ${ranges.map(([l, n]) => `${be64(l)} ${be32(n)} 00000000`).join(' ')}`;
  };

  it('UNMAP zeros the ranges and nothing else', async () => {
    const { backend, disk } = setup();
    const list = unmapList([
      [4, 2],
      [100, 8],
      [7, 0],
    ]);
    const r = await run(disk, `42 00 00000000 00 ${be16(56)} 00`, { out: list });
    assert.equal(r.result.status, 0);
    assert.equal(r.result.transferred, 56);
    const expected = patterned(SIZE);
    expected.fill(0, 4 * BS, 6 * BS);
    expected.fill(0, 100 * BS, 108 * BS);
    assert.deepEqual(backend.data, expected);
    assert.deepEqual(
      backend.calls.filter((c) => c.op === 'discard').map((c) => [c.offset, c.length]),
      [
        [4 * BS, 2 * BS],
        [100 * BS, 8 * BS],
      ],
    );
  });

  it('UNMAP validates the whole list before unmapping anything', async () => {
    const { backend, disk } = setup();
    const list = unmapList([
      [4, 2],
      [2047, 2],
    ]);
    const r = await run(disk, `42 00 00000000 00 ${be16(40)} 00`, { out: list });
    assert.deepEqual(senseTriple(r.result), [5, 0x21, 0]);
    assert.equal(backend.calls.filter((c) => c.op === 'discard').length, 0);
    assert.deepEqual(backend.data, patterned(SIZE));
  });

  it('UNMAP descriptors beyond the parameter list: INVALID FIELD IN PARAMETER LIST at byte 2', async () => {
    const { disk } = setup();
    // block descriptor data length 32, but only one descriptor sent
    const r = await run(disk, `42 00 00000000 00 ${be16(24)} 00`, {
      out: `0026 0020 00000000 ${be64(0)} ${be32(1)} 00000000`,
    });
    assert.deepEqual(senseTriple(r.result), [5, 0x26, 0]);
    assert.equal(hex(r.result.sense!.subarray(15, 18)), '800002');
  });

  it('UNMAP over the block count limit points at the descriptor that crossed it', async () => {
    const { disk } = setup({ maxUnmapBlocks: 10 });
    const list = unmapList([
      [0, 6],
      [10, 6],
    ]);
    const r = await run(disk, `42 00 00000000 00 ${be16(40)} 00`, { out: list });
    assert.deepEqual(senseTriple(r.result), [5, 0x26, 0]);
    assert.equal(hex(r.result.sense!.subarray(15, 18)), '800020');
  });

  it('UNMAP with too many descriptors', async () => {
    const { disk } = setup({ maxUnmapDescriptors: 1 });
    const r = await run(disk, `42 00 00000000 00 ${be16(40)} 00`, {
      out: unmapList([
        [0, 1],
        [2, 1],
      ]),
    });
    assert.deepEqual(senseTriple(r.result), [5, 0x26, 0]);
  });

  it('UNMAP ignores a trailing partial descriptor', async () => {
    const { backend, disk } = setup();
    const list = `0018 0018 00000000 ${be64(3)} ${be32(1)} 00000000 ${be64(9)} ${be32(1)} 00000000`;
    const r = await run(disk, `42 00 00000000 00 ${be16(40)} 00`, { out: list });
    assert.equal(r.result.status, 0);
    assert.ok(backend.data.subarray(3 * BS, 4 * BS).every((b) => b === 0));
    assert.deepEqual(
      backend.data.subarray(9 * BS, 10 * BS),
      patterned(SIZE).subarray(9 * BS, 10 * BS),
    );
  });

  it('without discard: UNMAP is not a command and VPD 0xB0/0xB2 say so', async () => {
    const backend = new RecordingDisk(SIZE);
    backend.canDiscard = false;
    const disk = new ScsiDisk(backend);
    const r = await run(disk, `42 00 00000000 00 ${be16(24)} 00`, { out: unmapList([[0, 1]]) });
    assert.deepEqual(senseTriple(r.result), [5, 0x20, 0]);
    const b2 = await run(disk, '12 01 b2 00 08 00', { length: 8 });
    assert.equal(hex(b2.data), '00b2000400000000');
    const b0 = await run(disk, '12 01 b0 00 40 00', { length: 64 });
    assert.equal(hex(b0.data.subarray(20, 36)), '00'.repeat(16));
    const rc = await run(disk, `9e 10 ${be64(0)} ${be32(32)} 00 00`, { length: 32 });
    assert.equal(rc.data[14], 0, 'no LBPME/LBPRZ');
  });

  it('WRITE SAME(16) with UNMAP and a zero block deallocates and reads back zeros', async () => {
    const { backend, disk } = setup();
    const r = await run(disk, `93 08 ${be64(20)} ${be32(30)} 00 00`, { out: new Uint8Array(BS) });
    assert.equal(r.result.status, 0);
    assert.equal(r.result.transferred, BS);
    assert.ok(backend.data.subarray(20 * BS, 50 * BS).every((b) => b === 0));
    assert.deepEqual(
      backend.data.subarray(50 * BS, 51 * BS),
      patterned(SIZE).subarray(50 * BS, 51 * BS),
    );
    const call = backend.calls.find((c) => c.op === 'writeZeroes');
    assert.deepEqual([call?.offset, call?.length, call?.mayUnmap], [20 * BS, 30 * BS, true]);
  });

  it('WRITE SAME(10) without UNMAP writes zeros without deallocating', async () => {
    const { backend, disk } = setup();
    const r = await run(disk, `41 00 ${be32(3)} 00 ${be16(2)} 00`, { out: new Uint8Array(BS) });
    assert.equal(r.result.status, 0);
    assert.ok(backend.data.subarray(3 * BS, 5 * BS).every((b) => b === 0));
    assert.equal(backend.calls.find((c) => c.op === 'writeZeroes')?.mayUnmap, false);
  });

  it('WRITE SAME with a pattern repeats it over every block', async () => {
    const { backend, disk } = setup();
    const block = fill(BS, 77);
    const r = await run(disk, `93 08 ${be64(1000)} ${be32(2500 - 1000 - 1)} 00 00`, { out: block });
    assert.equal(r.result.status, 2, 'past the end');
    const ok = await run(disk, `93 08 ${be64(1000)} ${be32(1048)} 00 00`, { out: block });
    assert.equal(ok.result.status, 0);
    for (let lba = 1000; lba < 2048; lba++) {
      assert.deepEqual(backend.data.subarray(lba * BS, (lba + 1) * BS), block, `block ${lba}`);
    }
    assert.deepEqual(
      backend.data.subarray(999 * BS, 1000 * BS),
      patterned(SIZE).subarray(999 * BS, 1000 * BS),
    );
  });

  it('WRITE SAME(16) NDOB writes zeros and takes no data', async () => {
    const { backend, disk } = setup();
    const r = await run(disk, `93 01 ${be64(5)} ${be32(3)} 00 00`);
    assert.equal(r.result.status, 0);
    assert.equal(r.result.transferred, 0);
    assert.ok(backend.data.subarray(5 * BS, 8 * BS).every((b) => b === 0));
  });

  it('WRITE SAME of zeros on a backend without write-zeroes or discard writes the zeros', async () => {
    const backend = new RecordingDisk(SIZE, { contents: patterned(SIZE) });
    backend.canDiscard = false;
    backend.canWriteZeroes = false;
    const disk = new ScsiDisk(backend);
    const r = await run(disk, `93 08 ${be64(0)} ${be32(4)} 00 00`, { out: new Uint8Array(BS) });
    assert.equal(r.result.status, 0);
    assert.ok(backend.data.subarray(0, 4 * BS).every((b) => b === 0));
    assert.ok(backend.calls.some((c) => c.op === 'write'));
  });

  it('WRITE SAME above the maximum write same length', async () => {
    const { disk } = setup({ maxWriteSameBytes: 16 * BS });
    const r = await run(disk, `93 00 ${be64(0)} ${be32(17)} 00 00`, { out: new Uint8Array(BS) });
    assert.deepEqual(senseTriple(r.result), [5, 0x24, 0]);
    assert.equal(hex(r.result.sense!.subarray(15, 18)), 'c0000a');
  });
});

describe('VERIFY and SYNCHRONIZE CACHE', () => {
  it('VERIFY(16) BYTCHK=1 compares and reports the first miscompare offset', async () => {
    const { disk } = setup();
    const same = patterned(SIZE).slice(8 * BS, 10 * BS);
    const ok = await run(disk, `8f 02 ${be64(8)} ${be32(2)} 00 00`, { out: same });
    assert.equal(ok.result.status, 0);
    const diff = same.slice();
    diff[700] = (diff[700] ?? 0) ^ 0xff;
    const bad = await run(disk, `8f 02 ${be64(8)} ${be32(2)} 00 00`, { out: diff });
    assert.deepEqual(senseTriple(bad.result), [0x0e, 0x1d, 0x00]);
    assert.equal(bad.result.sense?.[0], 0xf0, 'VALID');
    assert.equal(hex(bad.result.sense!.subarray(3, 7)), '000002bc');
  });

  it('VERIFY(10) BYTCHK=0 reads the medium and reports medium errors', async () => {
    const { backend, disk } = setup();
    backend.faults = [{ op: 'read', offset: 40 * BS + 3, code: 'EIO' }];
    const r = await run(disk, `2f 00 ${be32(32)} 00 ${be16(16)} 00`);
    assert.deepEqual(senseTriple(r.result), [3, 0x11, 0]);
    assert.equal(hex(r.result.sense!.subarray(3, 7)), be32(40));
  });

  it('SYNCHRONIZE CACHE flushes the backend', async () => {
    const { backend, disk } = setup();
    const r = await run(disk, '35 00 00000000 00 0000 00');
    assert.equal(r.result.status, 0);
    assert.equal(backend.calls.filter((c) => c.op === 'flush').length, 1);
  });
});

describe('read-only disks', () => {
  const ro = () => setup({}, { readOnly: true });
  for (const [name, cdb, out] of [
    ['WRITE(10)', write10(0, 1), new Uint8Array(BS)],
    ['WRITE(6)', '0a 00 00 00 01 00', new Uint8Array(BS)],
    ['WRITE SAME(16)', `93 08 ${be64(0)} ${be32(1)} 00 00`, new Uint8Array(BS)],
    [
      'UNMAP',
      `42 00 00000000 00 0018 00`,
      fromHex(`0016 0010 00000000 ${be64(0)} ${be32(1)} 00000000`),
    ],
  ] as const) {
    it(`${name} is DATA PROTECT, WRITE PROTECTED`, async () => {
      const { backend, disk } = ro();
      const r = await run(disk, cdb, { out });
      assert.deepEqual(senseTriple(r.result), [7, 0x27, 0]);
      assert.deepEqual(backend.data, patterned(SIZE));
    });
  }

  it('reads work and MODE SENSE sets WP', async () => {
    const { disk } = ro();
    const r = await run(disk, read10(0, 1), { length: BS });
    assert.equal(r.result.status, 0);
    const ms = await run(disk, '5a 08 08 00 00 00 00 00ff 00', { length: 255 });
    assert.equal(ms.data[3], 0x90, 'WP | DPOFUA');
    const sync = await run(disk, '35 00 00000000 00 0000 00');
    assert.equal(sync.result.status, 0);
  });
});

describe('backend failures become sense data', () => {
  const cases = [
    {
      name: 'EIO on read',
      op: 'read',
      code: 'EIO',
      cdb: read10(8, 4),
      at: 10 * BS + 17,
      sense: [3, 0x11, 0],
      lba: 10,
    },
    {
      name: 'EIO on write',
      op: 'write',
      code: 'EIO',
      cdb: write10(8, 4),
      at: 11 * BS,
      sense: [3, 0x0c, 0],
      lba: 11,
    },
    {
      name: 'ENOSPC on write',
      op: 'write',
      code: 'ENOSPC',
      cdb: write10(8, 4),
      at: 8 * BS,
      sense: [7, 0x27, 7],
    },
    {
      name: 'EROFS on write',
      op: 'write',
      code: 'EROFS',
      cdb: write10(8, 4),
      at: 8 * BS,
      sense: [7, 0x27, 0],
    },
    {
      name: 'ECLOSED on read',
      op: 'read',
      code: 'ECLOSED',
      cdb: read10(8, 4),
      at: 8 * BS,
      sense: [2, 0x04, 0],
    },
    {
      name: 'EINVAL on read',
      op: 'read',
      code: 'EINVAL',
      cdb: read10(8, 4),
      at: 8 * BS,
      sense: [4, 0x44, 0],
    },
    {
      name: 'EIO on flush',
      op: 'flush',
      code: 'EIO',
      cdb: '35 00 00000000 00 0000 00',
      sense: [3, 0x0c, 0],
    },
    {
      name: 'EIO on discard',
      op: 'discard',
      code: 'EIO',
      cdb: '42 00 00000000 00 0018 00',
      at: 2 * BS,
      sense: [3, 0x0c, 0],
      lba: 2,
    },
    {
      name: 'ENOSPC on write-zeroes',
      op: 'writeZeroes',
      code: 'ENOSPC',
      cdb: `93 00 ${be64(0)} ${be32(4)} 00 00`,
      at: 0,
      sense: [7, 0x27, 7],
    },
  ] as const;
  for (const c of cases) {
    it(c.name, async () => {
      const { backend, disk } = setup();
      backend.faults = [{ op: c.op, code: c.code, ...('at' in c ? { offset: c.at } : {}) }];
      const write = c.cdb.startsWith('2a');
      const options = c.cdb.startsWith('42')
        ? { out: `0016 0010 00000000 ${be64(0)} ${be32(4)} 00000000` }
        : c.cdb.startsWith('93')
          ? { out: new Uint8Array(BS) }
          : write
            ? { out: new Uint8Array(4 * BS) }
            : c.cdb.startsWith('28')
              ? { length: 4 * BS }
              : {};
      const r = await run(disk, c.cdb, options);
      assert.equal(r.result.status, 2);
      assert.equal(r.result.transferred, 0);
      assert.deepEqual(senseTriple(r.result), c.sense);
      if ('lba' in c) {
        assert.equal(r.result.sense?.[0], 0xf0, 'VALID set');
        assert.equal(hex(r.result.sense!.subarray(3, 7)), be32(c.lba));
      } else {
        assert.equal(r.result.sense?.[0], 0x70, 'VALID clear');
      }
    });
  }

  it('an unexpected exception from the backend is HARDWARE ERROR, not a rejection', async () => {
    const { backend, disk } = setup();
    backend.readv = async () => {
      throw new TypeError('backend bug');
    };
    const r = await run(disk, read10(0, 1), { length: BS });
    assert.deepEqual(senseTriple(r.result), [4, 0x44, 0]);
  });
});

describe('unit attention, REQUEST SENSE, START STOP UNIT, MODE SELECT', () => {
  it('capacity change: reported once, not to INQUIRY; READ CAPACITY then shows the new size', async () => {
    const { backend, disk } = setup();
    backend.sizeOverride = SIZE / 2;
    const inq = await run(disk, '12 00 00 00 24 00', { length: 36 });
    assert.equal(inq.result.status, 0);
    const first = await run(disk, '00 00 00 00 00 00');
    assert.deepEqual(senseTriple(first.result), [6, 0x2a, 0x09]);
    const second = await run(disk, '00 00 00 00 00 00');
    assert.equal(second.result.status, 0);
    const rc = await run(disk, '25 00 00000000 00 00 00 00', { length: 8 });
    assert.equal(hex(rc.data), '000003ff00000200');
  });

  it('REQUEST SENSE returns and clears a pending unit attention', async () => {
    const { disk } = setup();
    disk.postUnitAttention(Asc.REPORTED_LUNS_DATA_HAS_CHANGED);
    const rs = await run(disk, '03 00 00 00 12 00', { length: 18 });
    assert.equal(rs.result.status, 0);
    assert.equal(hex(rs.data), '700006000000000a000000003f0e00000000');
    const tur = await run(disk, '00 00 00 00 00 00');
    assert.equal(tur.result.status, 0);
  });

  it('capacity beyond 32 bits: READ CAPACITY(10) says use (16)', async () => {
    const { backend, disk } = setup();
    backend.sizeOverride = 2 ** 33 * BS;
    await run(disk, '00 00 00 00 00 00'); // consumes the capacity unit attention
    const rc10 = await run(disk, '25 00 00000000 00 00 00 00', { length: 8 });
    assert.equal(hex(rc10.data), 'ffffffff00000200');
    const rc16 = await run(disk, `9e 10 ${be64(0)} ${be32(32)} 00 00`, { length: 32 });
    assert.equal(hex(rc16.data.subarray(0, 12)), '00000001ffffffff00000200');
    const ms = await run(disk, '1a 00 08 00 ff 00', { length: 255 });
    assert.equal(hex(ms.data.subarray(4, 8)), 'ffffffff');
  });

  it('an empty medium has no capacity', async () => {
    const disk = new ScsiDisk(new RecordingDisk(0));
    const rc = await run(disk, '25 00 00000000 00 00 00 00', { length: 8 });
    assert.deepEqual(senseTriple(rc.result), [2, 0x3a, 0]);
    const r = await run(disk, read10(0, 0), { length: 0 });
    assert.deepEqual(senseTriple(r.result), [5, 0x21, 0]);
  });

  it('START STOP UNIT: stop flushes and makes the unit not ready until started', async () => {
    const { backend, disk } = setup();
    const stop = await run(disk, '1b 00 00 00 00 00');
    assert.equal(stop.result.status, 0);
    assert.equal(backend.calls.filter((c) => c.op === 'flush').length, 1);
    assert.deepEqual(senseTriple((await run(disk, '00 00 00 00 00 00')).result), [2, 0x04, 0x02]);
    assert.deepEqual(
      senseTriple((await run(disk, read10(0, 1), { length: BS })).result),
      [2, 0x04, 0x02],
    );
    const rs = await run(disk, '03 00 00 00 12 00', { length: 18 });
    assert.deepEqual([rs.data[2], rs.data[12], rs.data[13]], [2, 0x04, 0x02]);
    const inq = await run(disk, '12 00 00 00 24 00', { length: 36 });
    assert.equal(inq.result.status, 0);
    await run(disk, '1b 00 00 00 01 00');
    assert.equal((await run(disk, read10(0, 1), { length: BS })).result.status, 0);
    // NO_FLUSH
    await run(disk, '1b 00 00 00 04 00');
    assert.equal(backend.calls.filter((c) => c.op === 'flush').length, 1);
  });

  const cachingSelect = (b2: string) => `0000 00 00 00 00 0000 08 12 ${b2} 00 ${'00'.repeat(16)}`;

  it('MODE SELECT(10) turns the write cache off (flushing) and back on', async () => {
    const { backend, disk } = setup();
    const off = await run(disk, '55 10 00 00 00 00 00 001c 00', { out: cachingSelect('00') });
    assert.equal(off.result.status, 0);
    assert.equal(off.result.transferred, 28);
    assert.equal(disk.writeCache, false);
    assert.equal(backend.calls.filter((c) => c.op === 'flush').length, 1);
    const ms = await run(disk, '1a 08 08 00 ff 00', { length: 255 });
    assert.equal(ms.data[6], 0x00);
    const on = await run(disk, '15 10 00 00 18 00', {
      out: `00 00 00 00 08 12 04 00 ${'00'.repeat(16)}`,
    });
    assert.equal(on.result.status, 0);
    assert.equal(disk.writeCache, true);
  });

  it('MODE SELECT with a block descriptor restating the geometry', async () => {
    const { disk } = setup();
    const ok = await run(disk, '15 10 00 00 20 00', {
      out: `00 00 00 08 00000800 00 000200 08 12 04 00 ${'00'.repeat(16)}`,
    });
    assert.equal(ok.result.status, 0);
    const bad = await run(disk, '15 10 00 00 20 00', {
      out: `00 00 00 08 00000000 00 001000 08 12 04 00 ${'00'.repeat(16)}`,
    });
    assert.deepEqual(senseTriple(bad.result), [5, 0x26, 0]);
    assert.equal(hex(bad.result.sense!.subarray(15, 18)), '800009');
  });

  const selectErrors = [
    {
      name: 'a non-changeable bit (RCD)',
      list: cachingSelect('05'),
      sense: [5, 0x26, 0],
      sks: '88000a',
    },
    {
      name: 'a wrong page length',
      list: `0000 00 00 00 00 0000 08 11 04 ${'00'.repeat(17)}`,
      sense: [5, 0x26, 0],
      sks: '800009',
    },
    {
      name: 'an unsupported page',
      list: `0000 00 00 00 00 0000 1c 0a ${'00'.repeat(18)}`,
      sense: [5, 0x26, 0],
      sks: '8d0008',
    },
    {
      name: 'a subpage-format page',
      list: `0000 00 00 00 00 0000 48 12 ${'00'.repeat(18)}`,
      sense: [5, 0x26, 0],
      sks: '8e0008',
    },
    {
      name: 'a truncated page',
      list: `0000 00 00 00 00 0000 08 12 04 00 ${'00'.repeat(14)}`,
      sense: [5, 0x1a, 0],
    },
    { name: 'a truncated header', list: '0000 00 00', sense: [5, 0x1a, 0] },
    {
      name: 'a medium type',
      list: `0000 05 00 00 00 0000 08 12 04 00 ${'00'.repeat(16)}`,
      sense: [5, 0x26, 0],
      sks: '800002',
    },
    {
      name: 'a changed control page field',
      list: `0000 00 00 00 00 0000 0a 0a 04 10 ${'00'.repeat(8)}`,
      sense: [5, 0x26, 0],
      sks: '8a000a',
    },
  ] as const;
  for (const e of selectErrors) {
    it(`MODE SELECT(10) rejects ${e.name}`, async () => {
      const { disk } = setup();
      const list = fromHex(e.list);
      const r = await run(disk, `55 10 00 00 00 00 00 ${be16(list.length)} 00`, { out: list });
      assert.deepEqual(senseTriple(r.result), e.sense);
      if ('sks' in e) assert.equal(hex(r.result.sense!.subarray(15, 18)), e.sks);
      assert.equal(disk.writeCache, true, 'nothing applied');
    });
  }
});
