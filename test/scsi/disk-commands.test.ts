import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ScsiDisk } from '../../src/scsi/target/disk.ts';
import { fromHex, hex, RecordingDisk, type RunOptions, run, senseTriple } from './scsi-harness.ts';

/**
 * SCSI conformance, table-driven: one CDB per row against a fresh 1 MiB disk
 * (2048 blocks of 512 bytes, identifier 00..0f). Expected bytes are written
 * out by hand from SPC-4/SBC-3, never produced by the code under test.
 */

interface Row {
  readonly name: string;
  readonly cdb: string;
  readonly options?: RunOptions;
  readonly status: number;
  /** Sense key, ASC, ASCQ for CHECK CONDITION. */
  readonly sense?: readonly [number, number, number];
  /** Sense-key-specific bytes 15..17 (hex) when checked. */
  readonly sks?: string;
  /** The data-in bytes expected (exactly `transferred` of them). */
  readonly data?: string;
  readonly transferred?: number;
}

const ID = '000102030405060708090a0b0c0d0e0f';
const ascii = (s: string) => Buffer.from(s, 'latin1').toString('hex');
const zeros = (n: number) => '00'.repeat(n);

const STANDARD_INQUIRY =
  '00 00 06 02 5b 00 00 02' +
  ascii('Msft    ') +
  ascii('Virtual Disk    ') +
  ascii('1.0 ') +
  zeros(20) +
  '00 00' +
  '00a0 0460 04c0' +
  zeros(10) +
  zeros(22);

const CACHING_PAGE_WCE = `08 12 04 00 ${zeros(16)}`;
const CONTROL_PAGE = '0a 0a 00 10 00 00 0000 0000 0000';

const rows: Row[] = [
  // ---- INQUIRY ----
  {
    name: 'INQUIRY standard data, 96 bytes',
    cdb: '12 00 00 0060 00',
    options: { length: 96 },
    status: 0,
    data: STANDARD_INQUIRY,
  },
  {
    name: 'INQUIRY allocation 36 truncates',
    cdb: '12 00 00 0024 00',
    options: { length: 512 },
    status: 0,
    data: STANDARD_INQUIRY.replace(/\s/g, '').slice(0, 72),
  },
  {
    name: 'INQUIRY buffer of 20 bytes truncates',
    cdb: '12 00 00 0060 00',
    options: { length: 20 },
    status: 0,
    data: STANDARD_INQUIRY.replace(/\s/g, '').slice(0, 40),
  },
  {
    name: 'INQUIRY allocation 0 moves nothing',
    cdb: '12 00 00 0000 00',
    options: { length: 64 },
    status: 0,
    transferred: 0,
  },
  {
    name: 'INQUIRY page code without EVPD',
    cdb: '12 00 80 00ff 00',
    options: { length: 255 },
    status: 2,
    sense: [5, 0x24, 0],
    sks: 'c0 00 02',
  },
  {
    name: 'INQUIRY CMDDT',
    cdb: '12 02 00 00ff 00',
    options: { length: 255 },
    status: 2,
    sense: [5, 0x24, 0],
    sks: 'c9 00 01',
  },
  {
    name: 'VPD 0x00 supported pages',
    cdb: '12 01 00 00ff 00',
    options: { length: 255 },
    status: 0,
    data: '00 00 0006 00 80 83 b0 b1 b2',
  },
  {
    name: 'VPD 0x80 serial number (identifier in hex)',
    cdb: '12 01 80 00ff 00',
    options: { length: 255 },
    status: 0,
    data: `00 80 0020 ${ascii(ID)}`,
  },
  {
    name: 'VPD 0x83 T10 vendor id + NAA 6 designators',
    cdb: '12 01 83 00ff 00',
    options: { length: 255 },
    status: 0,
    data: `00 83 0030 01 01 00 18 ${ascii('Msft    ')} ${ID} 01 03 00 10 60 02 24 80 000102030405 0a0b0c0d0e0f`,
  },
  {
    name: 'VPD 0xB0 block limits',
    cdb: '12 01 b0 00ff 00',
    options: { length: 255 },
    status: 0,
    data: `00 b0 003c 01 00 0001 00004000 00000000 00000000 ffffffff 00000fff 00000001 80000000 0000000000020000 ${zeros(20)}`,
  },
  {
    name: 'VPD 0xB1 block device characteristics: non-rotating',
    cdb: '12 01 b1 00ff 00',
    options: { length: 255 },
    status: 0,
    data: `00 b1 003c 0001 00 00 00 ${zeros(55)}`,
  },
  {
    name: 'VPD 0xB2 logical block provisioning: LBPU LBPWS LBPWS10 LBPRZ, thin',
    cdb: '12 01 b2 00ff 00',
    options: { length: 255 },
    status: 0,
    data: '00 b2 0004 00 e4 02 00',
  },
  {
    name: 'VPD page not supported',
    cdb: '12 01 99 00ff 00',
    options: { length: 255 },
    status: 2,
    sense: [5, 0x24, 0],
    sks: 'c0 00 02',
  },
  {
    name: 'VPD 0x83 truncated to 8 bytes',
    cdb: '12 01 83 0008 00',
    options: { length: 255 },
    status: 0,
    data: '00 83 0030 01 01 00 18',
  },
  // ---- TEST UNIT READY / REQUEST SENSE ----
  { name: 'TEST UNIT READY', cdb: '00 00 00 00 00 00', status: 0, transferred: 0 },
  {
    name: 'REQUEST SENSE, fixed, nothing pending',
    cdb: '03 00 00 00 12 00',
    options: { length: 252 },
    status: 0,
    data: '70 00 00 00000000 0a 00000000 00 00 00 000000',
  },
  {
    name: 'REQUEST SENSE, descriptor format',
    cdb: '03 01 00 00 fc 00',
    options: { length: 252 },
    status: 0,
    data: '72 00 00 00 00 00 00 00',
  },
  {
    name: 'REQUEST SENSE, allocation 8',
    cdb: '03 00 00 00 08 00',
    options: { length: 252 },
    status: 0,
    data: '70 00 00 00000000 0a',
  },
  // ---- READ CAPACITY ----
  {
    name: 'READ CAPACITY(10)',
    cdb: '25 00 00000000 00 00 00 00',
    options: { length: 8 },
    status: 0,
    data: '000007ff 00000200',
  },
  {
    name: 'READ CAPACITY(10) into a 4-byte buffer',
    cdb: '25 00 00000000 00 00 00 00',
    options: { length: 4 },
    status: 0,
    data: '000007ff',
  },
  {
    name: 'READ CAPACITY(10) LBA without PMI',
    cdb: '25 00 00000001 00 00 00 00',
    options: { length: 8 },
    status: 2,
    sense: [5, 0x24, 0],
    sks: 'c0 00 02',
  },
  {
    name: 'READ CAPACITY(16): LBPME, LBPRZ',
    cdb: '9e 10 0000000000000000 00000020 00 00',
    options: { length: 32 },
    status: 0,
    data: `00000000000007ff 00000200 00 00 c0 00 ${zeros(16)}`,
  },
  {
    name: 'READ CAPACITY(16) allocation 12',
    cdb: '9e 10 0000000000000000 0000000c 00 00',
    options: { length: 32 },
    status: 0,
    data: '00000000000007ff 00000200',
  },
  {
    name: 'SERVICE ACTION IN(16) unknown service action',
    cdb: '9e 11 0000000000000000 00000020 00 00',
    options: { length: 32 },
    status: 2,
    sense: [5, 0x24, 0],
    sks: 'cc 00 01',
  },
  // ---- MODE SENSE ----
  {
    name: 'MODE SENSE(6) caching page, DBD',
    cdb: '1a 08 08 00 ff 00',
    options: { length: 255 },
    status: 0,
    data: `17 00 10 00 ${CACHING_PAGE_WCE}`,
  },
  {
    name: 'MODE SENSE(6) all pages with block descriptor',
    cdb: '1a 00 3f 00 ff 00',
    options: { length: 255 },
    status: 0,
    data: `2b 00 10 08 00000800 00 000200 ${CACHING_PAGE_WCE} ${CONTROL_PAGE}`,
  },
  {
    name: 'MODE SENSE(10) caching page, long LBA block descriptor',
    cdb: '5a 10 08 00 00 00 00 00ff 00',
    options: { length: 255 },
    status: 0,
    data: `002a 00 10 01 00 0010 0000000000000800 00000000 00000200 ${CACHING_PAGE_WCE}`,
  },
  {
    name: 'MODE SENSE(10) control page, DBD',
    cdb: '5a 08 0a 00 00 00 00 00ff 00',
    options: { length: 255 },
    status: 0,
    data: `0012 00 10 00 00 0000 ${CONTROL_PAGE}`,
  },
  {
    name: 'MODE SENSE(6) changeable values: only WCE',
    cdb: '1a 08 48 00 ff 00',
    options: { length: 255 },
    status: 0,
    data: `17 00 00 00 ${CACHING_PAGE_WCE}`,
  },
  {
    name: 'MODE SENSE(6) default values',
    cdb: '1a 08 88 00 ff 00',
    options: { length: 255 },
    status: 0,
    data: `17 00 10 00 ${CACHING_PAGE_WCE}`,
  },
  {
    name: 'MODE SENSE(6) saved values: SAVING PARAMETERS NOT SUPPORTED',
    cdb: '1a 08 c8 00 ff 00',
    options: { length: 255 },
    status: 2,
    sense: [5, 0x39, 0],
    sks: 'cf 00 02',
  },
  {
    name: 'MODE SENSE(6) unsupported page',
    cdb: '1a 08 1c 00 ff 00',
    options: { length: 255 },
    status: 2,
    sense: [5, 0x24, 0],
    sks: 'cd 00 02',
  },
  {
    name: 'MODE SENSE(6) caching subpage 1',
    cdb: '1a 08 08 01 ff 00',
    options: { length: 255 },
    status: 2,
    sense: [5, 0x24, 0],
    sks: 'c0 00 03',
  },
  {
    name: 'MODE SENSE(6) allocation 4: header only',
    cdb: '1a 08 08 00 04 00',
    options: { length: 255 },
    status: 0,
    data: '17 00 10 00',
  },
  // ---- READ / WRITE checks ----
  {
    name: 'READ(10) LBA past the end',
    cdb: '28 00 00000800 00 0001 00',
    options: { length: 512 },
    status: 2,
    sense: [5, 0x21, 0],
  },
  {
    name: 'READ(10) range crossing the end',
    cdb: '28 00 000007ff 00 0002 00',
    options: { length: 1024 },
    status: 2,
    sense: [5, 0x21, 0],
  },
  {
    name: 'READ(16) 64-bit LBA',
    cdb: '88 00 ffffffffffffffff 00000001 00 00',
    options: { length: 512 },
    status: 2,
    sense: [5, 0x21, 0],
  },
  {
    name: 'READ(10) zero blocks',
    cdb: '28 00 00000000 00 0000 00',
    options: { length: 512 },
    status: 0,
    transferred: 0,
  },
  {
    name: 'READ(10) RDPROTECT',
    cdb: '28 20 00000000 00 0001 00',
    options: { length: 512 },
    status: 2,
    sense: [5, 0x24, 0],
    sks: 'cf 00 01',
  },
  {
    name: 'READ(10) transfer larger than the buffer',
    cdb: '28 00 00000000 00 0002 00',
    options: { length: 512 },
    status: 2,
    sense: [5, 0x24, 0],
    sks: 'c0 00 07',
  },
  {
    name: 'READ(16) huge transfer length',
    cdb: '88 00 0000000000000000 ffffffff 00 00',
    options: { length: 512 },
    status: 2,
    sense: [5, 0x21, 0],
  },
  {
    name: 'READ(10) declared data-out',
    cdb: '28 00 00000000 00 0001 00',
    options: { direction: 'out', length: 512 },
    status: 2,
    sense: [5, 0x24, 0],
    sks: '00 00 00',
  },
  {
    name: 'WRITE(10) declared no data',
    cdb: '2a 00 00000000 00 0001 00',
    options: { direction: 'none' },
    status: 2,
    sense: [5, 0x24, 0],
  },
  {
    name: 'WRITE(10) LBA past the end',
    cdb: '2a 00 00001000 00 0001 00',
    options: { out: zeros(512) },
    status: 2,
    sense: [5, 0x21, 0],
  },
  // ---- opcode and CDB framing ----
  { name: 'empty CDB', cdb: '', status: 2, sense: [5, 0x20, 0] },
  { name: 'unsupported opcode 0x02', cdb: '02 00 00 00 00 00', status: 2, sense: [5, 0x20, 0] },
  {
    name: 'vendor-specific opcode 0xff',
    cdb: 'ff 00 00 00 00 00 00 00 00 00',
    status: 2,
    sense: [5, 0x20, 0],
  },
  { name: 'variable-length CDB 0x7f', cdb: `7f 00 ${zeros(30)}`, status: 2, sense: [5, 0x20, 0] },
  {
    name: 'CDB shorter than its group',
    cdb: '28 00 00',
    options: { length: 512 },
    status: 2,
    sense: [5, 0x24, 0],
  },
  {
    name: 'NACA in the control byte',
    cdb: '00 00 00 00 00 04',
    status: 2,
    sense: [5, 0x24, 0],
    sks: 'ca 00 05',
  },
  {
    name: 'CDB longer than its group is accepted',
    cdb: '00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00',
    status: 0,
  },
  // ---- REPORT LUNS (a disk alone is LUN 0) ----
  {
    name: 'REPORT LUNS',
    cdb: 'a0 00 00 000000 00000010 00 00',
    options: { length: 16 },
    status: 0,
    data: '00000008 00000000 0000000000000000',
  },
  {
    name: 'REPORT LUNS allocation 15',
    cdb: 'a0 00 00 000000 0000000f 00 00',
    options: { length: 16 },
    status: 2,
    sense: [5, 0x24, 0],
    sks: 'c0 00 06',
  },
  {
    name: 'REPORT LUNS select report 3',
    cdb: 'a0 00 03 000000 00000010 00 00',
    options: { length: 16 },
    status: 2,
    sense: [5, 0x24, 0],
    sks: 'c0 00 02',
  },
  {
    name: 'REPORT LUNS select report 1: no well-known LUNs',
    cdb: 'a0 00 01 000000 00000010 00 00',
    options: { length: 16 },
    status: 0,
    data: '00000000 00000000',
  },
  // ---- others ----
  {
    name: 'START STOP UNIT reserved power condition',
    cdb: '1b 00 00 00 40 00',
    status: 2,
    sense: [5, 0x24, 0],
    sks: 'cf 00 04',
  },
  { name: 'START STOP UNIT power condition IDLE', cdb: '1b 00 00 00 20 00', status: 0 },
  { name: 'SYNCHRONIZE CACHE(10) whole disk', cdb: '35 00 00000000 00 0000 00', status: 0 },
  { name: 'SYNCHRONIZE CACHE(16) range', cdb: '91 00 0000000000000010 00000010 00 00', status: 0 },
  {
    name: 'SYNCHRONIZE CACHE(10) LBA past the end',
    cdb: '35 00 00000800 00 0000 00',
    status: 2,
    sense: [5, 0x21, 0],
  },
  { name: 'VERIFY(10) medium verification', cdb: '2f 00 00000000 00 0010 00', status: 0 },
  {
    name: 'VERIFY(16) past the end',
    cdb: '8f 00 00000000000007f0 00000020 00 00',
    status: 2,
    sense: [5, 0x21, 0],
  },
  {
    name: 'VERIFY(10) BYTCHK 10b reserved',
    cdb: '2f 04 00000000 00 0001 00',
    status: 2,
    sense: [5, 0x24, 0],
    sks: 'ca 00 01',
  },
  {
    name: 'WRITE SAME(10) zero blocks (WSNZ)',
    cdb: '41 00 00000000 00 0000 00',
    options: { out: zeros(512) },
    status: 2,
    sense: [5, 0x24, 0],
    sks: 'c0 00 07',
  },
  {
    name: 'WRITE SAME(10) ANCHOR',
    cdb: '41 10 00000000 00 0001 00',
    options: { out: zeros(512) },
    status: 2,
    sense: [5, 0x24, 0],
    sks: 'cc 00 01',
  },
  {
    name: 'WRITE SAME(16) without a data-out block',
    cdb: '93 00 0000000000000000 00000001 00 00',
    status: 2,
    sense: [5, 0x24, 0],
  },
  {
    name: 'UNMAP parameter list length 4',
    cdb: '42 00 00000000 00 0004 00',
    options: { out: zeros(4) },
    status: 2,
    sense: [5, 0x1a, 0],
  },
  {
    name: 'UNMAP ANCHOR',
    cdb: '42 01 00000000 00 0018 00',
    options: { out: zeros(24) },
    status: 2,
    sense: [5, 0x24, 0],
    sks: 'c8 00 01',
  },
  { name: 'UNMAP parameter list length 0', cdb: '42 00 00000000 00 0000 00', status: 0 },
  {
    name: 'UNMAP parameter list longer than the buffer',
    cdb: '42 00 00000000 00 0018 00',
    options: { out: zeros(16) },
    status: 2,
    sense: [5, 0x24, 0],
    sks: 'c0 00 07',
  },
  {
    name: 'MODE SELECT(6) SP=1',
    cdb: '15 11 00 00 18 00',
    options: { out: zeros(24) },
    status: 2,
    sense: [5, 0x24, 0],
    sks: 'c8 00 01',
  },
  { name: 'MODE SELECT(10) empty list', cdb: '55 10 00 00 00 00 00 0000 00', status: 0 },
];

describe('SCSI disk conformance table', () => {
  for (const row of rows) {
    it(row.name, async () => {
      const disk = new ScsiDisk(new RecordingDisk(1 << 20, { identifier: fromHex(ID) }));
      const { result, data } = await run(disk, row.cdb, row.options);
      assert.equal(result.status, row.status, `status of ${row.cdb}`);
      if (row.status === 2) {
        assert.deepEqual(senseTriple(result), row.sense);
        assert.equal(result.sense?.length, 18);
        assert.equal(result.transferred, 0);
        if (row.sks !== undefined)
          assert.equal(hex(result.sense!.subarray(15, 18)), row.sks.replace(/\s/g, ''));
      } else {
        assert.equal(result.sense, undefined);
      }
      if (row.data !== undefined) {
        const expected = row.data.replace(/\s/g, '');
        assert.equal(result.transferred, expected.length / 2, 'transferred');
        assert.equal(hex(data.subarray(0, result.transferred)), expected);
      }
      if (row.transferred !== undefined) assert.equal(result.transferred, row.transferred);
    });
  }
});

describe('allocation-length truncation, every data-in command', () => {
  type Alloc = {
    readonly name: string;
    readonly cdb: (allocation: number) => string;
    readonly max: number;
    readonly min?: number;
  };
  const h = (n: number, bytes: number) => n.toString(16).padStart(bytes * 2, '0');
  const commands: Alloc[] = [
    { name: 'INQUIRY', cdb: (a) => `12 00 00 ${h(a, 2)} 00`, max: 0xffff },
    ...[0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2].map((page) => ({
      name: `INQUIRY VPD ${h(page, 1)}`,
      cdb: (a: number) => `12 01 ${h(page, 1)} ${h(a, 2)} 00`,
      max: 0xffff,
    })),
    { name: 'REQUEST SENSE', cdb: (a) => `03 00 00 00 ${h(a, 1)} 00`, max: 0xff },
    { name: 'MODE SENSE(6)', cdb: (a) => `1a 00 3f 00 ${h(a, 1)} 00`, max: 0xff },
    { name: 'MODE SENSE(10)', cdb: (a) => `5a 10 3f 00 00 00 00 ${h(a, 2)} 00`, max: 0xffff },
    { name: 'READ CAPACITY(16)', cdb: (a) => `9e 10 ${h(0, 8)} ${h(a, 4)} 00 00`, max: 0xffffffff },
    {
      name: 'REPORT LUNS',
      cdb: (a) => `a0 00 00 000000 ${h(a, 4)} 00 00`,
      max: 0xffffffff,
      min: 16,
    },
  ];
  for (const c of commands) {
    it(`${c.name}: transferred = min(allocation, buffer, data) and the bytes are the data's prefix`, async () => {
      const disk = new ScsiDisk(new RecordingDisk(1 << 20, { identifier: fromHex(ID) }));
      const full = await run(disk, c.cdb(Math.min(c.max, 4096)), { length: 4096 });
      assert.equal(full.result.status, 0);
      const whole = full.data.subarray(0, full.result.transferred);
      assert.ok(whole.length > 0);
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: c.min ?? 0, max: Math.min(c.max, 600) }),
          fc.integer({ min: 0, max: 600 }),
          fc.array(fc.integer({ min: 0, max: 40 }), { maxLength: 3 }),
          async (allocation, buffer, split) => {
            const r = await run(disk, c.cdb(allocation), {
              direction: 'in',
              length: buffer,
              split,
            });
            assert.equal(r.result.status, 0);
            const expected = Math.min(allocation, buffer, whole.length);
            assert.equal(r.result.transferred, expected);
            assert.deepEqual(r.data.subarray(0, expected), whole.subarray(0, expected));
            assert.ok(
              r.data.subarray(expected).every((b) => b === 0),
              'nothing past the transfer',
            );
          },
        ),
        { numRuns: 150 },
      );
    });
  }

  it('READ CAPACITY(10) has no allocation length: the buffer alone truncates', async () => {
    const disk = new ScsiDisk(new RecordingDisk(1 << 20));
    for (const length of [0, 1, 5, 8, 100]) {
      const r = await run(disk, '25 00 00000000 00 00 00 00', { direction: 'in', length });
      assert.equal(r.result.transferred, Math.min(length, 8));
    }
  });
});
