/**
 * Integration services (ICs) on the wire: the message-mode pipe header, the
 * IC message header and version negotiation they all share, and each
 * service's message body. Layouts follow Linux include/linux/hyperv.h
 * (vmbuspipe_hdr, icmsg_hdr, icmsg_negotiate, shutdown/heartbeat/timesync
 * bodies) and include/uapi/linux/hyperv.h (KVP, fcopy and VSS bodies); the
 * sizes and offsets are checked against the oracle measured from Linux.
 *
 * Every IC packet is an in-band VMBus packet whose payload is
 *   vmbuspipe_hdr (8) | icmsg_hdr (20) | body
 * The guest answers in place: the same bytes and length, with the status
 * and flags of the header rewritten (drivers/hv/hv_util.c).
 */
import { bytes, defineStruct, flex, reserved, u8, u16, u32, u64, union } from '../../wire/index.ts';

// --- Framing ----------------------------------------------------------------

/** The message-mode pipe header in front of every IC message. */
export const vmbuspipeHdr = defineStruct('vmbuspipe_hdr', {
  /** Pipe packet type: 1 = data (the only type the host writes). */
  flags: u32,
  /** Bytes that follow this header. */
  msgsize: u32,
});

/** Pipe packet type of a plain data message (vmbuspipe_hdr.flags). */
export const PIPE_PACKET_TYPE_DATA = 1;

/** A major.minor version as it appears in IC headers and negotiation tables. */
export const icVersion = defineStruct('ic_version', { major: u16, minor: u16 });

/** The IC message header; follows the pipe header at payload offset 8. */
export const icmsgHdr = defineStruct('icmsg_hdr', {
  /** Framework version the message uses. */
  icverframe: icVersion,
  /** IcMessageType. */
  icmsgtype: u16,
  /** Service (message) version the message uses. */
  icvermsg: icVersion,
  /** Body size (informational: Linux trusts the packet length instead). */
  icmsgsize: u16,
  /** HRESULT-style status of a response (IcStatus). */
  status: u32,
  ictransaction_id: u8,
  /** IcHeaderFlags. */
  icflags: u8,
  reserved: reserved(2),
});

/** Offset of icmsg_hdr in the payload, and of the body (ICMSG_HDR). */
export const PIPE_HDR_SIZE = vmbuspipeHdr.size;
export const ICMSG_HDR = PIPE_HDR_SIZE + icmsgHdr.size;

/** icmsg_hdr.icmsgtype */
export enum IcMessageType {
  /** 0x0: version negotiation (every service). */ Negotiate = 0,
  /** 0x1: heartbeat. */ Heartbeat = 1,
  /** 0x2: key-value pair exchange. */ KvpExchange = 2,
  /** 0x3: shutdown request. */ Shutdown = 3,
  /** 0x4: time sample or sync. */ Timesync = 4,
  /** 0x5: volume shadow copy (backup). */ Vss = 5,
  /** 0x7: file copy (shares the value of Hyper-V's guest interface type). */ Fcopy = 7,
}

/** icmsg_hdr.icflags */
export enum IcHeaderFlags {
  /** 0x1: the message is part of a transaction (expects or is a response). */ Transaction = 1,
  /** 0x2: the message is a request. */ Request = 2,
  /** 0x4: the message is a response. */ Response = 4,
}

/** HRESULT-style statuses in icmsg_hdr.status (include/uapi/linux/hyperv.h). */
export enum IcStatus {
  /** 0x00000000 */ S_OK = 0,
  /** 0x80004005: generic failure. */ E_FAIL = 0x80004005,
  /** 0x80070103: no more data (KVP: key not found, enumeration past the end). */
  S_CONT = 0x80070103,
  /** 0x80070003: HRESULT_FROM_WIN32(ERROR_PATH_NOT_FOUND) (fcopy: no such directory). */
  PATH_NOT_FOUND = 0x80070003,
  /** 0x80070032: HRESULT_FROM_WIN32(ERROR_NOT_SUPPORTED). */ NOT_SUPPORTED = 0x80070032,
  /** 0x800704f7 */ MACHINE_LOCKED = 0x800704f7,
  /** 0x8007048f */ DEVICE_NOT_CONNECTED = 0x8007048f,
  /** 0x80070057: invalid argument. */ INVALIDARG = 0x80070057,
  /** 0x80041002: KVP SET_IP_INFO: no adapter with that id. */ GUID_NOTFOUND = 0x80041002,
  /** 0x80070050: fcopy: the file exists and overwrite was not asked for. */
  ALREADY_EXISTS = 0x80070050,
  /** 0x80070070: fcopy: the destination is full (ENOSPC). */ DISK_FULL = 0x80070070,
}

/** A readable name for a status, e.g. "E_FAIL (0x80004005)". */
export function statusName(status: number): string {
  const name = IcStatus[status];
  const hex = `0x${(status >>> 0).toString(16).padStart(8, '0')}`;
  return name ? `${name} (${hex})` : hex;
}

// --- Negotiation ------------------------------------------------------------

/**
 * The negotiation body: counts of framework and service versions, then that
 * many ic_version entries (framework versions first).
 */
export const icmsgNegotiate = defineStruct('icmsg_negotiate', {
  icframe_vercnt: u16,
  icmsg_vercnt: u16,
  reserved: reserved(4),
  icversion_data: flex(4),
});

/** Most versions of either kind a negotiation message may list (IC_VERSION_NEGOTIATION_MAX_VER_COUNT). */
export const IC_VERSION_NEGOTIATION_MAX_VER_COUNT = 100;
/** icmsgsize of a negotiation response (two versions after the counts). */
export const ICMSG_NEGOTIATE_RESP_ICMSGSIZE = 0x10;

/** Bytes of a negotiation message with these counts (ICMSG_NEGOTIATE_PKT_SIZE). */
export function negotiatePacketSize(frameworkCount: number, serviceCount: number): number {
  return ICMSG_HDR + icmsgNegotiate.size + (frameworkCount + serviceCount) * icVersion.size;
}

/** A version as one number, major << 16 | minor (as Linux's tables hold them). */
export function version(major: number, minor: number): number {
  return (((major & 0xffff) << 16) | (minor & 0xffff)) >>> 0;
}

export function versionText(value: number): string {
  return `${value >>> 16}.${value & 0xffff}`;
}

/** Parses "3.2" (or a number given as text) into major << 16 | minor. */
export function parseVersionText(text: string): number | undefined {
  const m = /^(\d{1,5})\.(\d{1,5})$/.exec(text.trim());
  if (!m) return undefined;
  const major = Number(m[1]);
  const minor = Number(m[2]);
  if (major > 0xffff || minor > 0xffff) return undefined;
  return version(major, minor);
}

/** Framework versions (UTIL_FW_VERSION 3.0, UTIL_WS2K8_FW_VERSION 1.0). */
export const UTIL_FW_VERSION = version(3, 0);
export const UTIL_WS2K8_FW_VERSION = version(1, 0);

/**
 * The versions a Linux guest supports, newest first, as its drivers list
 * them (hv_util.c, hv_kvp.c, hv_snapshot.c, tools/hv/hv_fcopy_uio_daemon.c).
 * The guest answers with the first of these the host also offers.
 */
export const LINUX_IC_VERSIONS = {
  framework: [UTIL_FW_VERSION, UTIL_WS2K8_FW_VERSION],
  heartbeat: [version(3, 0), version(1, 0)],
  shutdown: [version(3, 2), version(3, 1), version(3, 0), version(1, 0)],
  timesync: [version(4, 0), version(3, 0), version(1, 0)],
  kvp: [version(4, 0), version(3, 0), version(1, 0)],
  /** fcopy and VSS only speak framework 3.0. */
  fcopyFramework: [UTIL_FW_VERSION],
  fcopy: [version(1, 1)],
  vssFramework: [UTIL_FW_VERSION],
  vss: [version(5, 0)],
} as const;

/**
 * What hvkit's host offers by default, oldest first as a Hyper-V host lists
 * them: every version Linux knows plus newer ones it does not (KVP 5.0, VSS
 * 6.0 and 7.0), so the guest's choice is a real choice.
 */
export const HOST_IC_VERSIONS = {
  framework: [version(1, 0), version(3, 0)],
  heartbeat: [version(1, 0), version(3, 0)],
  shutdown: [version(1, 0), version(3, 0), version(3, 1), version(3, 2)],
  timesync: [version(1, 0), version(3, 0), version(4, 0)],
  kvp: [version(1, 0), version(3, 0), version(4, 0), version(5, 0)],
  fcopy: [version(1, 1)],
  vss: [version(5, 0), version(6, 0), version(7, 0)],
} as const;

// --- Heartbeat -----------------------------------------------------------------

/**
 * The heartbeat body. The host sends a sequence number; the guest answers
 * with sequence + 1. From heartbeat 3.0 the first four reserved bytes carry
 * the guest's application state (OpenVMM hyperv_ic_protocol HeartbeatMessage).
 */
export const heartbeatMsgData = defineStruct('heartbeat_msg_data', {
  seq_num: u64,
  reserved: union({ application_state: u32, raw: bytes(32) }),
});

/** Bytes of the heartbeat body the guest needs (Linux checks recvlen >= ICMSG_HDR + 8). */
export const HEARTBEAT_MIN_BODY = 8;
/** Offset of the application state in the heartbeat body (heartbeat >= 3.0). */
export const HEARTBEAT_APPLICATION_STATE_OFFSET = 8;

/** Heartbeat application state (heartbeat >= 3.0). */
export enum HeartbeatApplicationState {
  /** 0 */ Unknown = 0,
  /** 1 */ Healthy = 1,
  /** 2 */ Critical = 2,
  /** 3 */ Stopped = 3,
}

// --- Shutdown --------------------------------------------------------------------

export const shutdownMsgData = defineStruct('shutdown_msg_data', {
  /** Windows shutdown reason (SHTDN_REASON_*). */
  reason_code: u32,
  timeout_seconds: u32,
  /** ShutdownFlags. */
  flags: u32,
  /** Text for the guest's users, UTF-16LE, NUL-terminated. */
  display_message: bytes(2048),
});

/** shutdown_msg_data.flags: 0 shut down, 2 restart, 4 hibernate, each optionally | 1 (force). */
export enum ShutdownFlags {
  /** 0x0 */ Shutdown = 0,
  /** 0x1 */ Force = 1,
  /** 0x2 */ Restart = 2,
  /** 0x4 */ Hibernate = 4,
}

/** SHTDN_REASON_FLAG_PLANNED, the reason a planned host-initiated shutdown gives. */
export const SHTDN_REASON_FLAG_PLANNED = 0x80000000;

// --- Time sync --------------------------------------------------------------------

/** Time sample up to timesync 3.0. */
export const ictimesyncData = defineStruct('ictimesync_data', {
  /** Host time, 100 ns units since 1601-01-01 UTC. */
  parenttime: u64,
  childtime: u64,
  roundtriptime: u64,
  /** TimesyncFlags. */
  flags: u8,
});

/** Time sample from timesync 4.0: the host time with the VM reference time it was taken at. */
export const ictimesyncRefData = defineStruct('ictimesync_ref_data', {
  parenttime: u64,
  /** The partition reference counter (100 ns units) when parenttime was read. */
  vmreferencetime: u64,
  flags: u8,
  leapflags: u8,
  stratum: u8,
  reserved: reserved(3),
});

/** ictimesync flags. PROBE is 0 (no bit set). */
export enum TimesyncFlags {
  /** 0x0: a probe (no adjustment asked). */ Probe = 0,
  /** 0x1: step the clock (after boot or restore). */ Sync = 1,
  /** 0x2: a periodic sample; a hint only. */ Sample = 2,
}

/** 100 ns intervals between 1601-01-01 and 1970-01-01 (WLTIMEDELTA). */
export const WLTIMEDELTA = 0x019db1ded53e8000n;

// --- KVP ----------------------------------------------------------------------------

export const HV_KVP_EXCHANGE_MAX_KEY_SIZE = 512;
export const HV_KVP_EXCHANGE_MAX_VALUE_SIZE = 2048;
export const MAX_ADAPTER_ID_SIZE = 128;
export const MAX_IP_ADDR_SIZE = 1024;
export const MAX_GATEWAY_SIZE = 512;

export const hvKvpHdr = defineStruct('hv_kvp_hdr', {
  /** KvpOperation. */
  operation: u8,
  /** KvpPool. */
  pool: u8,
  pad: reserved(2),
});

/** One key and value; sizes in bytes including the NUL (UTF-16LE on the wire). */
export const hvKvpExchgMsgValue = defineStruct('hv_kvp_exchg_msg_value', {
  /** KvpValueType. */
  value_type: u32,
  key_size: u32,
  value_size: u32,
  key: bytes(HV_KVP_EXCHANGE_MAX_KEY_SIZE),
  $value: union({
    value: bytes(HV_KVP_EXCHANGE_MAX_VALUE_SIZE),
    value_u32: u32,
    value_u64: u64,
  }),
});

export const hvKvpMsgEnumerate = defineStruct('hv_kvp_msg_enumerate', {
  index: u32,
  data: hvKvpExchgMsgValue,
});
export const hvKvpMsgGet = defineStruct('hv_kvp_msg_get', { data: hvKvpExchgMsgValue });
export const hvKvpMsgSet = defineStruct('hv_kvp_msg_set', { data: hvKvpExchgMsgValue });
export const hvKvpMsgDelete = defineStruct('hv_kvp_msg_delete', {
  key_size: u32,
  key: bytes(HV_KVP_EXCHANGE_MAX_KEY_SIZE),
});
/** The daemon registration body (between the Linux kernel and its daemon; never on the wire). */
export const hvKvpRegister = defineStruct('hv_kvp_register', {
  version: bytes(HV_KVP_EXCHANGE_MAX_KEY_SIZE),
});

/** One adapter's IP configuration: strings are UTF-16LE, lists separated by ';'. */
export const hvKvpIpaddrValue = defineStruct('hv_kvp_ipaddr_value', {
  /** GET_IP_INFO: the adapter's MAC address; SET_IP_INFO: its id. */
  adapter_id: bytes(MAX_ADAPTER_ID_SIZE * 2),
  /** AddrFamily bits. */
  addr_family: u8,
  dhcp_enabled: u8,
  ip_addr: bytes(MAX_IP_ADDR_SIZE * 2),
  sub_net: bytes(MAX_IP_ADDR_SIZE * 2),
  gate_way: bytes(MAX_GATEWAY_SIZE * 2),
  dns_addr: bytes(MAX_IP_ADDR_SIZE * 2),
});

/** The KVP message at payload offset ICMSG_HDR for GET, SET, DELETE and ENUMERATE. */
export const hvKvpMsg = defineStruct('hv_kvp_msg', {
  $head: union({ kvp_hdr: hvKvpHdr, error: u32 }),
  body: union({
    kvp_get: hvKvpMsgGet,
    kvp_set: hvKvpMsgSet,
    kvp_delete: hvKvpMsgDelete,
    kvp_enum_data: hvKvpMsgEnumerate,
    kvp_ip_val: hvKvpIpaddrValue,
    kvp_register: hvKvpRegister,
    // hv_kvp_msg_delete is not packed (4-byte aligned), so C rounds the
    // union up from 7426 to 7428 bytes.
    $alignment: reserved(7428),
  }),
});

/** The KVP message for GET_IP_INFO and SET_IP_INFO (a two-byte header, no pad). */
export const hvKvpIpMsg = defineStruct('hv_kvp_ip_msg', {
  operation: u8,
  pool: u8,
  kvp_ip_val: hvKvpIpaddrValue,
});

/** Offset of the body union in hv_kvp_msg. */
export const KVP_BODY_OFFSET = hvKvpMsg.offsetOf('body');

/** hv_kvp_hdr.operation */
export enum KvpOperation {
  /** 0x0 */ Get = 0,
  /** 0x1 */ Set = 1,
  /** 0x2 */ Delete = 2,
  /** 0x3 */ Enumerate = 3,
  /** 0x4 */ GetIpInfo = 4,
  /** 0x5 */ SetIpInfo = 5,
}
export const KVP_OP_COUNT = 6;

/** hv_kvp_hdr.pool */
export enum KvpPool {
  /** 0x0: written by the host (what the host tells the guest). */ External = 0,
  /** 0x1: written by the guest for the host to read. */ Guest = 1,
  /** 0x2: generated by the guest (OS, addresses, versions). */ Auto = 2,
  /** 0x3 */ AutoExternal = 3,
  /** 0x4 */ AutoInternal = 4,
}
export const KVP_POOL_COUNT = 5;

/** hv_kvp_exchg_msg_value.value_type (Windows registry types). */
export enum KvpValueType {
  /** 0x1: a string. */ String = 1,
  /** 0x4: a 32-bit number. */ U32 = 4,
  /** 0x8: a 64-bit number. */ U64 = 8,
}

/** hv_kvp_ipaddr_value.addr_family bits. */
export enum AddrFamily {
  /** 0x0 */ None = 0,
  /** 0x1 */ IPv4 = 1,
  /** 0x2 */ IPv6 = 2,
}

/**
 * The auto pool's keys in the order the host enumerates them by index
 * (include/uapi/linux/hyperv.h: index 0 = FullyQualifiedDomainName ...).
 */
export const KVP_AUTO_KEYS = [
  'FullyQualifiedDomainName',
  'IntegrationServicesVersion',
  'NetworkAddressIPv4',
  'NetworkAddressIPv6',
  'OSBuildNumber',
  'OSName',
  'OSMajorVersion',
  'OSMinorVersion',
  'OSVersion',
  'ProcessorArchitecture',
] as const;

// --- File copy (fcopy) ---------------------------------------------------------------
// Not in the oracle: include/uapi/linux/hyperv.h declares hv_fcopy_hdr,
// hv_start_fcopy and hv_do_fcopy (all packed); tools/hv/hv_fcopy_uio_daemon.c
// answers them.

/** Longest file or directory name, in UTF-16 units including the NUL (W_MAX_PATH). */
export const W_MAX_PATH = 260;
/** Largest data fragment of one WRITE_TO_FILE (DATA_FRAGMENT). */
export const DATA_FRAGMENT = 6 * 1024;

export const hvFcopyHdr = defineStruct('hv_fcopy_hdr', {
  /** FcopyOperation. */
  operation: u32,
  service_id0: bytes(16),
  service_id1: bytes(16),
});

export const hvStartFcopy = defineStruct('hv_start_fcopy', {
  hdr: hvFcopyHdr,
  /** UTF-16LE, NUL-terminated. */
  file_name: bytes(W_MAX_PATH * 2),
  /** The destination directory, UTF-16LE, NUL-terminated. */
  path_name: bytes(W_MAX_PATH * 2),
  /** FcopyFlags. */
  copy_flags: u32,
  file_size: u64,
});

export const hvDoFcopy = defineStruct('hv_do_fcopy', {
  hdr: hvFcopyHdr,
  pad: reserved(4),
  offset: u64,
  size: u32,
  data: bytes(DATA_FRAGMENT),
});

/** hv_fcopy_hdr.operation */
export enum FcopyOperation {
  /** 0x0 */ StartFileCopy = 0,
  /** 0x1 */ WriteToFile = 1,
  /** 0x2 */ CompleteFcopy = 2,
  /** 0x3 */ CancelFcopy = 3,
}

/** hv_start_fcopy.copy_flags */
export enum FcopyFlags {
  /** 0x1: replace an existing file. */ OverWrite = 1,
  /** 0x2: create missing directories. */ CreatePath = 2,
}

/** Offset of the data in hv_do_fcopy. */
export const FCOPY_DATA_OFFSET = hvDoFcopy.offsetOf('data');

// --- Backup (VSS) -----------------------------------------------------------------------
// Not in the oracle: include/uapi/linux/hyperv.h declares hv_vss_hdr and
// hv_vss_msg (packed); drivers/hv/hv_snapshot.c answers them.

export const hvVssHdr = defineStruct('hv_vss_hdr', {
  /** VssOperation. */
  operation: u8,
  reserved: reserved(7),
});
export const hvVssCheckFeature = defineStruct('hv_vss_check_feature', { flags: u32 });
export const hvVssCheckDmInfo = defineStruct('hv_vss_check_dm_info', { flags: u32 });

export const hvVssMsg = defineStruct('hv_vss_msg', {
  $head: union({ vss_hdr: hvVssHdr, error: u32 }),
  $body: union({ vss_cf: hvVssCheckFeature, dm_info: hvVssCheckDmInfo }),
});

/** hv_vss_hdr.operation */
export enum VssOperation {
  /** 0x0 */ Create = 0,
  /** 0x1 */ Delete = 1,
  /** 0x2: the host asks which backup features the guest supports. */ HotBackup = 2,
  /** 0x3 */ GetDmInfo = 3,
  /** 0x4 */ BuComplete = 4,
  /** 0x5: freeze the file systems (VSS >= 5.0). */ Freeze = 5,
  /** 0x6: thaw them. */ Thaw = 6,
  /** 0x7 */ AutoRecover = 7,
}

/** hv_vss_check_feature.flags the guest answers HOT_BACKUP with: no auto-recovery. */
export const VSS_HBU_NO_AUTO_RECOVERY = 0x00000005;

// --- Rings ------------------------------------------------------------------------------

/** Ring size of each direction of an IC channel, header page included (VMBUS_RING_SIZE(3 * 4096)). */
export const IC_RING_BYTES = 16 * 1024;
