import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryDisk } from '../../../src/block/memory-disk.ts';
import { StorvscController } from '../../../src/devices/storvsc/guest/storvsc.ts';
import { StorvspDevice } from '../../../src/devices/storvsc/host/storvsp.ts';
import {
  LINUX_STORVSC_VERSION_ORDER,
  NtStatus,
  REQUEST_COMPLETION_FLAG,
  SRB_STATUS_AUTOSENSE_VALID,
  SRB_STATUS_QUEUE_FROZEN,
  SrbFlags,
  SrbStatus,
  STORVSC_MAX_CMD_LEN,
  STORVSC_SENSE_BUFFER_SIZE,
  StorageChannelFlags,
  StorvscDataDirection,
  VMSCSI_SIZE_DELTA,
  VmstorVersion,
  VSTOR_PACKET_SIZE,
  VstorOperation,
  vstorPacketSize,
} from '../../../src/devices/storvsc/protocol.ts';
import { PacketType } from '../../../src/vmbus/ring-protocol.ts';
import { registeredStructs } from '../../../src/wire/index.ts';
import { oracleConstant, oracleSection, oracleStructs } from '../../conformance/oracle.ts';
import { endpointPair, fakeDeviceBus, fakeGuestDevice, guestMemory } from './wire.ts';

const n = (name: string): number => Number(oracleConstant('storvsc', name));

/** Bytes from a hex string with spaces. */
function hex(text: string): Uint8Array {
  const clean = text.replace(/\s+/g, '');
  return Uint8Array.from(clean.match(/../g) ?? [], (b) => Number.parseInt(b, 16));
}

function until(condition: () => boolean, what: string, ms = 3000): Promise<void> {
  const start = Date.now();
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      if (condition()) resolve();
      else if (Date.now() - start > ms) reject(new Error(`timed out waiting for ${what}`));
      else setTimeout(tick, 1);
    };
    tick();
  });
}

describe('VSTOR wire layouts and constants', () => {
  it('declares every storvsc struct of the oracle with its size and field offsets', () => {
    const registered = registeredStructs();
    const known = oracleStructs();
    const names = Object.keys(oracleSection('storvsc').structs ?? {});
    assert.deepEqual(names.sort(), [
      'hv_fc_wwn_packet',
      'vmscsi_request',
      'vmscsi_win8_extension',
      'vmstorage_channel_properties',
      'vmstorage_protocol_version',
      'vstor_packet',
    ]);
    for (const name of names) {
      const ours = registered.get(name);
      assert.ok(ours, `${name} is declared`);
      const oracle = known.get(name)!.struct;
      assert.equal(ours.size, oracle.sizeof, `${name} size`);
      const layout = new Map(ours.layout.map((f) => [f.name, f]));
      for (const field of oracle.fields) {
        const mine = layout.get(field.name);
        assert.ok(mine, `${name}.${field.name} is declared`);
        assert.equal(mine.offset, field.offset, `${name}.${field.name} offset`);
        if (field.size !== undefined)
          assert.equal(mine.size, field.size, `${name}.${field.name} size`);
      }
    }
  });

  it('uses the operation codes, versions, statuses and flags Linux uses', () => {
    const ops: [VstorOperation, string][] = [
      [VstorOperation.CompleteIo, 'VSTOR_OPERATION_COMPLETE_IO'],
      [VstorOperation.RemoveDevice, 'VSTOR_OPERATION_REMOVE_DEVICE'],
      [VstorOperation.ExecuteSrb, 'VSTOR_OPERATION_EXECUTE_SRB'],
      [VstorOperation.ResetLun, 'VSTOR_OPERATION_RESET_LUN'],
      [VstorOperation.ResetAdapter, 'VSTOR_OPERATION_RESET_ADAPTER'],
      [VstorOperation.ResetBus, 'VSTOR_OPERATION_RESET_BUS'],
      [VstorOperation.BeginInitialization, 'VSTOR_OPERATION_BEGIN_INITIALIZATION'],
      [VstorOperation.EndInitialization, 'VSTOR_OPERATION_END_INITIALIZATION'],
      [VstorOperation.QueryProtocolVersion, 'VSTOR_OPERATION_QUERY_PROTOCOL_VERSION'],
      [VstorOperation.QueryProperties, 'VSTOR_OPERATION_QUERY_PROPERTIES'],
      [VstorOperation.EnumerateBus, 'VSTOR_OPERATION_ENUMERATE_BUS'],
      [VstorOperation.FchbaData, 'VSTOR_OPERATION_FCHBA_DATA'],
      [VstorOperation.CreateSubChannels, 'VSTOR_OPERATION_CREATE_SUB_CHANNELS'],
    ];
    for (const [ours, name] of ops) assert.equal(ours, n(name), name);
    assert.equal(VmstorVersion.Win6, n('VMSTOR_PROTO_VERSION_WIN6'));
    assert.equal(VmstorVersion.Win7, n('VMSTOR_PROTO_VERSION_WIN7'));
    assert.equal(VmstorVersion.Win8, n('VMSTOR_PROTO_VERSION_WIN8'));
    assert.equal(VmstorVersion.Win8_1, n('VMSTOR_PROTO_VERSION_WIN8_1'));
    assert.equal(VmstorVersion.Win10, n('VMSTOR_PROTO_VERSION_WIN10'));
    assert.deepEqual(
      LINUX_STORVSC_VERSION_ORDER,
      oracleSection('storvsc').linux_protocol_version_order,
    );
    const statuses: [number, string][] = [
      [SrbStatus.Success, 'SRB_STATUS_SUCCESS'],
      [SrbStatus.Aborted, 'SRB_STATUS_ABORTED'],
      [SrbStatus.Error, 'SRB_STATUS_ERROR'],
      [SrbStatus.InvalidRequest, 'SRB_STATUS_INVALID_REQUEST'],
      [SrbStatus.Timeout, 'SRB_STATUS_TIMEOUT'],
      [SrbStatus.SelectionTimeout, 'SRB_STATUS_SELECTION_TIMEOUT'],
      [SrbStatus.BusReset, 'SRB_STATUS_BUS_RESET'],
      [SrbStatus.DataOverrun, 'SRB_STATUS_DATA_OVERRUN'],
      [SrbStatus.InvalidLun, 'SRB_STATUS_INVALID_LUN'],
      [SrbStatus.InternalError, 'SRB_STATUS_INTERNAL_ERROR'],
      [SRB_STATUS_AUTOSENSE_VALID, 'SRB_STATUS_AUTOSENSE_VALID'],
      [SRB_STATUS_QUEUE_FROZEN, 'SRB_STATUS_QUEUE_FROZEN'],
      [SrbFlags.QUEUE_ACTION_ENABLE, 'SRB_FLAGS_QUEUE_ACTION_ENABLE'],
      [SrbFlags.DISABLE_SYNCH_TRANSFER, 'SRB_FLAGS_DISABLE_SYNCH_TRANSFER'],
      [SrbFlags.DISABLE_AUTOSENSE, 'SRB_FLAGS_DISABLE_AUTOSENSE'],
      [SrbFlags.DATA_IN, 'SRB_FLAGS_DATA_IN'],
      [SrbFlags.DATA_OUT, 'SRB_FLAGS_DATA_OUT'],
      [SrbFlags.NO_QUEUE_FREEZE, 'SRB_FLAGS_NO_QUEUE_FREEZE'],
      [StorvscDataDirection.Write, 'WRITE_TYPE'],
      [StorvscDataDirection.Read, 'READ_TYPE'],
      [StorvscDataDirection.None, 'UNKNOWN_TYPE'],
      [REQUEST_COMPLETION_FLAG, 'REQUEST_COMPLETION_FLAG'],
      [StorageChannelFlags.SupportsMultiChannel, 'STORAGE_CHANNEL_SUPPORTS_MULTI_CHANNEL'],
      [STORVSC_MAX_CMD_LEN, 'STORVSC_MAX_CMD_LEN'],
      [STORVSC_SENSE_BUFFER_SIZE, 'STORVSC_SENSE_BUFFER_SIZE'],
    ];
    for (const [ours, name] of statuses) assert.equal(ours, n(name), name);
    assert.equal(VSTOR_PACKET_SIZE, 64);
    assert.equal(VMSCSI_SIZE_DELTA, 16);
    assert.equal(vstorPacketSize(VmstorVersion.Win8), 64);
    assert.equal(vstorPacketSize(VmstorVersion.Win7), 48);
  });
});

describe('packet bytes on the wire', () => {
  it('storvsc sends the handshake and a READ(16) exactly as Linux lays them out', async () => {
    const pair = endpointPair();
    const mem = guestMemory();
    const device = fakeGuestDevice(pair, mem);
    const seen: {
      type: number;
      transLo: number;
      transHi: number;
      payload: Uint8Array;
      pfns: number[];
    }[] = [];
    /** Range-list problems seen in the handler (asserted after: a throw there would be swallowed). */
    const rangeProblems: string[] = [];
    pair.host.onPacket = (p) => {
      const pfns: number[] = [];
      if (p.type === PacketType.DataUsingGpaDirect) {
        const problem = pair.host.gpaRanges.parse(p);
        if (problem) rangeProblems.push(problem);
        else if (pair.host.gpaRanges.count !== 1) {
          rangeProblems.push(`${pair.host.gpaRanges.count} ranges, not 1`);
        }
        for (let i = 0; i < pair.host.gpaRanges.pfnCount[0]!; i++)
          pfns.push(pair.host.gpaRanges.pfns[i]!);
      }
      seen.push({
        type: p.type,
        transLo: p.transLo,
        transHi: p.transHi,
        payload: p.payload().slice(),
        pfns,
      });
      const op = new DataView(p.payload().buffer, p.payload().byteOffset).getUint32(0, true);
      // The hand-written host: a completion for each control packet, built here byte by byte.
      const reply = new Uint8Array(64);
      reply[0] = 1; // COMPLETE_IO
      if (op === VstorOperation.QueryProtocolVersion) reply.set(p.payload().subarray(12, 14), 12);
      if (op === VstorOperation.QueryProperties) {
        reply.set(hex('00000000 0000 0000 00000000 00000400 0000000000000000'), 12);
      }
      if (op === VstorOperation.ExecuteSrb) {
        // The request block comes back with SUCCESS; REPORT LUNS gets an empty list,
        // READ(16) 4096 bytes of 0x5a.
        reply.set(p.payload().subarray(12, 64), 12);
        reply[14] = 0x01;
        reply.fill(0, 28, 48);
        const data = mem.memory.bytes(pfns[0]! * 4096, p.payload()[28] === 0xa0 ? 8 : 4096);
        if (p.payload()[28] === 0xa0) {
          data.fill(0);
          new DataView(reply.buffer).setUint32(24, 8, true);
        } else {
          data.fill(0x5a);
        }
      }
      queueMicrotask(() => pair.host.sendCompletion(p.transLo, p.transHi, reply));
      return true;
    };
    const controller = new StorvscController(device, { bufferBytes: 1 << 20, timeoutMs: 2000 });
    await controller.start();
    assert.equal(controller.state, 'ready');
    assert.equal(controller.disks.size, 0, 'the hand-written host reports no LUNs');
    assert.deepEqual(rangeProblems, []);
    const handshake = seen.slice(0, 4);
    const init = { lo: 0xfffffffd, hi: 0xffffffff };
    for (const s of handshake) {
      assert.equal(s.type, PacketType.DataInband);
      assert.deepEqual({ lo: s.transLo, hi: s.transHi }, init, 'VMBUS_RQST_INIT');
      assert.equal(s.payload.length, 64);
    }
    assert.deepEqual(handshake[0]!.payload, hex(`07000000 01000000 00000000 ${'00'.repeat(52)}`));
    assert.deepEqual(
      handshake[1]!.payload,
      hex(`09000000 01000000 00000000 0206 0000 ${'00'.repeat(48)}`),
    );
    assert.deepEqual(handshake[2]!.payload, hex(`0a000000 01000000 00000000 ${'00'.repeat(52)}`));
    assert.deepEqual(handshake[3]!.payload, hex(`08000000 01000000 00000000 ${'00'.repeat(52)}`));

    // Now a READ(16) of 8 blocks at LBA 8 on LUN 0, through the guest's own disk path.
    const buffer = await controller.buffers!.acquire(4096);
    const before = seen.length;
    const result = await controller
      .submit({
        lun: 0,
        cdb: hex('88 00 0000000000000008 00000008 00 00'),
        direction: 'in',
        buffer,
      })
      .catch((e: Error) => e);
    const srb = seen.slice(before).find((s) => s.type === PacketType.DataUsingGpaDirect);
    assert.ok(srb, 'a GPA-direct EXECUTE_SRB was sent');
    assert.deepEqual(rangeProblems, [], 'its page list parses to one range');
    assert.deepEqual(
      srb.payload,
      hex(
        '03000000 01000000 00000000' + // EXECUTE_SRB, REQUEST_COMPLETION_FLAG, status 0
          '3400 00 00 00 00 00 00' + // length 0x34, statuses, port/path/target/lun
          '10 14 01 00 00100000' + // cdb_length 16, sense room 20, READ_TYPE, 4096 bytes
          '88000000000000000008000000080000 00000000' + // CDB in the 20-byte union
          '0000 ff 20 4a010000 3c000000 00000000', // tag untagged, simple queue, flags, 60 s
      ),
    );
    assert.equal(srb.pfns.length, 1);
    assert.equal(srb.pfns[0], buffer.pfns[0]);
    assert.ok(!(result instanceof Error), `the read completed: ${result}`);
    assert.equal(result.srbStatus, SrbStatus.Success);
    assert.equal(result.transferred, 4096);
    const back = new Uint8Array(4096);
    buffer.copyOut(back);
    assert.ok(
      back.every((b) => b === 0x5a),
      'the data the host put in the page',
    );
    buffer.release();
    await controller.stop();
  });

  it('storvsp answers a request block with the statuses, sense and count in place', async () => {
    const pair = endpointPair();
    const mem = guestMemory();
    const vsp = new StorvspDevice({ maxSubchannels: 1 });
    vsp.attach(fakeDeviceBus(mem.memory));
    vsp.attachDisk(0, new MemoryDisk(1024 * 1024), 'memory');
    vsp.open(pair.hostQueue, {
      relid: 1,
      subchannelIndex: 0,
      targetVp: 0,
      userData: new Uint8Array(120),
    });
    const replies: { transLo: number; payload: Uint8Array }[] = [];
    const types: number[] = [];
    pair.guest.onPacket = (p) => {
      types.push(p.type);
      replies.push({ transLo: p.transLo, payload: p.payload().slice() });
      return true;
    };
    const send = (id: number, bytes: Uint8Array) => pair.guest.sendInband(bytes, id, 0, true);
    send(1, hex(`07000000 01000000 00000000 ${'00'.repeat(52)}`));
    send(2, hex(`09000000 01000000 00000000 0106 0000 ${'00'.repeat(48)}`)); // 6.1: unknown
    send(3, hex(`09000000 01000000 00000000 0206 0000 ${'00'.repeat(48)}`));
    send(4, hex(`0a000000 01000000 00000000 ${'00'.repeat(52)}`));
    send(5, hex(`08000000 01000000 00000000 ${'00'.repeat(52)}`));
    // READ(16) past the end of the 2048-block disk, with no data buffer needed for the error.
    send(
      6,
      hex(
        '03000000 01000000 00000000 3400 00 00 00 00 00 00 10 14 02 00 00000000' +
          '88000000000000001000000000010000 00000000 0000 ff 20 08010000 3c000000 00000000',
      ),
    );
    await until(() => replies.length === 6, 'six completions');
    assert.deepEqual(
      types,
      new Array(6).fill(PacketType.Completion),
      'every answer is a completion',
    );
    const status = (r: { payload: Uint8Array }) =>
      new DataView(r.payload.buffer).getUint32(8, true);
    assert.deepEqual(
      replies.map((r) => [r.transLo, r.payload[0], status(r)]),
      [
        [1, 1, NtStatus.Success],
        [2, 1, NtStatus.RevisionMismatch],
        [3, 1, NtStatus.Success],
        [4, 1, NtStatus.Success],
        [5, 1, NtStatus.Success],
        [6, 1, NtStatus.IoDeviceError],
      ],
    );
    // QUERY_PROPERTIES: one sub-channel, multi-channel, 1 MiB transfers.
    assert.deepEqual(
      replies[3]!.payload.subarray(12, 36),
      hex('00000000 0100 0000 01000000 00001000 0000000000000000'),
    );
    // The request block comes back: ERROR | AUTOSENSE_VALID, CHECK CONDITION, 18 sense bytes:
    // ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE (0x21/0x00).
    assert.deepEqual(
      replies[5]!.payload,
      hex(
        '01000000 00000000 850100c0' +
          '3400 84 02 00 00 00 00 10 12 02 00 00000000' +
          '700005000000000a00000000210000000000 0000' +
          '0000 ff 20 08010000 3c000000 00000000',
      ),
    );
    assert.equal(vsp.phase, 'ready');
    assert.equal(vsp.version, VmstorVersion.Win10);
  });
});
