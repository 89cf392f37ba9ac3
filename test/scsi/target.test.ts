import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ScsiDisk } from '../../src/scsi/target/disk.ts';
import { ScsiTarget } from '../../src/scsi/target/target.ts';
import { hex, RecordingDisk, run, senseTriple } from './scsi-harness.ts';

/**
 * The SCSI target: LUN inventory, REPORT LUNS, nonexistent LUNs, unit
 * attentions on hot add/remove, and detach with commands in flight.
 */

const BS = 512;

function lunExecutor(target: ScsiTarget, lun: number) {
  return { execute: (cmd: Parameters<ScsiTarget['execute']>[1]) => target.execute(lun, cmd) };
}

function newDisk() {
  const backend = new RecordingDisk(64 * BS);
  return { backend, disk: new ScsiDisk(backend) };
}

const TUR = '00 00 00 00 00 00';
const REPORT_LUNS = 'a0 00 00 000000 00000100 00 00';

describe('ScsiTarget', () => {
  it('keeps a sorted LUN inventory and refuses bad attaches', () => {
    const target = new ScsiTarget();
    target.attach(3, newDisk().disk);
    target.attach(0, newDisk().disk);
    target.attach(300, newDisk().disk);
    assert.deepEqual(target.luns(), [0, 3, 300]);
    assert.throws(() => target.attach(3, newDisk().disk), /LUN 3 is already attached/);
    assert.throws(
      () => target.attach(-1, newDisk().disk),
      /LUN -1 is not an integer in 0\.\.16383/,
    );
    assert.throws(() => target.attach(16384, newDisk().disk), /LUN 16384/);
    assert.throws(() => target.attach(1.5, newDisk().disk), /LUN 1\.5/);
  });

  it('REPORT LUNS lists every LUN (peripheral and flat addressing) from any LUN', async () => {
    const target = new ScsiTarget();
    target.attach(0, newDisk().disk);
    target.attach(1, newDisk().disk);
    target.attach(300, newDisk().disk);
    for (const lun of [0, 7]) {
      const r = await run(lunExecutor(target, lun), REPORT_LUNS, { length: 256 });
      assert.equal(r.result.status, 0);
      assert.equal(
        hex(r.data.subarray(0, r.result.transferred)),
        '00000018' + '00000000' + '0000000000000000' + '0001000000000000' + '412c000000000000',
      );
    }
    const short = await run(lunExecutor(target, 0), 'a0 00 00 000000 00000010 00 00', {
      length: 256,
    });
    assert.equal(short.result.transferred, 16);
    assert.equal(hex(short.data.subarray(0, 8)), '0000001800000000');
  });

  it('a LUN with no logical unit', async () => {
    const target = new ScsiTarget();
    target.attach(0, newDisk().disk);
    const absent = lunExecutor(target, 5);
    const inq = await run(absent, '12 00 00 0024 00', { length: 36 });
    assert.equal(inq.result.status, 0);
    assert.equal(hex(inq.data), `7f000602 1f000000 ${'20'.repeat(28)}`.replace(/\s/g, ''));
    const vpd0 = await run(absent, '12 01 00 00ff 00', { length: 255 });
    assert.equal(hex(vpd0.data.subarray(0, vpd0.result.transferred)), '7f00000100');
    const vpd83 = await run(absent, '12 01 83 00ff 00', { length: 255 });
    assert.deepEqual(senseTriple(vpd83.result), [5, 0x24, 0]);
    for (const cdb of [TUR, '28 00 00000000 00 0001 00', '25 00 00000000 00 00 00 00']) {
      const r = await run(absent, cdb, { length: 512 });
      assert.deepEqual(senseTriple(r.result), [5, 0x25, 0], cdb);
    }
    const rs = await run(absent, '03 00 00 00 12 00', { length: 18 });
    assert.equal(rs.result.status, 0);
    assert.equal(hex(rs.data), '700005000000000a00000000250000000000');
    for (const bogus of [-1, 1.5, Number.NaN, 2 ** 40]) {
      const r = await run(lunExecutor(target, bogus), TUR);
      assert.deepEqual(senseTriple(r.result), [5, 0x25, 0]);
    }
  });

  it('attach queues REPORTED LUNS DATA HAS CHANGED on the other LUNs, reported once', async () => {
    const target = new ScsiTarget();
    target.attach(0, newDisk().disk);
    target.attach(1, newDisk().disk);
    const lun0 = lunExecutor(target, 0);
    const lun1 = lunExecutor(target, 1);
    // INQUIRY and REPORT LUNS are not interrupted by it
    assert.equal((await run(lun0, '12 00 00 0024 00', { length: 36 })).result.status, 0);
    assert.deepEqual(senseTriple((await run(lun0, TUR)).result), [6, 0x3f, 0x0e]);
    assert.equal((await run(lun0, TUR)).result.status, 0);
    // the new LUN itself has nothing pending
    assert.equal((await run(lun1, TUR)).result.status, 0);
  });

  it('REPORT LUNS clears REPORTED LUNS DATA HAS CHANGED on the LUN it was sent to', async () => {
    const target = new ScsiTarget();
    target.attach(0, newDisk().disk);
    target.attach(1, newDisk().disk);
    target.attach(2, newDisk().disk);
    const r = await run(lunExecutor(target, 0), REPORT_LUNS, { length: 256 });
    assert.equal(r.result.status, 0);
    assert.equal((await run(lunExecutor(target, 0), TUR)).result.status, 0);
    assert.deepEqual(senseTriple((await run(lunExecutor(target, 1), TUR)).result), [6, 0x3f, 0x0e]);
  });

  it('detach fails in-flight commands of that LUN once the backend lets go, and resolves after them', async () => {
    const target = new ScsiTarget();
    const keep = newDisk();
    const gone = newDisk();
    target.attach(0, keep.disk);
    target.attach(1, gone.disk);
    await run(lunExecutor(target, 0), TUR); // consume the attach unit attention
    let open!: () => void;
    gone.backend.gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const inFlight = [
      run(lunExecutor(target, 1), '28 00 00000000 00 0001 00', { length: BS }),
      run(lunExecutor(target, 1), '2a 00 00000001 00 0001 00', { out: new Uint8Array(BS).fill(1) }),
    ];
    await new Promise((resolve) => setImmediate(resolve));
    let detached = false;
    const detaching = target.detach(1).then(() => {
      detached = true;
    });
    assert.deepEqual(target.luns(), [0]);
    // new commands to the removed LUN fail at once
    assert.deepEqual(senseTriple((await run(lunExecutor(target, 1), TUR)).result), [5, 0x25, 0]);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(detached, false, 'detach waits for the backend');
    open();
    const results = await Promise.all(inFlight);
    await detaching;
    assert.equal(detached, true);
    for (const r of results) assert.deepEqual(senseTriple(r.result), [5, 0x25, 0]);
    assert.deepEqual(senseTriple((await run(lunExecutor(target, 0), TUR)).result), [6, 0x3f, 0x0e]);
    await assert.rejects(target.detach(1), /no disk is attached at LUN 1/);
  });

  it('a LUN can be attached again after detach', async () => {
    const target = new ScsiTarget();
    target.attach(2, newDisk().disk);
    await target.detach(2);
    const again = newDisk();
    target.attach(2, again.disk);
    assert.equal(target.disk(2), again.disk);
    assert.equal((await run(lunExecutor(target, 2), TUR)).result.status, 0);
  });
});
