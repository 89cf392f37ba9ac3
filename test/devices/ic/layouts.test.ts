import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as ic from '../../../src/devices/ic/protocol.ts';
import { registeredStructs, type StructType } from '../../../src/wire/index.ts';
import { oracleConstant, oracleSection, oracleStructs } from '../../conformance/oracle.ts';

const n = (section: string, name: string): number => Number(oracleConstant(section, name));

describe('IC wire declarations against Linux', () => {
  it('declares every icmsg and kvp struct the oracle measured, with its size and offsets', () => {
    const declared = registeredStructs();
    const problems: string[] = [];
    for (const section of ['icmsg', 'kvp']) {
      for (const [name, struct] of Object.entries(oracleSection(section).structs ?? {})) {
        const ours = declared.get(name);
        if (!ours) {
          problems.push(`${name}: not declared`);
          continue;
        }
        if (ours.size !== struct.sizeof)
          problems.push(`${name}: size ${ours.size}, Linux ${struct.sizeof}`);
        const fields = new Map(ours.layout.map((f) => [f.name, f]));
        for (const f of struct.fields) {
          const mine = fields.get(f.name);
          if (!mine) problems.push(`${name}.${f.name}: missing`);
          else if (mine.offset !== f.offset)
            problems.push(`${name}.${f.name}: offset ${mine.offset}, Linux ${f.offset}`);
        }
      }
    }
    assert.deepEqual(problems, []);
    // The conformance walk also sees them (it checks every registered struct the oracle knows).
    const known = oracleStructs();
    assert.ok(known.has('hv_kvp_msg') && known.has('icmsg_hdr'));
  });

  it('lays out the fcopy and VSS messages as include/uapi/linux/hyperv.h packs them', () => {
    // Offsets computed by hand from the packed C declarations.
    const table: [StructType<unknown, unknown>, number, Record<string, number>][] = [
      [ic.hvFcopyHdr, 36, { operation: 0, service_id0: 4, service_id1: 20 }],
      [
        ic.hvStartFcopy,
        1088,
        { hdr: 0, file_name: 36, path_name: 556, copy_flags: 1076, file_size: 1080 },
      ],
      [ic.hvDoFcopy, 6196, { hdr: 0, pad: 36, offset: 40, size: 48, data: 52 }],
      [ic.hvVssHdr, 8, { operation: 0, reserved: 1 }],
      [ic.hvVssMsg, 12, { vss_hdr: 0, error: 0, vss_cf: 8, dm_info: 8, 'vss_cf.flags': 8 }],
    ];
    for (const [struct, size, offsets] of table) {
      assert.equal(struct.size, size, struct.name);
      for (const [field, offset] of Object.entries(offsets)) {
        assert.equal(struct.offsetOf(field), offset, `${struct.name}.${field}`);
      }
    }
  });

  it('has the constants Linux uses', () => {
    assert.equal(ic.ICMSG_HDR, n('icmsg', 'ICMSG_HDR'));
    assert.equal(ic.negotiatePacketSize(1, 1), n('icmsg', 'ICMSG_NEGOTIATE_PKT_SIZE(1,1)'));
    assert.equal(
      ic.IC_VERSION_NEGOTIATION_MAX_VER_COUNT,
      n('icmsg', 'IC_VERSION_NEGOTIATION_MAX_VER_COUNT'),
    );
    assert.equal(ic.ICMSG_NEGOTIATE_RESP_ICMSGSIZE, n('icmsg', 'ICMSG_NEGOTIATE_RESP_ICMSGSIZE'));
    const types: [ic.IcMessageType, string][] = [
      [ic.IcMessageType.Negotiate, 'ICMSGTYPE_NEGOTIATE'],
      [ic.IcMessageType.Heartbeat, 'ICMSGTYPE_HEARTBEAT'],
      [ic.IcMessageType.KvpExchange, 'ICMSGTYPE_KVPEXCHANGE'],
      [ic.IcMessageType.Shutdown, 'ICMSGTYPE_SHUTDOWN'],
      [ic.IcMessageType.Timesync, 'ICMSGTYPE_TIMESYNC'],
      [ic.IcMessageType.Vss, 'ICMSGTYPE_VSS'],
      [ic.IcMessageType.Fcopy, 'ICMSGTYPE_FCOPY'],
    ];
    for (const [ours, linux] of types) assert.equal(ours, n('icmsg', linux), linux);
    assert.equal(ic.IcHeaderFlags.Transaction, n('icmsg', 'ICMSGHDRFLAG_TRANSACTION'));
    assert.equal(ic.IcHeaderFlags.Request, n('icmsg', 'ICMSGHDRFLAG_REQUEST'));
    assert.equal(ic.IcHeaderFlags.Response, n('icmsg', 'ICMSGHDRFLAG_RESPONSE'));
    const statuses: [number, string][] = [
      [ic.IcStatus.S_OK, 'HV_S_OK'],
      [ic.IcStatus.E_FAIL, 'HV_E_FAIL'],
      [ic.IcStatus.S_CONT, 'HV_S_CONT'],
      [ic.IcStatus.NOT_SUPPORTED, 'HV_ERROR_NOT_SUPPORTED'],
      [ic.IcStatus.MACHINE_LOCKED, 'HV_ERROR_MACHINE_LOCKED'],
      [ic.IcStatus.DEVICE_NOT_CONNECTED, 'HV_ERROR_DEVICE_NOT_CONNECTED'],
      [ic.IcStatus.INVALIDARG, 'HV_INVALIDARG'],
      [ic.IcStatus.GUID_NOTFOUND, 'HV_GUID_NOTFOUND'],
      [ic.IcStatus.ALREADY_EXISTS, 'HV_ERROR_ALREADY_EXISTS'],
      [ic.IcStatus.DISK_FULL, 'HV_ERROR_DISK_FULL'],
    ];
    for (const [ours, linux] of statuses) assert.equal(ours, n('icmsg', linux), linux);
    assert.equal(ic.ShutdownFlags.Force, n('icmsg', 'SHUTDOWN_FLAG_FORCE'));
    assert.equal(ic.ShutdownFlags.Restart, n('icmsg', 'SHUTDOWN_FLAG_RESTART'));
    assert.equal(ic.ShutdownFlags.Hibernate, n('icmsg', 'SHUTDOWN_FLAG_HIBERNATE'));
    assert.equal(ic.TimesyncFlags.Probe, n('icmsg', 'ICTIMESYNCFLAG_PROBE'));
    assert.equal(ic.TimesyncFlags.Sync, n('icmsg', 'ICTIMESYNCFLAG_SYNC'));
    assert.equal(ic.TimesyncFlags.Sample, n('icmsg', 'ICTIMESYNCFLAG_SAMPLE'));
    assert.equal(ic.WLTIMEDELTA, oracleConstant('icmsg', 'WLTIMEDELTA'));
    assert.equal(ic.UTIL_FW_VERSION, n('icmsg', 'UTIL_FW_VERSION'));
    assert.equal(ic.UTIL_WS2K8_FW_VERSION, n('icmsg', 'UTIL_WS2K8_FW_VERSION'));
    assert.equal(ic.IC_RING_BYTES, 16384);

    const ops: [ic.KvpOperation, string][] = [
      [ic.KvpOperation.Get, 'KVP_OP_GET'],
      [ic.KvpOperation.Set, 'KVP_OP_SET'],
      [ic.KvpOperation.Delete, 'KVP_OP_DELETE'],
      [ic.KvpOperation.Enumerate, 'KVP_OP_ENUMERATE'],
      [ic.KvpOperation.GetIpInfo, 'KVP_OP_GET_IP_INFO'],
      [ic.KvpOperation.SetIpInfo, 'KVP_OP_SET_IP_INFO'],
    ];
    for (const [ours, linux] of ops) assert.equal(ours, n('kvp', linux), linux);
    assert.equal(ic.KVP_OP_COUNT, n('kvp', 'KVP_OP_COUNT'));
    assert.equal(ic.KVP_POOL_COUNT, n('kvp', 'KVP_POOL_COUNT'));
    assert.equal(ic.KvpPool.Auto, n('kvp', 'KVP_POOL_AUTO'));
    assert.equal(ic.KvpPool.AutoInternal, n('kvp', 'KVP_POOL_AUTO_INTERNAL'));
    assert.equal(ic.KvpValueType.String, n('kvp', 'REG_SZ'));
    assert.equal(ic.KvpValueType.U32, n('kvp', 'REG_U32'));
    assert.equal(ic.KvpValueType.U64, n('kvp', 'REG_U64'));
    assert.equal(ic.HV_KVP_EXCHANGE_MAX_KEY_SIZE, n('kvp', 'HV_KVP_EXCHANGE_MAX_KEY_SIZE'));
    assert.equal(ic.HV_KVP_EXCHANGE_MAX_VALUE_SIZE, n('kvp', 'HV_KVP_EXCHANGE_MAX_VALUE_SIZE'));
    assert.equal(ic.MAX_ADAPTER_ID_SIZE, n('kvp', 'MAX_ADAPTER_ID_SIZE'));
    assert.equal(ic.MAX_IP_ADDR_SIZE, n('kvp', 'MAX_IP_ADDR_SIZE'));
    assert.equal(ic.MAX_GATEWAY_SIZE, n('kvp', 'MAX_GATEWAY_SIZE'));
    assert.equal(ic.AddrFamily.IPv6, n('kvp', 'ADDR_FAMILY_IPV6'));
    assert.equal(ic.ICMSG_HDR, n('kvp', 'KVP_MSG_WIRE_OFFSET'));
  });

  it("lists the versions Linux's drivers list, newest first", () => {
    const tables = oracleSection('icmsg').linux_version_tables as Record<
      string,
      { value: number }[]
    >;
    const values = (name: string): number[] => tables[name]!.map((v) => v.value);
    assert.deepEqual([...ic.LINUX_IC_VERSIONS.framework], values('fw_versions'));
    assert.deepEqual([...ic.LINUX_IC_VERSIONS.shutdown], values('shutdown_versions'));
    assert.deepEqual([...ic.LINUX_IC_VERSIONS.timesync], values('timesync_versions'));
    assert.deepEqual([...ic.LINUX_IC_VERSIONS.heartbeat], values('heartbeat_versions'));
    assert.deepEqual([...ic.LINUX_IC_VERSIONS.kvp], values('kvp_versions'));
  });
});
