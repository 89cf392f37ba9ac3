/**
 * The VSTOR protocol between the guest's storvsc and the host's storvsp: the
 * in-band packets of the synthetic SCSI channel (Linux
 * drivers/scsi/storvsc_drv.c; OpenVMM vm/devices/storage/storvsp). Sizes and
 * offsets are checked against the oracle (test/fixtures/oracle, section
 * "storvsc") by the conformance tests.
 *
 * Every packet starts with a 12-byte header (operation, flags, status)
 * followed by a 52-byte union; the SCSI request block (vmscsi_request) is the
 * largest member. Protocol versions before Windows 8 (5.1) use the request
 * block without its 16-byte Windows 8 tail, so their packets are 48 bytes,
 * not 64 (Linux once called the difference vmscsi_size_delta).
 */
import { bytes, defineStruct, reserved, u8, u16, u32, u64, union } from '../../wire/index.ts';

/** The SCSI controller's device class (Hyper-V's synthetic SCSI adapter). */
export const SCSI_CLASS_ID = 'ba6163d9-04a1-4d29-b605-72e2ffb1dc7f';

/** Longest CDB a request block carries. */
export const STORVSC_MAX_CMD_LEN = 0x10;
/** Sense bytes a request block carries from Windows 8 on (the union's size). */
export const STORVSC_SENSE_BUFFER_SIZE = 0x14;
/** Sense bytes before Windows 8 (fixed-format sense data). */
export const PRE_WIN8_SENSE_BUFFER_SIZE = 0x12;
export const STORVSC_MAX_BUF_LEN_WITH_PADDING = 0x14;

/** vstor_packet.flags: the sender wants a COMPLETE_IO answer. */
export const REQUEST_COMPLETION_FLAG = 0x1;

/** The Windows 8 tail of the SCSI request block (16 bytes). */
export const vmscsiWin8Extension = defineStruct('vmscsi_win8_extension', {
  reserve: u16,
  queue_tag: u8,
  queue_action: u8,
  srb_flags: u32,
  time_out_value: u32,
  queue_sort_ey: u32,
});

/** The SCSI request block (SRB), patterned on Windows' SCSI_PASS_THROUGH: 52 bytes. */
export const vmscsiRequest = defineStruct('vmscsi_request', {
  /** Size of this block as the sender laid it out (0x34, or 0x24 before Windows 8). */
  length: u16,
  srb_status: u8,
  scsi_status: u8,
  port_number: u8,
  path_id: u8,
  target_id: u8,
  lun: u8,
  cdb_length: u8,
  /** Request: room for sense bytes; completion: sense bytes returned. */
  sense_info_length: u8,
  /** StorvscDataDirection. */
  data_in: u8,
  reserved: u8,
  data_transfer_length: u32,
  /** The CDB on the way in, the sense data on the way back. */
  $u: union({
    cdb: bytes(STORVSC_MAX_CMD_LEN),
    sense_data: bytes(STORVSC_SENSE_BUFFER_SIZE),
    reserved_array: bytes(STORVSC_MAX_BUF_LEN_WITH_PADDING),
  }),
  // The Windows 8 extension, inline.
  reserve: u16,
  queue_tag: u8,
  queue_action: u8,
  srb_flags: u32,
  time_out_value: u32,
  queue_sort_ey: u32,
});

/** QUERY_PROPERTIES answer; also the (zeroed) user data of the channel open. 24 bytes. */
export const vmstorageChannelProperties = defineStruct('vmstorage_channel_properties', {
  reserved: u32,
  /** Sub-channels the host can offer. */
  max_channel_cnt: u16,
  reserved1: u16,
  /** StorageChannelFlags. */
  flags: u32,
  max_transfer_bytes: u32,
  reserved2: u64,
});

/** QUERY_PROTOCOL_VERSION: (major << 8 | minor), revision 0. 4 bytes. */
export const vmstorageProtocolVersion = defineStruct('vmstorage_protocol_version', {
  major_minor: u16,
  revision: u16,
});

/** FCHBA_DATA: world-wide names of a synthetic Fibre Channel adapter. 36 bytes. */
export const hvFcWwnPacket = defineStruct('hv_fc_wwn_packet', {
  primary_active: u8,
  reserved1: reserved(3),
  primary_port_wwn: bytes(8),
  primary_node_wwn: bytes(8),
  secondary_port_wwn: bytes(8),
  secondary_node_wwn: bytes(8),
});

/** Every VSTOR packet: the in-band payload of the storage channel. 64 bytes. */
export const vstorPacket = defineStruct('vstor_packet', {
  /** VstorOperation. */
  operation: u32,
  /** REQUEST_COMPLETION_FLAG. */
  flags: u32,
  /** An NT status from the host (NtStatus); 0 is success. */
  status: u32,
  $u: union({
    vm_srb: vmscsiRequest,
    storage_channel_properties: vmstorageChannelProperties,
    version: vmstorageProtocolVersion,
    wwn_packet: hvFcWwnPacket,
    sub_channel_count: u16,
    buffer: bytes(0x34),
  }),
});

/** Bytes of the packet header before the union. */
export const VSTOR_HEADER_SIZE = 12;
/** A full (Windows 8 and later) packet. */
export const VSTOR_PACKET_SIZE = vstorPacket.size;
/** Bytes the Windows 8 tail adds (vmscsi_size_delta). */
export const VMSCSI_SIZE_DELTA = vmscsiWin8Extension.size;
/** The request block before Windows 8 (SCSI_REQUEST_LEN_V1). */
export const VMSCSI_REQUEST_SIZE_V1 = vmscsiRequest.size - VMSCSI_SIZE_DELTA;

/** vstor_packet.operation. */
export enum VstorOperation {
  /** 0x01: the answer to a request (host to guest). */
  CompleteIo = 1,
  /** 0x02: a device went away; the guest should rescan (host to guest). */
  RemoveDevice = 2,
  /** 0x03: run the SCSI request block vm_srb. */
  ExecuteSrb = 3,
  /** 0x04 */
  ResetLun = 4,
  /** 0x05 */
  ResetAdapter = 5,
  /** 0x06 */
  ResetBus = 6,
  /** 0x07: first packet of the handshake. */
  BeginInitialization = 7,
  /** 0x08: last packet of the handshake. */
  EndInitialization = 8,
  /** 0x09: version.major_minor = the version the guest proposes. */
  QueryProtocolVersion = 9,
  /** 0x0a: the host answers with storage_channel_properties. */
  QueryProperties = 10,
  /** 0x0b: LUNs changed; the guest should rescan (host to guest). */
  EnumerateBus = 11,
  /** 0x0c: Fibre Channel world-wide names. */
  FchbaData = 12,
  /** 0x0d: sub_channel_count more channels, please. */
  CreateSubChannels = 13,
}

/** VMSTOR_PROTO_VERSION(major, minor) values. */
export enum VmstorVersion {
  /** 0x0200 (2.0) */
  Win6 = 0x200,
  /** 0x0402 (4.2) */
  Win7 = 0x402,
  /** 0x0501 (5.1): the Windows 8 request block, multi-channel. */
  Win8 = 0x501,
  /** 0x0600 (6.0) */
  Win8_1 = 0x600,
  /** 0x0602 (6.2) */
  Win10 = 0x602,
}

/** The order Linux's storvsc proposes versions in (newest first). */
export const LINUX_STORVSC_VERSION_ORDER: readonly number[] = [
  VmstorVersion.Win10,
  VmstorVersion.Win8_1,
  VmstorVersion.Win8,
];

/** Versions a host accepts by default: the three Linux proposes. */
export const DEFAULT_HOST_STORVSC_VERSIONS: readonly number[] = LINUX_STORVSC_VERSION_ORDER;

export function vmstorVersionString(version: number): string {
  return `${(version >> 8) & 0xff}.${version & 0xff}`;
}

/** Bytes of a packet (header + request block) at a protocol version. */
export function vstorPacketSize(version: number): number {
  return version >= VmstorVersion.Win8 ? VSTOR_PACKET_SIZE : VSTOR_PACKET_SIZE - VMSCSI_SIZE_DELTA;
}

/** vmstorage_channel_properties.flags. */
export enum StorageChannelFlags {
  /** 0x1: the host can offer sub-channels. */
  SupportsMultiChannel = 0x1,
}

/** vm_srb.srb_status: a 6-bit code plus two flag bits (Windows srb.h). */
export enum SrbStatus {
  /** 0x00: still running. */
  Pending = 0x00,
  /** 0x01 */
  Success = 0x01,
  /** 0x02 */
  Aborted = 0x02,
  /** 0x04: the command failed; sense data says why when AUTOSENSE_VALID. */
  Error = 0x04,
  /** 0x05: the adapter is busy; retry. */
  Busy = 0x05,
  /** 0x06: the request block itself is malformed. */
  InvalidRequest = 0x06,
  /** 0x09 */
  Timeout = 0x09,
  /** 0x0a */
  SelectionTimeout = 0x0a,
  /** 0x0e */
  BusReset = 0x0e,
  /** 0x12: fewer (or more) bytes moved than data_transfer_length asked; the count is valid. */
  DataOverrun = 0x12,
  /** 0x20: no logical unit at this LUN. */
  InvalidLun = 0x20,
  /** 0x30 */
  InternalError = 0x30,
}

/** Flag bit of srb_status: sense_data holds sense_info_length valid bytes. */
export const SRB_STATUS_AUTOSENSE_VALID = 0x80;
/** Flag bit of srb_status: the adapter froze its queue. */
export const SRB_STATUS_QUEUE_FROZEN = 0x40;
/** The code without the flag bits (Linux SRB_STATUS()). */
export function srbStatusCode(status: number): number {
  return status & ~(SRB_STATUS_AUTOSENSE_VALID | SRB_STATUS_QUEUE_FROZEN) & 0xff;
}

/** vm_srb.srb_flags bits the guest sets (Windows srb.h). */
export const SrbFlags = {
  /** 0x002: queue_tag / queue_action are valid. */
  QUEUE_ACTION_ENABLE: 0x2,
  /** 0x004 */
  DISABLE_DISCONNECT: 0x4,
  /** 0x008 */
  DISABLE_SYNCH_TRANSFER: 0x8,
  /** 0x020: do not return sense data. */
  DISABLE_AUTOSENSE: 0x20,
  /** 0x040: data moves from device to guest. */
  DATA_IN: 0x40,
  /** 0x080: data moves from guest to device. */
  DATA_OUT: 0x80,
  /** 0x100 */
  NO_QUEUE_FREEZE: 0x100,
} as const;

/** queue_tag for an untagged request, and queue_action for a simple tag. */
export const SP_UNTAGGED = 0xff;
export const SRB_SIMPLE_TAG_REQUEST = 0x20;
/** time_out_value Linux puts in every request (seconds). */
export const STORVSC_SRB_TIME_OUT_VALUE = 60;

/** vm_srb.data_in: the direction of the data phase. */
export enum StorvscDataDirection {
  /** 0: guest to device (WRITE_TYPE). */
  Write = 0,
  /** 1: device to guest (READ_TYPE). */
  Read = 1,
  /** 2: no data (UNKNOWN_TYPE). */
  None = 2,
}

/** NT status codes the host puts in vstor_packet.status. */
export enum NtStatus {
  /** 0x00000000 */
  Success = 0x0000_0000,
  /** 0x80000005: fewer bytes than asked (a short transfer). */
  BufferOverflow = 0x8000_0005,
  /** 0x80000011 */
  DeviceBusy = 0x8000_0011,
  /** 0xC0000001 */
  Unsuccessful = 0xc000_0001,
  /** 0xC000000D: e.g. more sub-channels than the host can offer. */
  InvalidParameter = 0xc000_000d,
  /** 0xC0000010: an operation the host does not implement. */
  InvalidDeviceRequest = 0xc000_0010,
  /** 0xC0000059: the proposed protocol version is not supported. */
  RevisionMismatch = 0xc000_0059,
  /** 0xC00000C0: no logical unit there. */
  DeviceDoesNotExist = 0xc000_00c0,
  /** 0xC0000184: the operation is not allowed in the handshake's current state. */
  InvalidDeviceState = 0xc000_0184,
  /** 0xC0000185 */
  IoDeviceError = 0xc000_0185,
}

/**
 * Transaction ids Linux reserves for its one-at-a-time control requests
 * (include/linux/hyperv.h): the handshake uses VMBUS_RQST_INIT, the bus
 * reset VMBUS_RQST_RESET. As 32-bit halves (U64_MAX - 2 and U64_MAX - 3).
 */
export const VMBUS_RQST_INIT = { lo: 0xffff_fffd, hi: 0xffff_ffff } as const;
export const VMBUS_RQST_RESET = { lo: 0xffff_fffc, hi: 0xffff_ffff } as const;

/** Default ring size of each direction: Linux's 128 KiB plus the header page. */
export const STORVSC_RING_BYTES = 128 * 1024 + 4096;

/**
 * Largest transfer one request may carry. One GPA range of a 1 MiB buffer
 * needs 257 PFNs when it does not start on a page boundary, which keeps the
 * packet's page list within a page.
 */
export const STORVSP_MAX_TRANSFER_BYTES = 1024 * 1024;

// Byte offsets inside a packet, for the data path (reads and writes in place).
const srb = VSTOR_HEADER_SIZE;
export const Offsets = {
  operation: vstorPacket.offsetOf('operation'),
  flags: vstorPacket.offsetOf('flags'),
  status: vstorPacket.offsetOf('status'),
  srbLength: srb + vmscsiRequest.offsetOf('length'),
  srbStatus: srb + vmscsiRequest.offsetOf('srb_status'),
  scsiStatus: srb + vmscsiRequest.offsetOf('scsi_status'),
  portNumber: srb + vmscsiRequest.offsetOf('port_number'),
  pathId: srb + vmscsiRequest.offsetOf('path_id'),
  targetId: srb + vmscsiRequest.offsetOf('target_id'),
  lun: srb + vmscsiRequest.offsetOf('lun'),
  cdbLength: srb + vmscsiRequest.offsetOf('cdb_length'),
  senseInfoLength: srb + vmscsiRequest.offsetOf('sense_info_length'),
  dataIn: srb + vmscsiRequest.offsetOf('data_in'),
  dataTransferLength: srb + vmscsiRequest.offsetOf('data_transfer_length'),
  cdb: srb + vmscsiRequest.offsetOf('cdb'),
  senseData: srb + vmscsiRequest.offsetOf('sense_data'),
  queueTag: srb + vmscsiRequest.offsetOf('queue_tag'),
  queueAction: srb + vmscsiRequest.offsetOf('queue_action'),
  srbFlags: srb + vmscsiRequest.offsetOf('srb_flags'),
  timeOutValue: srb + vmscsiRequest.offsetOf('time_out_value'),
  version: srb + vmstorageProtocolVersion.offsetOf('major_minor'),
  subChannelCount: srb,
  maxChannelCount: srb + vmstorageChannelProperties.offsetOf('max_channel_cnt'),
  propertyFlags: srb + vmstorageChannelProperties.offsetOf('flags'),
  maxTransferBytes: srb + vmstorageChannelProperties.offsetOf('max_transfer_bytes'),
} as const;

/** A short name for an operation code, for logs and errors. */
export function operationName(operation: number): string {
  return VstorOperation[operation] ?? `operation ${operation}`;
}
