import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { DiskIoError, type WriteOptions } from '../../../src/block/block-device.ts';
import { MemoryDisk } from '../../../src/block/memory-disk.ts';
import type { SrbResult } from '../../../src/devices/storvsc/guest/storvsc-channel.ts';
import {
  SRB_STATUS_AUTOSENSE_VALID,
  SrbStatus,
  STORVSP_MAX_TRANSFER_BYTES,
} from '../../../src/devices/storvsc/protocol.ts';
import type { DataDirection, ScsiResult } from '../../../src/scsi/target/command.ts';
import { ScsiDisk } from '../../../src/scsi/target/disk.ts';
import { ScsiTarget } from '../../../src/scsi/target/target.ts';
import { makeScsiRig, type ScsiRig } from './harness.ts';

const MiB = 1024 * 1024;

/** A memory disk whose blocks from `badFrom` fail to read (EIO) and whose writes past `fullFrom` find no space. */
class FaultyDisk extends MemoryDisk {
  constructor(
    size: number,
    private readonly badFrom: number,
    private readonly fullFrom: number,
  ) {
    super(size);
  }
  // MemoryDisk's vectored calls go through read/write, so these cover both forms.
  override async read(offset: number, target: Uint8Array): Promise<void> {
    if (offset + target.length > this.badFrom) {
      throw new DiskIoError('EIO', 'bad sector', Math.max(offset, this.badFrom));
    }
    return super.read(offset, target);
  }
  override async write(offset: number, source: Uint8Array, options?: WriteOptions): Promise<void> {
    if (offset + source.length > this.fullFrom) {
      throw new DiskIoError('ENOSPC', 'disk full', this.fullFrom);
    }
    return super.write(offset, source, options);
  }
}

/** The same LUN layout twice: behind storvsp/storvsc, and as a bare target to compare with. */
function disks() {
  return [
    { lun: 0, device: new MemoryDisk(2 * MiB) },
    { lun: 1, device: new MemoryDisk(MiB, { readOnly: true }) },
    { lun: 2, device: new FaultyDisk(MiB, 512 * 1024, 768 * 1024) },
  ];
}

const cdb16 = (op: number, lba: number, blocks: number, flags = 0): Uint8Array => {
  const c = new Uint8Array(16);
  const v = new DataView(c.buffer);
  c[0] = op;
  c[1] = flags;
  v.setBigUint64(2, BigInt(lba));
  v.setUint32(10, blocks);
  return c;
};

interface Case {
  readonly name: string;
  readonly lun: number;
  readonly cdb: Uint8Array;
  readonly direction: DataDirection;
  readonly length: number;
  /** Expected sense key / ASC / ASCQ, and the SRB status code. */
  readonly key: number;
  readonly asc: number;
  readonly ascq: number;
  readonly srb: number;
}

const cases: Case[] = [
  {
    name: 'unsupported operation code',
    lun: 0,
    cdb: Uint8Array.of(0xc7, 0, 0, 0, 0, 0),
    direction: 'none',
    length: 0,
    key: 0x5,
    asc: 0x20,
    ascq: 0,
    srb: SrbStatus.Error,
  },
  {
    name: 'READ(16) past the last LBA',
    lun: 0,
    cdb: cdb16(0x88, 4096, 8),
    direction: 'in',
    length: 4096,
    key: 0x5,
    asc: 0x21,
    ascq: 0,
    srb: SrbStatus.Error,
  },
  {
    name: 'INQUIRY with the obsolete CMDDT bit',
    lun: 0,
    cdb: Uint8Array.of(0x12, 0x02, 0, 0, 96, 0),
    direction: 'in',
    length: 96,
    key: 0x5,
    asc: 0x24,
    ascq: 0,
    srb: SrbStatus.Error,
  },
  {
    name: 'READ(16) declared as data-out',
    lun: 0,
    cdb: cdb16(0x88, 0, 1),
    direction: 'out',
    length: 512,
    key: 0x5,
    asc: 0x24,
    ascq: 0,
    srb: SrbStatus.Error,
  },
  {
    name: 'WRITE SAME(16) of zero blocks',
    lun: 0,
    cdb: cdb16(0x93, 0, 0, 0x01),
    direction: 'none',
    length: 0,
    key: 0x5,
    asc: 0x24,
    ascq: 0,
    srb: SrbStatus.Error,
  },
  {
    name: 'MODE SENSE(6) of an unknown page',
    lun: 0,
    cdb: Uint8Array.of(0x1a, 0, 0x3e, 0, 0xff, 0),
    direction: 'in',
    length: 255,
    key: 0x5,
    asc: 0x24,
    ascq: 0,
    srb: SrbStatus.Error,
  },
  {
    name: 'READ CAPACITY(16) with a bad service action',
    lun: 0,
    cdb: Uint8Array.of(0x9e, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0),
    direction: 'in',
    length: 32,
    key: 0x5,
    asc: 0x24,
    ascq: 0,
    srb: SrbStatus.Error,
  },
  {
    name: 'WRITE(16) to a write-protected disk',
    lun: 1,
    cdb: cdb16(0x8a, 0, 1),
    direction: 'out',
    length: 512,
    key: 0x7,
    asc: 0x27,
    ascq: 0,
    srb: SrbStatus.Error,
  },
  {
    name: 'READ(16) of an unreadable block (MEDIUM ERROR with its LBA)',
    lun: 2,
    cdb: cdb16(0x88, 1020, 8),
    direction: 'in',
    length: 4096,
    key: 0x3,
    asc: 0x11,
    ascq: 0,
    srb: SrbStatus.Error,
  },
  {
    name: 'WRITE(16) with no space left',
    lun: 2,
    cdb: cdb16(0x8a, 1600, 8),
    direction: 'out',
    length: 4096,
    key: 0x7,
    asc: 0x27,
    ascq: 0x07,
    srb: SrbStatus.Error,
  },
  {
    name: 'TEST UNIT READY to a LUN with no disk',
    lun: 5,
    cdb: Uint8Array.of(0, 0, 0, 0, 0, 0),
    direction: 'none',
    length: 0,
    key: 0x5,
    asc: 0x25,
    ascq: 0,
    srb: SrbStatus.InvalidLun,
  },
];

describe('sense data arrives intact through storvsp and storvsc', () => {
  let rig: ScsiRig;
  const twin = new ScsiTarget();
  before(async () => {
    rig = await makeScsiRig({ disks: disks() });
    for (const d of disks())
      twin.attach(d.lun, new ScsiDisk(d.device, { maxTransferBytes: STORVSP_MAX_TRANSFER_BYTES }));
    // The guest's scan consumed the attach-time unit attentions; consume the twin's alike.
    const reportLuns = Uint8Array.of(0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0);
    for (const lun of [0, 1, 2]) {
      await twin.execute(lun, { cdb: reportLuns, direction: 'in', buffers: [new Uint8Array(256)] });
    }
  });
  after(() => rig.close());

  async function viaBus(c: {
    lun: number;
    cdb: Uint8Array;
    direction: DataDirection;
    length: number;
  }): Promise<SrbResult> {
    const controller = rig.controller!;
    if (c.length === 0)
      return controller.submit({ lun: c.lun, cdb: c.cdb, direction: c.direction });
    const buffer = await controller.buffers!.acquire(c.length);
    try {
      return await controller.submit({ lun: c.lun, cdb: c.cdb, direction: c.direction, buffer });
    } finally {
      buffer.release();
    }
  }

  function direct(c: {
    lun: number;
    cdb: Uint8Array;
    direction: DataDirection;
    length: number;
  }): Promise<ScsiResult> {
    return twin.execute(c.lun, {
      cdb: c.cdb,
      direction: c.direction,
      buffers: c.length ? [new Uint8Array(c.length)] : [],
    });
  }

  for (const c of cases) {
    it(c.name, async () => {
      const [got, want] = await Promise.all([viaBus(c), direct(c)]);
      assert.equal(want.status, 0x02, 'the target itself answers CHECK CONDITION');
      assert.equal(got.scsiStatus, 0x02, 'CHECK CONDITION');
      assert.equal(
        got.srbStatus,
        c.srb | SRB_STATUS_AUTOSENSE_VALID,
        'SRB status with AUTOSENSE_VALID',
      );
      assert.equal(got.transferred, 0);
      assert.equal(got.sense.length, 18, 'all 18 bytes of fixed-format sense');
      assert.deepEqual(got.sense, want.sense, 'the same bytes the target produced');
      assert.equal(got.sense[0]! & 0x7f, 0x70, 'current error, fixed format');
      assert.equal(got.sense[2]! & 0x0f, c.key, 'sense key');
      assert.equal(got.sense[12], c.asc, 'ASC');
      assert.equal(got.sense[13], c.ascq, 'ASCQ');
    });
  }

  it('reports the failing LBA of a medium error, and the guest disk turns it into the byte offset', async () => {
    const got = await viaBus(cases.find((c) => c.asc === 0x11)!);
    assert.ok(got.sense[0]! & 0x80, 'INFORMATION is valid');
    assert.equal(
      new DataView(got.sense.buffer, got.sense.byteOffset).getUint32(3),
      1024,
      'LBA 1024',
    );
    const disk = rig.controller!.disks.get(2)!;
    await assert.rejects(disk.read(510 * 1024, new Uint8Array(8192)), (e: DiskIoError) => {
      assert.equal(e.code, 'EIO');
      assert.equal(e.offset, 512 * 1024);
      assert.match(e.message, /MEDIUM ERROR, ASC\/ASCQ 0x11\/0x00/);
      return true;
    });
    await assert.rejects(disk.write(800 * 1024, new Uint8Array(4096)), { code: 'ENOSPC' });
    await assert.rejects(rig.controller!.disks.get(1)!.write(0, new Uint8Array(512)), {
      code: 'EROFS',
    });
  });

  it('reports a short transfer as DATA_OVERRUN with the count', async () => {
    const c = {
      lun: 0,
      cdb: Uint8Array.of(0x12, 0, 0, 0, 255, 0),
      direction: 'in' as const,
      length: 255,
    };
    const [got, want] = await Promise.all([viaBus(c), direct(c)]);
    assert.equal(got.scsiStatus, 0);
    assert.equal(got.srbStatus, SrbStatus.DataOverrun);
    assert.equal(got.transferred, want.transferred);
    assert.ok(got.transferred < 255 && got.transferred >= 36, `moved ${got.transferred}`);
    assert.equal(got.sense.length, 0);
  });

  it('delivers the unit attention a hot add leaves on the other LUNs', async () => {
    const controller = rig.controller!;
    rig.vsp.attachDisk(3, new MemoryDisk(MiB), 'memory');
    twin.attach(
      3,
      new ScsiDisk(new MemoryDisk(MiB), { maxTransferBytes: STORVSP_MAX_TRANSFER_BYTES }),
    );
    const start = Date.now();
    while (!controller.disks.has(3) && Date.now() - start < 3000)
      await new Promise((r) => setTimeout(r, 5));
    assert.ok(controller.disks.has(3), 'the guest rescanned and found LUN 3');
    // LUN 0 got its REPORT LUNS (which clears it there); LUN 1 still holds the attention.
    const tur = { lun: 1, cdb: new Uint8Array(6), direction: 'none' as const, length: 0 };
    const [got, want] = await Promise.all([viaBus(tur), direct(tur)]);
    assert.equal(got.srbStatus, SrbStatus.Error | SRB_STATUS_AUTOSENSE_VALID);
    assert.deepEqual(got.sense, want.sense);
    assert.equal(got.sense[2]! & 0x0f, 0x6, 'UNIT ATTENTION');
    assert.deepEqual(
      [got.sense[12], got.sense[13]],
      [0x3f, 0x0e],
      'REPORTED LUNS DATA HAS CHANGED',
    );
    // And a guest read on LUN 1 retries past it as the midlayer would.
    const ro = controller.disks.get(1)!;
    rig.vsp.attachDisk(4, new MemoryDisk(MiB), 'memory');
    await ro.read(0, new Uint8Array(512));
  });
});
