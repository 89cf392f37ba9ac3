/**
 * VMBus channel messages: the control protocol the guest's VMBus driver and
 * the host's VMBus server exchange through SynIC messages (guest to host with
 * HvPostMessage, host to guest in SIMP slot 2). Layouts as in Linux's
 * include/linux/hyperv.h; message sizes and the minimum protocol version of
 * each message as Linux and Hyper-V use them (Linux drivers/hv/channel_mgmt.c
 * channel_message_table; OpenVMM vmbus_core).
 */
import {
  bits,
  bytes,
  defineStruct,
  flex,
  guid,
  i32,
  reserved,
  struct,
  u8,
  u16,
  u32,
  u64,
  union,
} from '../wire/index.ts';

/** Channel message types (vmbus_channel_message_header.msgtype). */
export enum ChannelMessageType {
  /** 0x00 */ Invalid = 0,
  /** 0x01 host→guest: a device channel is offered. */ OfferChannel = 1,
  /** 0x02 host→guest: an offer is withdrawn. */ RescindChannelOffer = 2,
  /** 0x03 guest→host: send me all offers. */ RequestOffers = 3,
  /** 0x04 host→guest: every current offer has been sent. */ AllOffersDelivered = 4,
  /** 0x05 guest→host: open a channel on a ring GPADL. */ OpenChannel = 5,
  /** 0x06 host→guest: result of OPENCHANNEL. */ OpenChannelResult = 6,
  /** 0x07 guest→host: close a channel. */ CloseChannel = 7,
  /** 0x08 guest→host: first part of a GPADL's page list. */ GpadlHeader = 8,
  /** 0x09 guest→host: continuation of a GPADL's page list. */ GpadlBody = 9,
  /** 0x0a host→guest: a GPADL is established (or failed). */ GpadlCreated = 10,
  /** 0x0b guest→host: tear down a GPADL. */ GpadlTeardown = 11,
  /** 0x0c host→guest: a GPADL is gone. */ GpadlTorndown = 12,
  /** 0x0d guest→host: the guest is done with a rescinded relid. */ RelidReleased = 13,
  /** 0x0e guest→host: connect with this protocol version. */ InitiateContact = 14,
  /** 0x0f host→guest: answer to INITIATE_CONTACT. */ VersionResponse = 15,
  /** 0x10 guest→host: disconnect; the host closes every channel. */ Unload = 16,
  /** 0x11 host→guest: UNLOAD is complete. */ UnloadResponse = 17,
  /** 0x12 open reserved channel (unused by Linux) */ OpenReservedChannel = 18,
  /** 0x13 close reserved channel (unused by Linux) */ CloseReservedChannel = 19,
  /** 0x14 close reserved channel response (unused by Linux) */ CloseReservedResponse = 20,
  /** 0x15 guest→host: hv_sock connect request. */ TlConnectRequest = 21,
  /** 0x16 guest→host: retarget a channel's interrupts to another VP. */ ModifyChannel = 22,
  /** 0x17 host→guest: result of TL_CONNECT_REQUEST. */ TlConnectResult = 23,
  /** 0x18 host→guest: result of MODIFYCHANNEL (5.3 and later). */ ModifyChannelResponse = 24,
}
export const CHANNELMSG_COUNT = 25;

export function channelMessageName(type: number): string {
  return ChannelMessageType[type] ?? `Unknown(${type})`;
}

/** VMBus protocol versions: major << 16 | minor. */
export enum VmbusVersion {
  /** 0.13 Windows Server 2008 */ Ws2008 = 0x0000000d,
  /** 1.1 Windows 7 */ Win7 = 0x00010001,
  /** 2.4 Windows 8 */ Win8 = 0x00020004,
  /** 3.0 Windows 8.1 */ Win8_1 = 0x00030000,
  /** 4.0 Windows 10 */ Win10 = 0x00040000,
  /** 4.1 Windows 10 RS3 */ Win10V4_1 = 0x00040001,
  /** 5.0 Windows 10 RS3 */ Win10V5 = 0x00050000,
  /** 5.1 Windows 10 RS4 */ Win10V5_1 = 0x00050001,
  /** 5.2 Windows Server 2019 */ Win10V5_2 = 0x00050002,
  /** 5.3 Windows Server 2022 */ Win10V5_3 = 0x00050003,
}

/** Every version, oldest first. */
export const ALL_VERSIONS: readonly VmbusVersion[] = [
  VmbusVersion.Ws2008,
  VmbusVersion.Win7,
  VmbusVersion.Win8,
  VmbusVersion.Win8_1,
  VmbusVersion.Win10,
  VmbusVersion.Win10V4_1,
  VmbusVersion.Win10V5,
  VmbusVersion.Win10V5_1,
  VmbusVersion.Win10V5_2,
  VmbusVersion.Win10V5_3,
];

/** The order Linux's vmbus_connect() tries versions in (drivers/hv/connection.c). */
export const LINUX_VERSION_ORDER: readonly VmbusVersion[] = [
  VmbusVersion.Win10V5_3,
  VmbusVersion.Win10V5_2,
  VmbusVersion.Win10V5_1,
  VmbusVersion.Win10V5,
  VmbusVersion.Win10V4_1,
  VmbusVersion.Win10,
  VmbusVersion.Win8_1,
  VmbusVersion.Win8,
];

/** FreeBSD's order (sys/dev/hyperv/vmbus/vmbus.c), which still goes down to WS2008. */
export const FREEBSD_VERSION_ORDER: readonly VmbusVersion[] = [
  VmbusVersion.Win10,
  VmbusVersion.Win8_1,
  VmbusVersion.Win8,
  VmbusVersion.Win7,
  VmbusVersion.Ws2008,
];

export function versionString(version: number): string {
  return `${version >>> 16}.${version & 0xffff}`;
}

/** Parses "5.3" (or a number) into a version value; undefined if not a known version. */
export function parseVersion(text: string): VmbusVersion | undefined {
  const m = /^(\d+)\.(\d+)$/.exec(text.trim());
  const value = m ? (Number(m[1]) << 16) | Number(m[2]) : Number(text);
  return ALL_VERSIONS.find((v) => v === value);
}

/** Connection ids of the message port (TLFS/VMBus): 1 below 5.0, 4 for INITIATE_CONTACT from 5.0. */
export const VMBUS_MESSAGE_CONNECTION_ID = 1;
export const VMBUS_MESSAGE_CONNECTION_ID_4 = 4;
/** Connection id guests signal for channels without a dedicated interrupt. */
export const VMBUS_EVENT_CONNECTION_ID = 2;
/** SINT on which VMBus messages and channel events arrive. */
export const VMBUS_MESSAGE_SINT = 2;
export const MAX_SIZE_CHANNEL_MESSAGE = 240;
export const MAX_USER_DEFINED_BYTES = 120;
export const MAX_PIPE_USER_DEFINED_BYTES = 116;
export const INVALID_RELID = 0xffffffff;
/** Relids the guest tracks (Linux MAX_CHANNEL_RELIDS). */
export const MAX_CHANNEL_RELIDS = 2048;

/** vmbus_channel_offer.chn_flags */
export enum ChannelFlags {
  /** 0x0001 */ EnumerateDeviceInterface = 0x1,
  /** 0x0002 */ ServerSupportsTransferPages = 0x2,
  /** 0x0004 */ ServerSupportsGpadls = 0x4,
  /** 0x0010: the channel is a named pipe; u.pipe.pipe_mode says which kind. */ NamedPipeMode = 0x10,
  /** 0x0100 */ LoopbackOffer = 0x100,
  /** 0x0200 */ ParentOffer = 0x200,
  /** 0x0400 */ RequestMonitoredNotification = 0x400,
  /** 0x2000: an hv_sock (transport-layer named pipe) offer. */ TlnpiProviderOffer = 0x2000,
}

/** Named-pipe modes (u.pipe.pipe_mode). */
export enum PipeMode {
  /** 0x0 */ Byte = 0,
  /** 0x4 */ Message = 4,
}

/** VERSION_RESPONSE.connection_state */
export enum ConnectionState {
  /** 0 */ Successful = 0,
  /** 1 */ FailedLowResources = 1,
  /** 2 */ FailedUnknownFailure = 2,
}

/** NTSTATUS-style results used in OPENCHANNEL_RESULT, GPADL_CREATED, MODIFYCHANNEL_RESPONSE. */
export const STATUS_SUCCESS = 0;
export const STATUS_UNSUCCESSFUL = 0xc0000001;

export const channelMessageHeader = defineStruct('vmbus_channel_message_header', {
  msgtype: u32,
  padding: reserved(4),
});

export const channelOffer = defineStruct('vmbus_channel_offer', {
  if_type: guid,
  if_instance: guid,
  reserved1: reserved(8),
  reserved2: reserved(8),
  chn_flags: u16,
  mmio_megabytes: u16,
  u: union({
    std: struct({ user_def: bytes(MAX_USER_DEFINED_BYTES) }),
    pipe: struct({ pipe_mode: u32, user_def: bytes(MAX_PIPE_USER_DEFINED_BYTES) }),
  }),
  sub_channel_index: u16,
  reserved3: reserved(2),
});

export const offerChannelMessage = defineStruct('vmbus_channel_offer_channel', {
  header: channelMessageHeader,
  offer: channelOffer,
  child_relid: u32,
  monitorid: u8,
  $monitor: bits(1, { monitor_allocated: 1, reserved: 7 }),
  $dedicated: bits(2, { is_dedicated_interrupt: 1, reserved1: 15 }),
  connection_id: u32,
});

export const rescindOfferMessage = defineStruct('vmbus_channel_rescind_offer', {
  header: channelMessageHeader,
  child_relid: u32,
});

export const openChannelMessage = defineStruct('vmbus_channel_open_channel', {
  header: channelMessageHeader,
  child_relid: u32,
  openid: u32,
  ringbuffer_gpadlhandle: u32,
  target_vp: u32,
  downstream_ringbuffer_pageoffset: u32,
  userdata: bytes(MAX_USER_DEFINED_BYTES),
});

export const openResultMessage = defineStruct('vmbus_channel_open_result', {
  header: channelMessageHeader,
  child_relid: u32,
  openid: u32,
  status: u32,
});

export const closeChannelMessage = defineStruct('vmbus_channel_close_channel', {
  header: channelMessageHeader,
  child_relid: u32,
});

export const relidReleasedMessage = defineStruct('vmbus_channel_relid_released', {
  header: channelMessageHeader,
  child_relid: u32,
});

export const initiateContactMessage = defineStruct('vmbus_channel_initiate_contact', {
  header: channelMessageHeader,
  vmbus_version_requested: u32,
  target_vcpu: u32,
  $u: union({
    /** Below 5.0: GPA of the guest's interrupt page (receive half first). */
    interrupt_page: u64,
    /** From 5.0: the SINT and VTL the host should send messages to. */
    $target: struct({ msg_sint: u8, msg_vtl: u8, reserved: reserved(6) }),
  }),
  monitor_page1: u64,
  monitor_page2: u64,
});

export const versionResponseMessage = defineStruct('vmbus_channel_version_response', {
  header: channelMessageHeader,
  version_supported: u8,
  connection_state: u8,
  padding: reserved(2),
  /** From 5.0: the connection id for all further guest messages. */
  msg_conn_id: u32,
});

/** Legacy messages kept for decoding; Linux never sends them. */
export const versionSupportedMessage = defineStruct('vmbus_channel_version_supported', {
  header: channelMessageHeader,
  version_supported: u8,
});
export const queryVmbusVersionMessage = defineStruct('vmbus_channel_query_vmbus_version', {
  header: channelMessageHeader,
  version: u32,
});

export const gpadlHeaderMessage = defineStruct('vmbus_channel_gpadl_header', {
  header: channelMessageHeader,
  child_relid: u32,
  gpadl: u32,
  /** Bytes of the whole range list (all messages), not just this one. */
  range_buflen: u16,
  rangecount: u16,
  range: flex(8),
});

export const gpadlBodyMessage = defineStruct('vmbus_channel_gpadl_body', {
  header: channelMessageHeader,
  msgnumber: u32,
  gpadl: u32,
  pfn: flex(8),
});

export const gpadlCreatedMessage = defineStruct('vmbus_channel_gpadl_created', {
  header: channelMessageHeader,
  child_relid: u32,
  gpadl: u32,
  creation_status: u32,
});

export const gpadlTeardownMessage = defineStruct('vmbus_channel_gpadl_teardown', {
  header: channelMessageHeader,
  child_relid: u32,
  gpadl: u32,
});

export const gpadlTorndownMessage = defineStruct('vmbus_channel_gpadl_torndown', {
  header: channelMessageHeader,
  gpadl: u32,
});

export const tlConnectRequestMessage = defineStruct('vmbus_channel_tl_connect_request', {
  header: channelMessageHeader,
  guest_endpoint_id: guid,
  host_service_id: guid,
});

/** Not declared by Linux; layout as Hyper-V sends it (OpenVMM TlConnectResult). */
export const tlConnectResultMessage = defineStruct('vmbus_channel_tl_connect_result', {
  header: channelMessageHeader,
  guest_endpoint_id: guid,
  host_service_id: guid,
  status: i32,
});

export const modifyChannelMessage = defineStruct('vmbus_channel_modifychannel', {
  header: channelMessageHeader,
  child_relid: u32,
  target_vp: u32,
});

export const modifyChannelResponseMessage = defineStruct('vmbus_channel_modifychannel_response', {
  header: channelMessageHeader,
  child_relid: u32,
  status: u32,
});

/** One entry of a GPA range list: byte count, offset into the first page, then the PFNs. */
export const gpaRange = defineStruct('gpa_range', {
  byte_count: u32,
  byte_offset: u32,
  pfn_array: flex(8),
});

/** Fixed part of GPADL_HEADER plus the first range's header (Linux GPADL_HEADER_FIXED_BYTES). */
export const GPADL_HEADER_FIXED_BYTES = gpadlHeaderMessage.size + gpaRange.size;
/** PFNs that fit in GPADL_HEADER after its fixed part and one range header. */
export const GPADL_HEADER_MAX_PFNS = Math.floor(
  (MAX_SIZE_CHANNEL_MESSAGE - GPADL_HEADER_FIXED_BYTES) / 8,
);
/** PFNs that fit in one GPADL_BODY. */
export const GPADL_BODY_MAX_PFNS = Math.floor(
  (MAX_SIZE_CHANNEL_MESSAGE - gpadlBodyMessage.size) / 8,
);

export type Direction = 'guest-to-host' | 'host-to-guest';

export interface MessageSpec {
  readonly type: ChannelMessageType;
  readonly direction: Direction;
  /** Smallest valid payload (the message including its 8-byte header). */
  readonly minSize: number;
  /** Oldest protocol version in which the message exists (0 = before negotiation). */
  readonly minVersion: number;
}

const spec = (
  type: ChannelMessageType,
  direction: Direction,
  minSize: number,
  minVersion: number = VmbusVersion.Ws2008,
): MessageSpec => ({ type, direction, minSize, minVersion });

/**
 * Per-message minimum sizes and versions. The guest drops host messages
 * shorter than these (Linux's channel_message_table min_payload_len); the host
 * likewise refuses short guest messages. Messages that carry a variable part
 * (GPADL header/body) need at least their fixed part.
 */
export const MESSAGE_SPECS: ReadonlyMap<ChannelMessageType, MessageSpec> = new Map(
  [
    spec(ChannelMessageType.OfferChannel, 'host-to-guest', offerChannelMessage.size),
    spec(ChannelMessageType.RescindChannelOffer, 'host-to-guest', rescindOfferMessage.size),
    spec(ChannelMessageType.RequestOffers, 'guest-to-host', channelMessageHeader.size),
    spec(ChannelMessageType.AllOffersDelivered, 'host-to-guest', channelMessageHeader.size),
    spec(ChannelMessageType.OpenChannel, 'guest-to-host', openChannelMessage.size),
    spec(ChannelMessageType.OpenChannelResult, 'host-to-guest', openResultMessage.size),
    spec(ChannelMessageType.CloseChannel, 'guest-to-host', closeChannelMessage.size),
    spec(ChannelMessageType.GpadlHeader, 'guest-to-host', gpadlHeaderMessage.size),
    spec(ChannelMessageType.GpadlBody, 'guest-to-host', gpadlBodyMessage.size),
    spec(ChannelMessageType.GpadlCreated, 'host-to-guest', gpadlCreatedMessage.size),
    spec(ChannelMessageType.GpadlTeardown, 'guest-to-host', gpadlTeardownMessage.size),
    spec(ChannelMessageType.GpadlTorndown, 'host-to-guest', gpadlTorndownMessage.size),
    spec(ChannelMessageType.RelidReleased, 'guest-to-host', relidReleasedMessage.size),
    spec(ChannelMessageType.InitiateContact, 'guest-to-host', initiateContactMessage.size, 0),
    spec(ChannelMessageType.VersionResponse, 'host-to-guest', versionResponseMessage.size, 0),
    spec(ChannelMessageType.Unload, 'guest-to-host', channelMessageHeader.size),
    spec(
      ChannelMessageType.UnloadResponse,
      'host-to-guest',
      channelMessageHeader.size,
      VmbusVersion.Win7,
    ),
    spec(
      ChannelMessageType.TlConnectRequest,
      'guest-to-host',
      tlConnectRequestMessage.size,
      VmbusVersion.Win10,
    ),
    spec(
      ChannelMessageType.ModifyChannel,
      'guest-to-host',
      modifyChannelMessage.size,
      VmbusVersion.Win10V4_1,
    ),
    spec(
      ChannelMessageType.TlConnectResult,
      'host-to-guest',
      tlConnectResultMessage.size,
      VmbusVersion.Win10V4_1,
    ),
    spec(
      ChannelMessageType.ModifyChannelResponse,
      'host-to-guest',
      modifyChannelResponseMessage.size,
      VmbusVersion.Win10V5_3,
    ),
  ].map((s) => [s.type, s]),
);

/** Device class GUIDs (Linux include/linux/hyperv.h), canonical lowercase. */
export const DeviceClass = {
  nic: 'f8615163-df3e-46c5-913f-f2d2f965ed0e',
  ide: '32412632-86cb-44a2-9b5c-50d1417354f5',
  scsi: 'ba6163d9-04a1-4d29-b605-72e2ffb1dc7f',
  synthetic_fc: '2f9bcc4a-0069-4af3-b76b-6fd0be528cda',
  network_direct: '8c2eaf3d-32a7-4b09-ab99-bd1f1c86b501',
  pcie: '44c4f61d-4444-4400-9d52-802e27ede19f',
  synthetic_video: 'da0a7802-e377-4aac-8e77-0558eb1073f8',
  keyboard: 'f912ad6d-2b17-48ea-bd65-f927a61c7684',
  mouse: 'cfa8b69e-5b4a-4cc0-b98b-8ba1a1f3f95a',
  kvp: 'a9a0f4e7-5a45-4d96-b827-8a841e8c03e6',
  timesync: '9527e630-d0ae-497b-adce-e80ab0175caf',
  heartbeat: '57164f39-9115-4e78-ab55-382f3bd5422d',
  shutdown: '0e0b6031-5213-4934-818b-38d90ced39db',
  fcopy: '34d14be3-dee4-41c8-9ae7-6b174977c192',
  vss_backup: '35fa2e29-ea23-4236-96ae-3a6ebacba440',
  dynamic_memory: '525074dc-8985-46e2-8057-a307dc18a502',
  avma1_unsupported: 'f8e65716-3cb3-4a06-9a60-1889c5cccab5',
  avma2_unsupported: '3375baf4-9e15-4b30-b765-67acb10d607b',
  rdv_unsupported: '276aacf4-ac15-426c-98dd-7521ad3f01fe',
  imc_unsupported: 'c376c1c3-d276-48d2-90a9-c04748072c60',
  /** hvkit's own echo test device: the guest sends, the host echoes back. */
  hvkit_echo: '6a3a7a2c-5e0b-4d7b-9f3e-8f1c2d4b6e01',
} as const;

export type DeviceClassName = keyof typeof DeviceClass;

export function deviceClassName(classId: string): DeviceClassName | undefined {
  const lower = classId.toLowerCase();
  return (Object.keys(DeviceClass) as DeviceClassName[]).find((k) => DeviceClass[k] === lower);
}

/** Connection id the host assigns a channel's guest-to-host interrupts (relid | SINT << 12, VTL 0). */
export function channelConnectionId(relid: number): number {
  return relid | (VMBUS_MESSAGE_SINT << 12);
}
