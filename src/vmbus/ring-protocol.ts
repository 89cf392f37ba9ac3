/**
 * The ring buffer's header page and the packets that travel in rings
 * (Linux include/linux/hyperv.h: struct hv_ring_buffer, vmpacket_descriptor
 * and the descriptor extensions for transfer pages and GPA ranges).
 */
import {
  array,
  bits,
  defineStruct,
  flex,
  reserved,
  u8,
  u16,
  u32,
  u64,
  union,
} from '../wire/index.ts';
import { gpaRange } from './protocol.ts';

/**
 * The ring buffer's header page (struct hv_ring_buffer); the data area
 * follows at +4096. Indices are byte offsets into the data area.
 */
export const ringBufferHeader = defineStruct('hv_ring_buffer', {
  write_index: u32,
  read_index: u32,
  /** Set by the reader to ask the writer not to signal. */
  interrupt_mask: u32,
  /** Bytes a blocked writer needs; the reader signals once that much is free. */
  pending_send_sz: u32,
  reserved1: reserved(48),
  feature_bits: union({ value: u32, $bits: bits(4, { feat_pending_send_sz: 1, reserved: 31 }) }),
  reserved2: reserved(4028),
  buffer: flex(1),
});
export const RING_HEADER_SIZE = 4096;
export const RING_FEATURE_PENDING_SEND_SZ = 1;
/** Every packet is followed by a u64 holding its start offset << 32. */
export const RING_TRAILER_SIZE = 8;

// --- Packets ----------------------------------------------------------------

/** vmpacket_descriptor.type */
export enum PacketType {
  /** 0x00 */ Invalid = 0,
  /** 0x01 */ Synch = 1,
  /** 0x02 */ AddTransferPageSet = 2,
  /** 0x03 */ RemoveTransferPageSet = 3,
  /** 0x04 */ EstablishGpadl = 4,
  /** 0x05 */ TeardownGpadl = 5,
  /** 0x06: payload follows the 16-byte descriptor. */ DataInband = 6,
  /** 0x07: ranges of a transfer page set (netvsc receive buffer). */ DataUsingTransferPages = 7,
  /** 0x08 */ DataUsingGpadl = 8,
  /** 0x09: GPA ranges naming guest pages, then an in-band payload. */ DataUsingGpaDirect = 9,
  /** 0x0a */ CancelRequest = 10,
  /** 0x0b: completion of a packet that asked for one; echoes its trans_id. */ Completion = 11,
  /** 0x0c */ DataUsingAdditionalPacket = 12,
  /** 0x0d */ AdditionalData = 13,
}

/** vmpacket_descriptor.flags */
export const VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED = 1;

export const packetDescriptor = defineStruct('vmpacket_descriptor', {
  type: u16,
  /** Offset of the payload from the packet start, in 8-byte units. */
  offset8: u16,
  /** Packet length (without the trailer), in 8-byte units. */
  len8: u16,
  flags: u16,
  trans_id: u64,
});
export const PACKET_DESCRIPTOR_SIZE = packetDescriptor.size;

export const packetHeader = defineStruct('vmpacket_header', {
  prev_pkt_start_offset: u32,
  descriptor: packetDescriptor,
});

export const transferPageRange = defineStruct('vmtransfer_page_range', {
  byte_count: u32,
  byte_offset: u32,
});

export const transferPagePacketHeader = defineStruct('vmtransfer_page_packet_header', {
  d: packetDescriptor,
  xfer_pageset_id: u16,
  sender_owns_set: u8,
  reserved: reserved(1),
  range_cnt: u32,
  ranges: flex(transferPageRange.size),
});

export const gpaDirectPacketHeader = defineStruct('vmdata_gpa_direct', {
  d: packetDescriptor,
  reserved: reserved(4),
  range_cnt: u32,
  /** First range; ranges are variable sized (8 + 8 * pfn count) and follow one another. */
  range: gpaRange,
});
/** Bytes of the GPA-direct header before the first range. */
export const GPA_DIRECT_FIXED_BYTES = gpaDirectPacketHeader.offsetOf('range');

export const hvPageBuffer = defineStruct('hv_page_buffer', { len: u32, offset: u32, pfn: u64 });
export const MAX_PAGE_BUFFER_COUNT = 32;
export const MAX_MULTIPAGE_BUFFER_COUNT = 32;
export const hvMultipageBuffer = defineStruct('hv_multipage_buffer', {
  len: u32,
  offset: u32,
  pfn_array: array(u64, MAX_MULTIPAGE_BUFFER_COUNT),
});
export const hvMpbArray = defineStruct('hv_mpb_array', {
  len: u32,
  offset: u32,
  pfn_array: flex(8),
});

const channelPacketFixed = {
  type: u16,
  dataoffset8: u16,
  length8: u16,
  flags: u16,
  transactionid: u64,
  reserved: reserved(4),
  rangecount: u32,
} as const;

export const channelPacketPageBuffer = defineStruct('vmbus_channel_packet_page_buffer', {
  ...channelPacketFixed,
  range: array(hvPageBuffer, MAX_PAGE_BUFFER_COUNT),
});
export const channelPacketMultipageBuffer = defineStruct('vmbus_channel_packet_multipage_buffer', {
  ...channelPacketFixed,
  range: hvMultipageBuffer,
});
export const packetMpbArray = defineStruct('vmbus_packet_mpb_array', {
  ...channelPacketFixed,
  range: hvMpbArray,
});

/** Legacy packet layouts (older hyperv.h), declared for decoding and conformance. */
export const legacyTransferPagePacketHeader = defineStruct('legacy_vmtransfer_page_packet_header', {
  d: packetDescriptor,
  xfer_pageset_id: u16,
  sender_owns_set: u8,
  reserved: reserved(1),
  range_cnt: u32,
  ranges: array(transferPageRange, 1),
});
export const gpadlPacketHeader = defineStruct('vmgpadl_packet_header', {
  d: packetDescriptor,
  gpadl: u32,
  reserved: reserved(4),
});
export const addRemoveTransferPageSet = defineStruct('vmadd_remove_transfer_page_set', {
  d: packetDescriptor,
  gpadl: u32,
  xfer_pageset_id: u16,
  reserved: reserved(2),
});
export const establishGpadlPacket = defineStruct('vmestablish_gpadl', {
  d: packetDescriptor,
  gpadl: u32,
  range_cnt: u32,
  range: gpaRange,
});
export const teardownGpadlPacket = defineStruct('vmteardown_gpadl', {
  d: packetDescriptor,
  gpadl: u32,
  reserved: reserved(4),
});
export const additionalDataPacket = defineStruct('vmadditional_data', {
  d: packetDescriptor,
  total_bytes: u64,
  offset: u32,
  byte_cnt: u32,
  data: array(u8, 1),
});

/** The pipe header hv_sock and message-mode pipes put before each payload. */
export const pipeProtoHeader = defineStruct('vmpipe_proto_header', {
  pkt_type: u32,
  data_size: u32,
});
