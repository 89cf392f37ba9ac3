/**
 * NVSP, the protocol of the synthetic NIC's VMBus channel (Linux
 * drivers/net/hyperv/hyperv_net.h and netvsc.c; OpenVMM net/netvsp). Every
 * message starts with a 4-byte type; the largest union member makes the
 * whole message 40 bytes, which is what Linux sends (a receive completion is
 * 8). Sizes and offsets are checked against the oracle's "netvsc_nvsp"
 * section by the conformance tests. RNDIS, which NVSP carries, is in
 * rndis-protocol.ts.
 */

import { DeviceClass } from '../../vmbus/protocol.ts';
import { bits, bytes, defineStruct, flex, u16, u32, u64, union } from '../../wire/index.ts';

/** The synthetic NIC's device class. */
export const NIC_CLASS_ID = DeviceClass.nic;

/** NVSP protocol versions (NVSP_PROTOCOL_VERSION_*; there is no version 3). */
export enum NvspVersion {
  /** 0x00000002 */ V1 = 0x2,
  /** 0x00030002 */ V2 = 0x30002,
  /** 0x00040000 */ V4 = 0x40000,
  /** 0x00050000 */ V5 = 0x50000,
  /** 0x00060000 */ V6 = 0x60000,
  /** 0x00060001 */ V61 = 0x60001,
}

/** Linux's ver_list, tried newest first (netvsc_connect_vsp). */
export const LINUX_NVSP_VERSION_ORDER: readonly number[] = [
  NvspVersion.V61,
  NvspVersion.V6,
  NvspVersion.V5,
  NvspVersion.V4,
  NvspVersion.V2,
  NvspVersion.V1,
];

/** Every version a host may accept. */
export const ALL_NVSP_VERSIONS: readonly number[] = [...LINUX_NVSP_VERSION_ORDER].reverse();

export function nvspVersionString(v: number): string {
  if (v === NvspVersion.V1) return '1';
  // 0x30002 is what Linux calls NVSP_PROTOCOL_VERSION_2.
  if (v === NvspVersion.V2) return '2';
  return `${v >>> 16}${(v & 0xffff) === 0 ? '' : `.${v & 0xffff}`}`;
}

/** The NDIS version the guest announces: 6.1 up to NVSP 4, 6.30 from NVSP 5. */
export function ndisVersionFor(nvsp: number): number {
  return nvsp <= NvspVersion.V4 ? 0x0006_0001 : 0x0006_001e;
}

/** nvsp_message_header.msg_type */
export enum NvspMessageType {
  /** 0x0 */ None = 0,
  /** 0x1 */ Init = 1,
  /** 0x2 */ InitComplete = 2,
  /** 0x64 (100) */ SendNdisVersion = 100,
  /** 0x65 */ SendReceiveBuffer = 101,
  /** 0x66 */ SendReceiveBufferComplete = 102,
  /** 0x67 */ RevokeReceiveBuffer = 103,
  /** 0x68 */ SendSendBuffer = 104,
  /** 0x69 */ SendSendBufferComplete = 105,
  /** 0x6a */ RevokeSendBuffer = 106,
  /** 0x6b: an RNDIS message (data or control). */ SendRndisPacket = 107,
  /** 0x6c */ SendRndisPacketComplete = 108,
  /** 0x78 (120) */ AllocReceiveBuffer = 120,
  /** 0x79 */ AllocReceiveBufferComplete = 121,
  /** 0x7a */ FreeReceiveBuffer = 122,
  /** 0x7d (125): MTU and capabilities, NVSP 2 on. */ SendNdisConfig = 125,
  /** 0x80 (128) */ SendVfAssociation = 128,
  /** 0x81 */ SwitchDataPath = 129,
  /** 0x82 */ UplinkConnectStateDeprecated = 130,
  /** 0x83 (131) */ OidQueryEx = 131,
  /** 0x84 */ OidQueryExComplete = 132,
  /** 0x85: allocate sub-channels, NVSP 5 on. */ Subchannel = 133,
  /** 0x86: the host's send indirection table. */ SendIndirectionTable = 134,
  /** 0x87 (135) */ PdApi = 135,
  /** 0x88 */ PdPostBatch = 136,
}

/** NVSP_STAT_* */
export enum NvspStatus {
  /** 0x0 */ None = 0,
  /** 0x1 */ Success = 1,
  /** 0x2 */ Failure = 2,
  /** 0x3 */ ProtocolTooNew = 3,
  /** 0x4 */ ProtocolTooOld = 4,
  /** 0x5 */ InvalidRndisPacket = 5,
  /** 0x6 */ Busy = 6,
  /** 0x7 */ ProtocolUnsupported = 7,
}

/** nvsp_1_message_send_rndis_packet.channel_type */
export enum RndisChannelType {
  /** 0x0: a data frame. */ Data = 0,
  /** 0x1: a control message. */ Control = 1,
}

/** NVSP_SUBCHANNEL_* */
export const NVSP_SUBCHANNEL_ALLOCATE = 1;

/** The receive buffer id Linux uses (NETVSC_RECEIVE_BUFFER_ID, 0xCAFE) and the send buffer's. */
export const NETVSC_RECEIVE_BUFFER_ID = 0xcafe;
export const NETVSC_SEND_BUFFER_ID = 0;
/** "No send-buffer section": the RNDIS message travels as a GPA-direct page list. */
export const NETVSC_INVALID_INDEX = 0xffff_ffff;
/** The send-buffer section size Hyper-V answers (NETVSC_SEND_SECTION_SIZE). */
export const NETVSC_SEND_SECTION_SIZE = 6144;
/** Linux's receive section size (NETVSC_RECV_SECTION_SIZE). */
export const NETVSC_RECV_SECTION_SIZE = 1728;
/** Smallest MTU (and smallest section size the guest accepts). */
export const NETVSC_MTU_MIN = 68;
/** Largest MTU a NIC here may have (Hyper-V allows jumbo frames to 9000). */
export const NETVSC_MTU_MAX = 9000;
/** Entries of the send indirection table (VRSS_SEND_TAB_SIZE). */
export const VRSS_SEND_TAB_SIZE = 16;
/** Most channels a NIC has (VRSS_CHANNEL_MAX). */
export const VRSS_CHANNEL_MAX = 64;
/** Most transfer-page ranges in one receive packet (NETVSC_MAX_XFER_PAGE_RANGES). */
export const NETVSC_MAX_XFER_PAGE_RANGES = 562;
/** Ring size of each direction: 128 pages of data plus the header page (VMBUS_RING_SIZE). */
export const NETVSC_RING_BYTES = 128 * 4096 + 4096;
/** A GPADL'd receive buffer of Linux's default size (16 MiB) and its send buffer (1 MiB). */
export const NETVSC_RECEIVE_BUFFER_DEFAULT = 16 * 1024 * 1024;
export const NETVSC_SEND_BUFFER_DEFAULT = 1024 * 1024;

// --- messages ------------------------------------------------------------------------

export const nvspMessageHeader = defineStruct('nvsp_message_header', { msg_type: u32 });

export const nvspMessageInit = defineStruct('nvsp_message_init', {
  min_protocol_ver: u32,
  max_protocol_ver: u32,
});

export const nvspMessageInitComplete = defineStruct('nvsp_message_init_complete', {
  negotiated_protocol_ver: u32,
  max_mdl_chain_len: u32,
  /** NvspStatus. */
  status: u32,
});

export const nvspSendNdisVersion = defineStruct('nvsp_1_message_send_ndis_version', {
  ndis_major_ver: u32,
  ndis_minor_ver: u32,
});

export const nvspSendReceiveBuffer = defineStruct('nvsp_1_message_send_receive_buffer', {
  gpadl_handle: u32,
  id: u16,
});

export const nvspReceiveBufferSection = defineStruct('nvsp_1_receive_buffer_section', {
  offset: u32,
  sub_alloc_size: u32,
  num_sub_allocs: u32,
  end_offset: u32,
});

export const nvspSendReceiveBufferComplete = defineStruct(
  'nvsp_1_message_send_receive_buffer_complete',
  {
    status: u32,
    num_sections: u32,
    /** nvsp_1_receive_buffer_section[num_sections] */
    sections: flex(16),
  },
);

export const nvspRevokeReceiveBuffer = defineStruct('nvsp_1_message_revoke_receive_buffer', {
  id: u16,
});

export const nvspSendSendBuffer = defineStruct('nvsp_1_message_send_send_buffer', {
  gpadl_handle: u32,
  id: u16,
});

export const nvspSendSendBufferComplete = defineStruct('nvsp_1_message_send_send_buffer_complete', {
  status: u32,
  section_size: u32,
});

export const nvspRevokeSendBuffer = defineStruct('nvsp_1_message_revoke_send_buffer', { id: u16 });

export const nvspSendRndisPacket = defineStruct('nvsp_1_message_send_rndis_packet', {
  /** RndisChannelType. */
  channel_type: u32,
  /** A send-buffer section, or NETVSC_INVALID_INDEX. */
  send_buf_section_index: u32,
  send_buf_section_size: u32,
});

export const nvspSendRndisPacketComplete = defineStruct(
  'nvsp_1_message_send_rndis_packet_complete',
  { status: u32 },
);

/** nvsp_2_vsc_capability: the capability bits of SEND_NDIS_CONFIG. */
export const nvspVscCapability = defineStruct('nvsp_2_vsc_capability', {
  $u: union({
    data: u64,
    $bits: bits(8, {
      vmq: 1,
      chimney: 1,
      sriov: 1,
      ieee8021q: 1,
      correlation_id: 1,
      teaming: 1,
      vsubnetid: 1,
      rsc: 1,
    }),
  }),
});

/** The bits of nvsp_2_vsc_capability, for code that works on the u64. */
export const VscCapability = {
  vmq: 1n << 0n,
  chimney: 1n << 1n,
  sriov: 1n << 2n,
  ieee8021q: 1n << 3n,
  correlationId: 1n << 4n,
  teaming: 1n << 5n,
  vsubnetid: 1n << 6n,
  rsc: 1n << 7n,
} as const;

export const nvspSendNdisConfig = defineStruct('nvsp_2_send_ndis_config', {
  /** The MTU plus the 14-byte Ethernet header. */
  mtu: u32,
  reserved: u32,
  capability: nvspVscCapability,
});

export const nvspAllocReceiveBuffer = defineStruct('nvsp_2_alloc_rxbuf', {
  alloc_id: u32,
  len: u32,
});

export const nvspAllocReceiveBufferComplete = defineStruct('nvsp_2_alloc_rxbuf_comp', {
  status: u32,
  alloc_id: u32,
  gpadl_handle: u32,
  recv_buf_id: u64,
});

export const nvspFreeReceiveBuffer = defineStruct('nvsp_2_free_rxbuf', { recv_buf_id: u64 });

export const nvspSendVfAssociation = defineStruct('nvsp_4_send_vf_association', {
  allocated: u32,
  serial: u32,
});

export const nvspSwitchDataPath = defineStruct('nvsp_4_sw_datapath', { active_datapath: u32 });

export const nvspSubchannelRequest = defineStruct('nvsp_5_subchannel_request', {
  /** NVSP_SUBCHANNEL_ALLOCATE */
  op: u32,
  num_subchannels: u32,
});

export const nvspSubchannelComplete = defineStruct('nvsp_5_subchannel_complete', {
  status: u32,
  num_subchannels: u32,
});

export const nvspSendIndirectionTable = defineStruct('nvsp_5_send_indirect_table', {
  /** VRSS_SEND_TAB_SIZE entries. */
  count: u32,
  /** Where the u32 table starts, from the start of the NVSP message. */
  offset: u32,
});

/** NVSP 6 PD API (direct data path; declared for the layout, not used here). */
export const nvspPdApiRequest = defineStruct('nvsp_6_pd_api_req', {
  op: u32,
  $u: union({ config: bytes(14), cr_q: bytes(30), free_com_buf: bytes(19) }),
});

export const nvspPdApiComplete = defineStruct('nvsp_6_pd_api_comp', {
  op: u32,
  status: u32,
  $u: union({ config: bytes(5), cr_q: bytes(28), alloc_com_buf: bytes(19) }),
});

export const nvspPdBuffer = defineStruct('nvsp_6_pd_buf', {
  region_offset: u32,
  region_id: u16,
  $bits: bits(2, { is_partial: 1, reserved: 15 }),
});

export const nvspPdBatchMessage = defineStruct('nvsp_6_pd_batch_msg', {
  hdr: nvspMessageHeader,
  count: u16,
  $bits: bits(2, { guest2host: 1, is_recv: 1, reserved: 14 }),
  pd_buf: flex(8),
});

/** Any NVSP message: the type, then the largest union member. 40 bytes. */
export const nvspMessage = defineStruct('nvsp_message', {
  hdr: nvspMessageHeader,
  msg: bytes(36),
});

/** The 8-byte receive completion Linux sends (struct recv_comp_msg). */
export const recvCompleteMessage = defineStruct('recv_comp_msg', {
  hdr: nvspMessageHeader,
  status: u32,
});

/** Size of the NVSP message Linux sends (and, below 6.1, OpenVMM's host sends 28). */
export const NVSP_MESSAGE_SIZE = nvspMessage.size;
/** Where the message body starts: after the 4-byte type. */
export const NVSP_BODY = nvspMessageHeader.size;
/**
 * Where the indirection table lies in a SEND_INDIRECTION_TABLE message:
 * after the header and the NVSP 6 union (4 + 36). Linux reads it there for
 * NVSP up to 6 whatever the offset says; writing it there and saying so
 * suits both readings.
 */
export const INDIRECTION_TABLE_OFFSET = 40;

export function nvspTypeName(type: number): string {
  return NvspMessageType[type] ?? `0x${type.toString(16)}`;
}
