/**
 * RNDIS as the synthetic NIC speaks it over NVSP (Linux include/linux/rndis.h,
 * drivers/net/hyperv/hyperv_net.h and rndis_filter.c): messages, the OIDs
 * netvsc queries and sets, the NDIS objects they carry, and per-packet info.
 * Every RNDIS message starts with its type and total length; offsets inside
 * query, set, indicate and packet bodies count from the body (message + 8).
 * Checked against the oracle's "rndis" section by the conformance tests.
 */
import {
  bits,
  bytes,
  defineStruct,
  flex,
  reserved,
  u8,
  u16,
  u32,
  union,
} from '../../wire/index.ts';

/** ndis_msg_type; completions are 0x80000000 | the request's type. */
export enum RndisMessageType {
  /** 0x1 */ Packet = 0x1,
  /** 0x2 */ Initialize = 0x2,
  /** 0x3 */ Halt = 0x3,
  /** 0x4 */ Query = 0x4,
  /** 0x5 */ Set = 0x5,
  /** 0x6 */ Reset = 0x6,
  /** 0x7 */ IndicateStatus = 0x7,
  /** 0x8 */ Keepalive = 0x8,
  /** 0x80000002 */ InitializeComplete = 0x8000_0002,
  /** 0x80000004 */ QueryComplete = 0x8000_0004,
  /** 0x80000005 */ SetComplete = 0x8000_0005,
  /** 0x80000006 */ ResetComplete = 0x8000_0006,
  /** 0x80000008 */ KeepaliveComplete = 0x8000_0008,
}

export const RNDIS_MSG_COMPLETION = 0x8000_0000;
export const RNDIS_HEADER_SIZE = 8;
export const RNDIS_MAJOR_VERSION = 1;
export const RNDIS_MINOR_VERSION = 0;
/** RNDIS_DF_CONNECTIONLESS */
export const RNDIS_DF_CONNECTIONLESS = 1;
export const RNDIS_MEDIUM_802_3 = 0;

/** RNDIS_STATUS_* the NIC uses. */
export enum RndisStatus {
  /** 0x00000000 */ Success = 0,
  /** 0x40010003 */ Online = 0x4001_0003,
  /** 0x40010004 */ ResetStart = 0x4001_0004,
  /** 0x40010005 */ ResetEnd = 0x4001_0005,
  /** 0x4001000b */ MediaConnect = 0x4001_000b,
  /** 0x4001000c */ MediaDisconnect = 0x4001_000c,
  /** 0x40010013 */ LinkSpeedChange = 0x4001_0013,
  /** 0x40010018 */ NetworkChange = 0x4001_0018,
  /** 0xc0000001 */ Failure = 0xc000_0001,
  /** 0xc00000bb */ NotSupported = 0xc000_00bb,
  /** 0xc0010015 */ InvalidData = 0xc001_0015,
  /** 0xc0010016 */ BufferTooShort = 0xc001_0016,
  /** 0xc0010017 */ InvalidOid = 0xc001_0017,
  /** 0xc0010014 */ InvalidLength = 0xc001_0014,
}

/** The OIDs netvsc uses (rndis.h RNDIS_OID_*, hyperv_net.h OID_*). */
export enum Oid {
  /** 0x00010101 */ GenSupportedList = 0x0001_0101,
  /** 0x00010106 */ GenMaximumFrameSize = 0x0001_0106,
  /** 0x00010107: in 100 bps units. */ GenLinkSpeed = 0x0001_0107,
  /** 0x0001010e */ GenCurrentPacketFilter = 0x0001_010e,
  /** 0x00010111 */ GenMaximumTotalSize = 0x0001_0111,
  /** 0x00010114: 0 connected, 1 disconnected. */ GenMediaConnectStatus = 0x0001_0114,
  /** 0x0001021b */ GenRndisConfigParameter = 0x0001_021b,
  /** 0x00010203 */ GenReceiveScaleCapabilities = 0x0001_0203,
  /** 0x00010204 */ GenReceiveScaleParameters = 0x0001_0204,
  /** 0x00020101 */ GenXmitOk = 0x0002_0101,
  /** 0x00020102 */ GenRcvOk = 0x0002_0102,
  /** 0x00020216: UTF-16 name of the adapter. */ GenFriendlyName = 0x0002_0216,
  /** 0x01010101 */ Ieee8023PermanentAddress = 0x0101_0101,
  /** 0x01010102 */ Ieee8023CurrentAddress = 0x0101_0102,
  /** 0x01010103 */ Ieee8023MulticastList = 0x0101_0103,
  /** 0x01010104 */ Ieee8023MaximumListSize = 0x0101_0104,
  /** 0xfc01020b */ TcpOffloadCurrentConfig = 0xfc01_020b,
  /** 0xfc01020c */ TcpOffloadParameters = 0xfc01_020c,
  /** 0xfc01020d */ TcpOffloadHardwareCapabilities = 0xfc01_020d,
  /** 0x0101010a */ OffloadEncapsulation = 0x0101_010a,
}

/** NDIS_PACKET_TYPE_* (the filter netvsc sets; hyperv_net.h's values). */
export const NdisPacketType = {
  directed: 0x1,
  multicast: 0x2,
  allMulticast: 0x4,
  broadcast: 0x8,
  promiscuous: 0x20,
} as const;

/** Per-packet info types (ndis_per_pkt_info_type). */
export enum PpiType {
  /** 0 */ TcpIpChecksum = 0,
  /** 1 */ IpSec = 1,
  /** 2 */ TcpLargeSend = 2,
  /** 3 */ ClassificationHandle = 3,
  /** 4 */ Reserved = 4,
  /** 5 */ SgList = 5,
  /** 6 */ Ieee8021q = 6,
  /** 7 */ Original = 7,
  /** 8: NBL_HASH_VALUE (PACKET_CANCEL_ID shares the number). */ HashValue = 8,
  /** 9: NBL_HASH_INFO (ORIGINAL_NET_BUFLIST shares the number). */ HashInfo = 9,
  /** 10 */ CachedNetBufList = 10,
  /** 11 */ ShortPacketPadInfo = 11,
}

/** RNDIS_PKTINFO_ID: an internal PPI type (internal bit set) marking RSC fragments. */
export const RNDIS_PKTINFO_ID = 1;
export const RndisPktinfoFlag = { suballoc: 1, firstFragment: 2, lastFragment: 4 } as const;

/** NDIS object header types and revisions. */
export const NdisObjectType = {
  default: 0x80,
  rssCapabilities: 0x88,
  rssParameters: 0x89,
  offload: 0xa7,
} as const;

export const NDIS_OFFLOAD_PARAMETERS_REVISION_3 = 3;
export const NDIS_OFFLOAD_SIZE = 156;
export const NDIS_OFFLOAD_SIZE_6_0 = 112;
export const NDIS_OFFLOAD_SIZE_6_1 = 144;
/** The offload parameters Linux sends up to NVSP 4 (only the first 22 bytes). */
export const VERSION_4_OFFLOAD_SIZE = 22;

/** ndis_offload_params values. */
export const OffloadParam = {
  noChange: 0,
  txRxDisabled: 1,
  txEnabledRxDisabled: 2,
  rxEnabledTxDisabled: 3,
  txRxEnabled: 4,
  lsov2Disabled: 1,
  lsov2Enabled: 2,
  rscDisabled: 1,
  rscEnabled: 2,
} as const;

/** ndis_offload capability bits. */
export const NDIS_OFFLOAD_ENCAP_8023 = 2;
export const NdisTxCsumCap = {
  ip4Options: 0x1,
  tcp4Options: 0x4,
  tcp4: 0x10,
  udp4: 0x40,
  ip4: 0x100,
} as const;
export const NdisTxCsum6Cap = { ext: 0x1, tcp6Options: 0x4, tcp6: 0x10, udp6: 0x40 } as const;
export const NdisLsov2Cap = { ip6Ext: 0x1, tcp6Options: 0x4 } as const;

/** RSS: Toeplitz over IPv4/TCP4/IPv6/TCP6, a 40-byte key (NETVSC_HASH_KEYLEN). */
export const NdisHash = {
  toeplitz: 0x1,
  ipv4: 0x100,
  tcpIpv4: 0x200,
  ipv6: 0x400,
  tcpIpv6: 0x1000,
} as const;
export const NDIS_RSS_PARAM_FLAG_DISABLE_RSS = 0x10;
export const NETVSC_HASH_KEYLEN = 40;
/** Default indirection table size (ITAB_NUM) and the most a guest takes. */
export const ITAB_NUM = 128;
export const ITAB_NUM_MAX = 256;

// --- messages ---------------------------------------------------------------------------

export const rndisInitializeRequest = defineStruct('rndis_initialize_request', {
  req_id: u32,
  major_ver: u32,
  minor_ver: u32,
  max_xfer_size: u32,
});

export const rndisInitializeComplete = defineStruct('rndis_initialize_complete', {
  req_id: u32,
  status: u32,
  major_ver: u32,
  minor_ver: u32,
  dev_flags: u32,
  medium: u32,
  max_pkt_per_msg: u32,
  max_xfer_size: u32,
  /** log2 of the alignment of packets in a multi-packet message. */
  pkt_alignment_factor: u32,
  af_list_offset: u32,
  af_list_size: u32,
});

export const rndisHaltRequest = defineStruct('rndis_halt_request', { req_id: u32 });

export const rndisQueryRequest = defineStruct('rndis_query_request', {
  req_id: u32,
  oid: u32,
  info_buflen: u32,
  info_buf_offset: u32,
  dev_vc_handle: u32,
});

export const rndisQueryComplete = defineStruct('rndis_query_complete', {
  req_id: u32,
  status: u32,
  info_buflen: u32,
  info_buf_offset: u32,
});

export const rndisSetRequest = defineStruct('rndis_set_request', {
  req_id: u32,
  oid: u32,
  info_buflen: u32,
  info_buf_offset: u32,
  dev_vc_handle: u32,
  info_buf: flex(1),
});

export const rndisSetComplete = defineStruct('rndis_set_complete', { req_id: u32, status: u32 });

export const rndisResetRequest = defineStruct('rndis_reset_request', { reserved: u32 });

export const rndisResetComplete = defineStruct('rndis_reset_complete', {
  status: u32,
  addressing_reset: u32,
});

export const rndisIndicateStatus = defineStruct('rndis_indicate_status', {
  status: u32,
  status_buflen: u32,
  status_buf_offset: u32,
});

export const rndisKeepaliveRequest = defineStruct('rndis_keepalive_request', { req_id: u32 });

export const rndisKeepaliveComplete = defineStruct('rndis_keepalive_complete', {
  req_id: u32,
  status: u32,
});

export const rndisPacket = defineStruct('rndis_packet', {
  data_offset: u32,
  data_len: u32,
  oob_data_offset: u32,
  oob_data_len: u32,
  num_oob_data_elements: u32,
  per_pkt_info_offset: u32,
  per_pkt_info_len: u32,
  vc_handle: u32,
  reserved: u32,
});

export const rndisPerPacketInfo = defineStruct('rndis_per_packet_info', {
  size: u32,
  $type: bits(4, { type: 31, internal: 1 }),
  /** Where the value starts, from this entry's start (12). */
  ppi_offset: u32,
});

export const rndisPktinfoId = defineStruct('rndis_pktinfo_id', {
  ver: u8,
  /** RndisPktinfoFlag */
  flag: u8,
  pkt_id: u16,
});

export const rndisOobd = defineStruct('rndis_oobd', {
  size: u32,
  type: u32,
  class_info_offset: u32,
});

export const rndisConfigParameterInfo = defineStruct('rndis_config_parameter_info', {
  parameter_name_offset: u32,
  parameter_name_length: u32,
  parameter_type: u32,
  parameter_value_offset: u32,
  parameter_value_length: u32,
});

/** The union of message bodies after the 8-byte header (44 bytes: rndis_initialize_complete). */
export const rndisMessageContainer = union({
  pkt: rndisPacket,
  init_req: rndisInitializeRequest,
  halt_req: rndisHaltRequest,
  query_req: rndisQueryRequest,
  set_req: rndisSetRequest,
  reset_req: rndisResetRequest,
  keep_alive_req: rndisKeepaliveRequest,
  indicate_status: rndisIndicateStatus,
  init_complete: rndisInitializeComplete,
  query_complete: rndisQueryComplete,
  set_complete: rndisSetComplete,
  reset_complete: rndisResetComplete,
  keep_alive_complete: rndisKeepaliveComplete,
});

export const rndisMessage = defineStruct('rndis_message', {
  /** RndisMessageType */
  ndis_msg_type: u32,
  /** The whole message, these 8 bytes included. */
  msg_len: u32,
  msg: rndisMessageContainer,
});

// --- per-packet info values -----------------------------------------------------------------

export const ndisTcpIpChecksumInfo = defineStruct('ndis_tcp_ip_checksum_info', {
  $u: union({
    value: u32,
    transmit: bits(4, {
      is_ipv4: 1,
      is_ipv6: 1,
      tcp_checksum: 1,
      udp_checksum: 1,
      ip_header_checksum: 1,
      reserved: 11,
      tcp_header_offset: 10,
    }),
    receive: bits(4, {
      tcp_checksum_failed: 1,
      udp_checksum_failed: 1,
      ip_checksum_failed: 1,
      tcp_checksum_succeeded: 1,
      udp_checksum_succeeded: 1,
      ip_checksum_succeeded: 1,
      loopback: 1,
    }),
  }),
});

/** Bits of ndis_tcp_ip_checksum_info.value. */
export const ChecksumInfo = {
  txIpv4: 1 << 0,
  txIpv6: 1 << 1,
  txTcp: 1 << 2,
  txUdp: 1 << 3,
  txIpHeader: 1 << 4,
  /** tcp_header_offset: bits 16..25 */
  txTcpHeaderOffsetShift: 16,
  rxTcpFailed: 1 << 0,
  rxUdpFailed: 1 << 1,
  rxIpFailed: 1 << 2,
  rxTcpSucceeded: 1 << 3,
  rxUdpSucceeded: 1 << 4,
  rxIpSucceeded: 1 << 5,
} as const;

export const ndisPkt8021qInfo = defineStruct('ndis_pkt_8021q_info', {
  $u: union({ value: u32, $bits: bits(4, { pri: 3, cfi: 1, vlanid: 12 }) }),
});

export const ndisTcpLsoInfo = defineStruct('ndis_tcp_lso_info', {
  $u: union({
    value: u32,
    lso_v2_transmit: bits(4, { mss: 20, tcp_header_offset: 10, type: 1, ip_version: 1 }),
  }),
});

/** Fields of ndis_tcp_lso_info.value (LSOv2 transmit). */
export const LsoInfo = {
  mssMask: 0xfffff,
  tcpHeaderOffsetShift: 20,
  tcpHeaderOffsetMask: 0x3ff,
  /** type: NDIS_TCP_LARGE_SEND_OFFLOAD_V2_TYPE */
  typeV2: 1 << 30,
  /** ip_version: 1 = IPv6 */
  ipv6: 1 << 31,
} as const;

// --- NDIS objects ------------------------------------------------------------------------------

export const ndisObjectHeader = defineStruct('ndis_object_header', {
  type: u8,
  revision: u8,
  size: u16,
});

export const ndisObjHeader = defineStruct('ndis_obj_header', { type: u8, rev: u8, size: u16 });

export const ndisRecvScaleCap = defineStruct('ndis_recv_scale_cap', {
  hdr: ndisObjHeader,
  cap_flag: u32,
  num_int_msg: u32,
  num_recv_que: u32,
  num_indirect_tabent: u16,
});

export const ndisRecvScaleParam = defineStruct('ndis_recv_scale_param', {
  hdr: ndisObjHeader,
  flag: u16,
  base_cpu_number: u16,
  hashinfo: u32,
  indirect_tabsize: u16,
  pad1: reserved(2),
  indirect_taboffset: u32,
  hashkey_size: u16,
  pad2: reserved(2),
  hashkey_offset: u32,
  processor_masks_offset: u32,
  num_processor_masks: u32,
  processor_masks_entry_size: u32,
});

export const ndisOffloadParams = defineStruct('ndis_offload_params', {
  header: ndisObjectHeader,
  ip_v4_csum: u8,
  tcp_ip_v4_csum: u8,
  udp_ip_v4_csum: u8,
  tcp_ip_v6_csum: u8,
  udp_ip_v6_csum: u8,
  lso_v1: u8,
  ip_sec_v1: u8,
  lso_v2_ipv4: u8,
  lso_v2_ipv6: u8,
  tcp_connection_ip_v4: u8,
  tcp_connection_ip_v6: u8,
  pad1: reserved(1),
  flags: u32,
  ip_sec_v2: u8,
  ip_sec_v2_ip_v4: u8,
  rsc_ip_v4: u8,
  rsc_ip_v6: u8,
  encapsulated_packet_task_offload: u8,
  encapsulation_types: u8,
  pad2: reserved(2),
});

export const ndisCsumOffload = defineStruct('ndis_csum_offload', {
  ip4_txenc: u32,
  ip4_txcsum: u32,
  ip4_rxenc: u32,
  ip4_rxcsum: u32,
  ip6_txenc: u32,
  ip6_txcsum: u32,
  ip6_rxenc: u32,
  ip6_rxcsum: u32,
});

export const ndisLsov2Offload = defineStruct('ndis_lsov2_offload', {
  ip4_encap: u32,
  ip4_maxsz: u32,
  ip4_minsg: u32,
  ip6_encap: u32,
  ip6_maxsz: u32,
  ip6_minsg: u32,
  ip6_opts: u32,
});

export const ndisIpsecv2Offload = defineStruct('ndis_ipsecv2_offload', {
  encap: u32,
  /** ip6, ip4opt, ip6ext, ah, esp, ah_esp, xport, tun (not used here). */
  caps: bytes(10),
  extseq: u8,
  pad1: reserved(1),
  udp_esp: u32,
  /** auth and crypto algorithms (not used here). */
  algos: bytes(8),
  sa_caps: u32,
});

export const ndisOffload = defineStruct('ndis_offload', {
  header: ndisObjectHeader,
  csum: ndisCsumOffload,
  lsov1: bytes(16),
  ipsecv1: bytes(28),
  lsov2: ndisLsov2Offload,
  flags: u32,
  ipsecv2: ndisIpsecv2Offload,
  rsc: bytes(2),
  pad1: reserved(2),
  encap_gre: bytes(8),
});

export function rndisTypeName(type: number): string {
  return RndisMessageType[type] ?? `0x${(type >>> 0).toString(16)}`;
}

export function oidName(oid: number): string {
  return Oid[oid] ?? `0x${(oid >>> 0).toString(16).padStart(8, '0')}`;
}
