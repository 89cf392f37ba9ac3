import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as cdb from '../../src/scsi/initiator/cdb-builders.ts';
import {
  decodeLun,
  parseBlockDeviceCharacteristics,
  parseBlockLimits,
  parseDeviceIdentification,
  parseLogicalBlockProvisioning,
  parseModeSense,
  parseReadCapacity10,
  parseReadCapacity16,
  parseReportLuns,
  parseStandardInquiry,
  parseSupportedVpdPages,
  parseUnitSerialNumber,
  parseVpdPage,
  vpdPageSize,
} from '../../src/scsi/initiator/response-parsers.ts';
import { parseSense } from '../../src/scsi/initiator/sense-parser.ts';
import type { DataDirection, ScsiResult } from '../../src/scsi/target/command.ts';
import { ScsiDisk } from '../../src/scsi/target/disk.ts';
import { ScsiTarget } from '../../src/scsi/target/target.ts';
import { fromHex, hex, RecordingDisk } from './scsi-harness.ts';

/**
 * Initiator side: the CDB builders produce the bytes SPC-4/SBC-3 define
 * (hand-written vectors), their commands round-trip through the target into
 * the parsers, and the parsers turn malformed data into error values.
 */

describe('CDB builders', () => {
  const vectors: Array<[string, Uint8Array, string]> = [
    ['TEST UNIT READY', cdb.testUnitReady(), '000000000000'],
    ['REQUEST SENSE', cdb.requestSense(18), '030000001200'],
    ['REQUEST SENSE descriptor', cdb.requestSense(252, { descriptor: true }), '03010000fc00'],
    ['INQUIRY standard', cdb.inquiry(), '120000006000'],
    ['INQUIRY VPD 0x83', cdb.inquiry({ page: 0x83, allocation: 0x1000 }), '120183100000'],
    ['READ CAPACITY(10)', cdb.readCapacity10(), '25000000000000000000'],
    ['READ CAPACITY(16)', cdb.readCapacity16(), '9e100000000000000000000000200000'],
    [
      'READ(10) FUA',
      cdb.read10({ lba: 0x01020304, blocks: 0x0506, fua: true }),
      '28080102030400050600',
    ],
    ['WRITE(10)', cdb.write10({ lba: 7, blocks: 1 }), '2a000000000700000100'],
    ['READ(16)', cdb.read16({ lba: 0x123456789n, blocks: 8 }), '88000000000123456789000000080000'],
    [
      'WRITE(16) FUA',
      cdb.write16({ lba: 2 ** 40, blocks: 0x10000, fua: true }),
      '8a080000010000000000000100000000',
    ],
    [
      'VERIFY(16) BYTCHK',
      cdb.verify16({ lba: 1, blocks: 2, bytchk: 1 }),
      '8f020000000000000001000000020000',
    ],
    ['SYNCHRONIZE CACHE(10)', cdb.synchronizeCache10(), '35000000000000000000'],
    [
      'SYNCHRONIZE CACHE(16) IMMED',
      cdb.synchronizeCache16({ lba: 5, blocks: 6, immed: true }),
      '91020000000000000005000000060000',
    ],
    ['UNMAP', cdb.unmap(24), '42000000000000001800'],
    [
      'WRITE SAME(16) UNMAP',
      cdb.writeSame16({ lba: 9, blocks: 10, unmap: true }),
      '930800000000000000090000000a0000',
    ],
    [
      'WRITE SAME(16) NDOB',
      cdb.writeSame16({ lba: 0, blocks: 1, ndob: true }),
      '93010000000000000000000000010000',
    ],
    ['REPORT LUNS', cdb.reportLuns({ select: 2, allocation: 0x208 }), 'a0000200000000000208 0000'],
    ['MODE SENSE(6)', cdb.modeSense6({ page: 8, dbd: true, allocation: 0x20 }), '1a0808002000'],
    [
      'MODE SENSE(10) changeable',
      cdb.modeSense10({ page: 0x3f, pageControl: 1, llbaa: true }),
      '5a107f00000000100000',
    ],
    ['MODE SELECT(10)', cdb.modeSelect10(28), '551000000000 00001c00'],
    ['START STOP UNIT stop', cdb.startStopUnit({ start: false, noFlush: true }), '1b0000000400'],
  ];
  for (const [name, bytes, expected] of vectors) {
    it(name, () => assert.equal(hex(bytes), expected.replace(/\s/g, '')));
  }

  it('UNMAP parameter list', () => {
    assert.equal(
      hex(
        cdb.unmapParameterList([
          { lba: 0x10, blocks: 0x20 },
          { lba: 2n ** 33n, blocks: 1 },
        ]),
      ),
      '0026 0020 00000000 0000000000000010 00000020 00000000 0000000200000000 00000001 00000000'.replace(
        /\s/g,
        '',
      ),
    );
  });

  it('refuses values that do not fit their fields', () => {
    assert.throws(() => cdb.read10({ lba: 2 ** 32, blocks: 1 }), /does not fit a 10-byte CDB/);
    assert.throws(() => cdb.read10({ lba: 0, blocks: 0x10000 }), /transfer length 65536/);
    assert.throws(() => cdb.read16({ lba: -1, blocks: 1 }), RangeError);
    assert.throws(() => cdb.read16({ lba: 2n ** 64n, blocks: 1 }), /does not fit 64 bits/);
    assert.throws(() => cdb.inquiry({ allocation: 0x10000 }), /allocation length/);
    assert.throws(
      () => cdb.unmapParameterList(new Array(4096).fill({ lba: 0, blocks: 1 })),
      /16-bit/,
    );
    assert.throws(() => cdb.cachingModeSelectList(new Uint8Array(12), true), /20-byte caching/);
  });
});

describe('round trips: builder → target → parser', () => {
  const BS = 512;
  const id = fromHex('00112233445566778899aabbccddeeff');
  const backend = new RecordingDisk(4096 * BS, { identifier: id, physicalSectorSize: 4096 });
  const target = new ScsiTarget();
  target.attach(0, new ScsiDisk(backend, { serial: 'SER-001', product: 'Test Disk' }));
  target.attach(2, new ScsiDisk(new RecordingDisk(8 * BS)));

  async function send(
    bytes: Uint8Array,
    direction: DataDirection,
    length: number,
    out?: Uint8Array,
    lun = 0,
  ): Promise<{ result: ScsiResult; data: Uint8Array }> {
    const buffer = new Uint8Array(length);
    if (out) buffer.set(out);
    const result = await target.execute(lun, { cdb: bytes, direction, buffers: [buffer] });
    return { result, data: buffer.subarray(0, result.transferred) };
  }

  it('REPORT LUNS (consuming the attach unit attention first)', async () => {
    const { result, data } = await send(cdb.reportLuns(), 'in', 8 + 8 * 256);
    assert.equal(result.status, 0);
    const list = parseReportLuns(data);
    assert.ok(list.ok);
    assert.deepEqual(
      list.value.luns.map((l) => l.lun),
      [0, 2],
    );
    assert.equal(list.value.truncated, false);
    const tur = await send(cdb.testUnitReady(), 'none', 0);
    assert.equal(tur.result.status, 0);
  });

  it('INQUIRY standard and every VPD page', async () => {
    const std = parseStandardInquiry((await send(cdb.inquiry(), 'in', 96)).data);
    assert.ok(std.ok);
    assert.equal(std.value.vendor, 'Msft');
    assert.equal(std.value.product, 'Test Disk');
    assert.equal(std.value.revision, '1.0');
    assert.equal(std.value.version, 6);
    assert.equal(std.value.commandQueueing, true);
    assert.deepEqual(std.value.versionDescriptors, [0x00a0, 0x0460, 0x04c0]);

    const pages = parseSupportedVpdPages((await send(cdb.inquiry({ page: 0 }), 'in', 255)).data);
    assert.deepEqual(pages.ok && pages.value, [0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2]);
    const serial = parseUnitSerialNumber((await send(cdb.inquiry({ page: 0x80 }), 'in', 255)).data);
    assert.deepEqual(serial, { ok: true, value: 'SER-001' });
    const ids = parseDeviceIdentification(
      (await send(cdb.inquiry({ page: 0x83 }), 'in', 255)).data,
    );
    assert.ok(ids.ok);
    assert.deepEqual(
      ids.value.map((d) => [d.type, d.codeSet, d.association, hex(d.designator)]),
      [
        [1, 1, 0, `4d73667420202020${hex(id)}`],
        [3, 1, 0, '60022480001122334455aabbccddeeff'],
      ],
    );
    const limits = parseBlockLimits((await send(cdb.inquiry({ page: 0xb0 }), 'in', 255)).data);
    assert.ok(limits.ok);
    assert.equal(limits.value.maxTransferLength, 16384);
    assert.equal(limits.value.optimalTransferLengthGranularity, 8);
    assert.equal(limits.value.maxUnmapBlockDescriptorCount, 4095);
    assert.equal(limits.value.optimalUnmapGranularity, 8);
    assert.equal(limits.value.unmapGranularityAlignmentValid, true);
    assert.equal(limits.value.maxWriteSameLength, 131072n);
    assert.equal(limits.value.wsnz, true);
    const bdc = parseBlockDeviceCharacteristics(
      (await send(cdb.inquiry({ page: 0xb1 }), 'in', 255)).data,
    );
    assert.deepEqual(bdc.ok && bdc.value.rotationRate, 1);
    const lbp = parseLogicalBlockProvisioning(
      (await send(cdb.inquiry({ page: 0xb2 }), 'in', 255)).data,
    );
    assert.ok(lbp.ok);
    assert.deepEqual(
      [
        lbp.value.lbpu,
        lbp.value.lbpws,
        lbp.value.lbpws10,
        lbp.value.lbprz,
        lbp.value.provisioningType,
      ],
      [true, true, true, true, 2],
    );
  });

  it('a short VPD allocation tells the parser how much to ask for', async () => {
    const { data } = await send(cdb.inquiry({ page: 0x83, allocation: 8 }), 'in', 255);
    assert.equal(vpdPageSize(data), 52);
    const parsed = parseDeviceIdentification(data);
    assert.equal(parsed.ok, false);
    assert.match(parsed.ok ? '' : parsed.error, /page length 48 needs 52 bytes, have 8/);
  });

  it('READ CAPACITY(10) and (16)', async () => {
    const c10 = parseReadCapacity10((await send(cdb.readCapacity10(), 'in', 8)).data);
    assert.deepEqual(c10, { ok: true, value: { lastLba: 4095, blockLength: 512, needs16: false } });
    const c16 = parseReadCapacity16((await send(cdb.readCapacity16(), 'in', 32)).data);
    assert.ok(c16.ok);
    assert.equal(c16.value.lastLba, 4095n);
    assert.equal(c16.value.logicalBlocksPerPhysicalExponent, 3);
    assert.equal(c16.value.lbpme, true);
    assert.equal(c16.value.lbprz, true);
  });

  it('MODE SENSE(6)/(10) and a MODE SELECT built from the sensed page', async () => {
    const m6 = parseModeSense((await send(cdb.modeSense6(), 'in', 255)).data, false);
    assert.ok(m6.ok);
    assert.deepEqual(m6.value.caching, { writeCacheEnabled: true, readCacheDisabled: false });
    assert.deepEqual(
      m6.value.pages.map((p) => p.code),
      [0x08, 0x0a],
    );
    assert.deepEqual(m6.value.blockDescriptors, [{ blocks: 4096n, blockLength: 512 }]);
    assert.equal(m6.value.dpoFua, true);
    const m10 = parseModeSense(
      (await send(cdb.modeSense10({ page: 8, llbaa: true }), 'in', 255)).data,
      true,
    );
    assert.ok(m10.ok);
    assert.deepEqual(m10.value.blockDescriptors, [{ blocks: 4096n, blockLength: 512 }]);
    const page = m10.value.pages[0]?.bytes;
    assert.ok(page);
    const list = cdb.cachingModeSelectList(page, false);
    const sel = await send(cdb.modeSelect10(list.length), 'out', list.length, list);
    assert.equal(sel.result.status, 0);
    const after = parseModeSense(
      (await send(cdb.modeSense6({ page: 8, dbd: true }), 'in', 255)).data,
      false,
    );
    assert.deepEqual(after.ok && after.value.caching?.writeCacheEnabled, false);
    const back = cdb.cachingModeSelectList(page, true);
    assert.equal(
      (await send(cdb.modeSelect10(back.length), 'out', back.length, back)).result.status,
      0,
    );
  });

  it('WRITE(16) FUA, READ(16), UNMAP, WRITE SAME(16), SYNCHRONIZE CACHE, VERIFY(16)', async () => {
    const data = new Uint8Array(8 * BS).map((_, i) => (i * 31 + 1) & 0xff);
    const w = await send(cdb.write16({ lba: 100, blocks: 8, fua: true }), 'out', data.length, data);
    assert.equal(w.result.status, 0);
    assert.equal(backend.calls.at(-1)?.fua, true);
    const r = await send(cdb.read16({ lba: 100, blocks: 8 }), 'in', data.length);
    assert.deepEqual(r.data, data);
    assert.equal(
      (await send(cdb.verify16({ lba: 100, blocks: 8, bytchk: 1 }), 'out', data.length, data))
        .result.status,
      0,
    );

    const list = cdb.unmapParameterList([
      { lba: 100, blocks: 2 },
      { lba: 106, blocks: 2 },
    ]);
    assert.equal((await send(cdb.unmap(list.length), 'out', list.length, list)).result.status, 0);
    const ws = await send(cdb.writeSame16({ lba: 102, blocks: 2, unmap: true }), 'out', BS);
    assert.equal(ws.result.status, 0);
    const after = await send(cdb.read16({ lba: 100, blocks: 8 }), 'in', data.length);
    const expected = data.slice();
    expected.fill(0, 0, 4 * BS);
    expected.fill(0, 6 * BS, 8 * BS);
    assert.deepEqual(after.data, expected);
    assert.equal((await send(cdb.synchronizeCache16(), 'none', 0)).result.status, 0);
    assert.equal(backend.calls.at(-1)?.op, 'flush');
  });

  it('CHECK CONDITION sense parses back, with its field pointer', async () => {
    const bad = await send(cdb.inquiry({ page: 0x42 }), 'in', 255);
    assert.equal(bad.result.status, 2);
    const sense = parseSense(bad.result.sense ?? new Uint8Array(0));
    assert.ok(sense.ok);
    assert.deepEqual(
      [sense.value.format, sense.value.key, sense.value.asc, sense.value.ascq],
      ['fixed', 5, 0x24, 0],
    );
    assert.deepEqual(sense.value.fieldPointer, { inCdb: true, byte: 2 });
    const oob = await send(cdb.read16({ lba: 5000, blocks: 1 }), 'in', BS);
    const s2 = parseSense(oob.result.sense ?? new Uint8Array(0));
    assert.deepEqual(s2.ok && [s2.value.key, s2.value.asc], [5, 0x21]);
  });

  it('REQUEST SENSE in both formats parses back', async () => {
    const absentFixed = await send(cdb.requestSense(18), 'in', 18, undefined, 9);
    const f = parseSense(absentFixed.data);
    assert.deepEqual(f.ok && [f.value.format, f.value.key, f.value.asc], ['fixed', 5, 0x25]);
    const absentDesc = await send(
      cdb.requestSense(252, { descriptor: true }),
      'in',
      252,
      undefined,
      9,
    );
    const d = parseSense(absentDesc.data);
    assert.deepEqual(d.ok && [d.value.format, d.value.key, d.value.asc, d.value.truncated], [
      'descriptor',
      5,
      0x25,
      false,
    ]);
  });
});

describe('sense data parser', () => {
  it('fixed format with INFORMATION and a field pointer', () => {
    const s = parseSense(fromHex('f0 00 05 00000123 0a 00000000 24 00 00 cb 0007'));
    assert.ok(s.ok);
    assert.equal(s.value.information, 0x123n);
    assert.deepEqual(s.value.fieldPointer, { inCdb: true, byte: 7, bit: 3 });
    assert.equal(s.value.truncated, false);
  });

  it('fixed format clipped to 14 bytes by storvsc-sized buffers still yields ASC/ASCQ', () => {
    const s = parseSense(fromHex('70 00 06 00000000 0a 00000000 2a 09'));
    assert.deepEqual(s.ok && [s.value.key, s.value.asc, s.value.ascq, s.value.truncated], [
      6,
      0x2a,
      9,
      true,
    ]);
  });

  it('descriptor format with information, sense-key-specific and unknown descriptors', () => {
    const s = parseSense(
      fromHex(
        '72 03 11 00 00 00 00 18  00 0a 80 00 0000000123456789  02 06 00 00 80 00 10 00  80 02 aa bb',
      ),
    );
    assert.ok(s.ok);
    assert.equal(s.value.information, 0x123456789n);
    assert.deepEqual(s.value.senseKeySpecific, fromHex('800010'));
    assert.equal(s.value.fieldPointer, undefined, 'field pointers are only for ILLEGAL REQUEST');
    assert.deepEqual(
      s.value.descriptors.map((d) => d.type),
      [0x00, 0x02, 0x80],
    );
  });

  it('deferred errors are flagged', () => {
    const s = parseSense(fromHex('71 00 03 00000000 0a 00000000 0c 00 00 000000'));
    assert.deepEqual(s.ok && [s.value.deferred, s.value.key, s.value.asc], [true, 3, 0x0c]);
  });

  const invalid: Array<[string, string, RegExp]> = [
    ['empty', '', /empty/],
    ['unknown response code', '7f 00 00 00', /response code 0x7f/],
    ['fixed, 5 bytes', '70 00 05 00 00', /need 8 header bytes, have 5/],
    [
      'fixed, additional length too small for ASC',
      '70 00 05 00000000 02 00000000 24 00',
      /only 10 bytes are present/,
    ],
    ['descriptor, header cut', '72 05 24', /need 8 header bytes, have 3/],
    [
      'descriptor overruns the additional length',
      '72 05 24 00 00 00 00 04 02 06 00 00 80 00',
      /past the additional sense length 4/,
    ],
    [
      'information descriptor of the wrong length',
      '72 05 24 00 00 00 00 06 00 04 80 00 00 00',
      /information descriptor at offset 8 has length 4/,
    ],
    ['stray byte', '72 05 24 00 00 00 00 01 00', /stray byte at offset 8/],
  ];
  for (const [name, bytes, error] of invalid) {
    it(`rejects ${name}`, () => {
      const s = parseSense(fromHex(bytes));
      assert.equal(s.ok, false);
      assert.match(s.ok ? '' : s.error, error);
    });
  }
});

describe('response parsers reject malformed data', () => {
  const cases: Array<[string, () => { ok: boolean; error?: string }, RegExp]> = [
    [
      'INQUIRY under 36 bytes',
      () => parseStandardInquiry(new Uint8Array(35)),
      /need 36 bytes, have 35/,
    ],
    [
      'INQUIRY with a control character in the vendor',
      () => parseStandardInquiry(fromHex(`00000602 1f000000 4d 07 ${'20'.repeat(26)}`)),
      /vendor identification: byte 9 is 0x07/,
    ],
    [
      'VPD page of the wrong code',
      () => parseVpdPage(fromHex('00 80 00 00'), 0x83),
      /the data is page 0x80/,
    ],
    [
      'VPD header cut',
      () => parseVpdPage(fromHex('00 83 00'), 0x83),
      /need the 4-byte header, have 3/,
    ],
    [
      'designator past the page',
      () => parseDeviceIdentification(fromHex('00 83 0008 01 03 00 10 60 02 24 80')),
      /claims 16 bytes, 4 remain/,
    ],
    [
      'designator header cut',
      () => parseDeviceIdentification(fromHex('00 83 0002 01 03')),
      /needs 4 header bytes, 2 remain/,
    ],
    [
      'block limits page too short',
      () => parseBlockLimits(fromHex('00 b0 0004 00 00 00 00')),
      /below the minimum 12/,
    ],
    [
      'serial with a control byte',
      () => parseUnitSerialNumber(fromHex('00 80 0002 41 0a')),
      /byte 1 is 0x0a/,
    ],
    [
      'READ CAPACITY(10) short',
      () => parseReadCapacity10(new Uint8Array(7)),
      /need 8 bytes, have 7/,
    ],
    [
      'READ CAPACITY(10) block length 0',
      () => parseReadCapacity10(fromHex('000000ff 00000000')),
      /block length 0/,
    ],
    [
      'READ CAPACITY(16) short',
      () => parseReadCapacity16(new Uint8Array(12)),
      /need 16 bytes, have 12/,
    ],
    [
      'REPORT LUNS odd list length',
      () => parseReportLuns(fromHex('00000009 00000000')),
      /not a multiple of 8/,
    ],
    ['REPORT LUNS header cut', () => parseReportLuns(new Uint8Array(4)), /need the 8-byte header/],
    [
      'MODE SENSE(6) header cut',
      () => parseModeSense(new Uint8Array(3), false),
      /need the 4-byte header, have 3/,
    ],
    [
      'MODE SENSE(6) block descriptors past the data',
      () => parseModeSense(fromHex('0b 00 00 10 00000000 00000200'), false),
      /block descriptor length 16 runs past/,
    ],
    [
      'MODE SENSE(10) page past the data',
      () => parseModeSense(fromHex('0008 00 00 00 00 0000 08 12 04 00'), true),
      /mode page 0x08 at offset 8 \(length 18\) runs past/,
    ],
    [
      'MODE SENSE(6) ragged block descriptor length',
      () => parseModeSense(fromHex('0b 00 00 06 00000000 0000 0000'), false),
      /not a multiple of 8/,
    ],
  ];
  for (const [name, parse, error] of cases) {
    it(name, () => {
      const r = parse();
      assert.equal(r.ok, false);
      assert.match(r.error ?? '', error);
    });
  }

  it('REPORT LUNS cut by the allocation length keeps the whole entries', () => {
    const r = parseReportLuns(fromHex('00000018 00000000 0000000000000000 0001000000000000 4001'));
    assert.ok(r.ok);
    assert.deepEqual(
      r.value.luns.map((l) => l.lun),
      [0, 1],
    );
    assert.equal(r.value.truncated, true);
  });

  it('LUN structures beyond single-level addressing keep only the raw bytes', () => {
    assert.equal(decodeLun(fromHex('412c000000000000')).lun, 300);
    assert.equal(decodeLun(fromHex('0105000000000000')).lun, undefined, 'bus 1');
    assert.equal(decodeLun(fromHex('0001000100000000')).lun, undefined, 'second level');
    assert.equal(decodeLun(fromHex('c100000000000000')).addressMethod, 3);
  });

  it('MODE SENSE cut inside a page lists the complete pages and says truncated', () => {
    const r = parseModeSense(
      fromHex(`23 00 10 00 08 12 04 00 ${'00'.repeat(16)} 0a 0a 00 10`),
      false,
    );
    assert.ok(r.ok);
    assert.deepEqual(
      r.value.pages.map((p) => p.code),
      [8],
    );
    assert.equal(r.value.truncated, true);
  });
});
