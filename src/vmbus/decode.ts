/**
 * Decoding of VMBus bytes for people: channel messages, SynIC messages, ring
 * packets and whole ring images, to plain objects with Linux's field names.
 * Every decoder is bounded by its input and reports what is wrong instead of
 * guessing.
 */
import {
  HV_MESSAGE_PAYLOAD_BYTE_COUNT,
  HV_MESSAGE_SIZE,
  HvMessageType,
  hvMessage,
} from '../hv/protocol.ts';
import { type Json, toJson } from '../wire/index.ts';
import { GpaRangeList, PacketView, TransferPageRanges } from './packet.ts';
import {
  ChannelMessageType,
  channelMessageHeader,
  channelMessageName,
  closeChannelMessage,
  deviceClassName,
  gpadlBodyMessage,
  gpadlCreatedMessage,
  gpadlHeaderMessage,
  gpadlTeardownMessage,
  gpadlTorndownMessage,
  initiateContactMessage,
  modifyChannelMessage,
  modifyChannelResponseMessage,
  offerChannelMessage,
  openChannelMessage,
  openResultMessage,
  relidReleasedMessage,
  rescindOfferMessage,
  tlConnectRequestMessage,
  tlConnectResultMessage,
  versionResponseMessage,
} from './protocol.ts';
import { Ring, RingReader } from './ring.ts';
import { PacketType, RING_HEADER_SIZE, ringBufferHeader } from './ring-protocol.ts';

export class DecodeError extends Error {
  override readonly name = 'DecodeError';
}

type AnyStruct = { size: number; read(bytes: Uint8Array, offset?: number): unknown; name: string };

const messageStructs = new Map<ChannelMessageType, AnyStruct>([
  [ChannelMessageType.OfferChannel, offerChannelMessage],
  [ChannelMessageType.RescindChannelOffer, rescindOfferMessage],
  [ChannelMessageType.RequestOffers, channelMessageHeader],
  [ChannelMessageType.AllOffersDelivered, channelMessageHeader],
  [ChannelMessageType.OpenChannel, openChannelMessage],
  [ChannelMessageType.OpenChannelResult, openResultMessage],
  [ChannelMessageType.CloseChannel, closeChannelMessage],
  [ChannelMessageType.GpadlHeader, gpadlHeaderMessage],
  [ChannelMessageType.GpadlBody, gpadlBodyMessage],
  [ChannelMessageType.GpadlCreated, gpadlCreatedMessage],
  [ChannelMessageType.GpadlTeardown, gpadlTeardownMessage],
  [ChannelMessageType.GpadlTorndown, gpadlTorndownMessage],
  [ChannelMessageType.RelidReleased, relidReleasedMessage],
  [ChannelMessageType.InitiateContact, initiateContactMessage],
  [ChannelMessageType.VersionResponse, versionResponseMessage],
  [ChannelMessageType.Unload, channelMessageHeader],
  [ChannelMessageType.UnloadResponse, channelMessageHeader],
  [ChannelMessageType.TlConnectRequest, tlConnectRequestMessage],
  [ChannelMessageType.ModifyChannel, modifyChannelMessage],
  [ChannelMessageType.TlConnectResult, tlConnectResultMessage],
  [ChannelMessageType.ModifyChannelResponse, modifyChannelResponseMessage],
]);

function u64s(bytes: Uint8Array, from: number): number[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: number[] = [];
  for (let at = from; at + 8 <= bytes.length; at += 8) {
    out.push(view.getUint32(at, true) + view.getUint32(at + 4, true) * 0x1_0000_0000);
  }
  return out;
}

/** A channel message (its type from the header), with GPADL page lists spelled out. */
export function decodeChannelMessage(bytes: Uint8Array): Json {
  if (bytes.length < channelMessageHeader.size) {
    throw new DecodeError(
      `a channel message needs at least ${channelMessageHeader.size} bytes, got ${bytes.length}`,
    );
  }
  const type = channelMessageHeader.read(bytes).msgtype;
  const struct = messageStructs.get(type);
  if (!struct) throw new DecodeError(`unknown channel message type ${type}`);
  if (bytes.length < struct.size) {
    throw new DecodeError(`${struct.name} needs ${struct.size} bytes, got ${bytes.length}`);
  }
  const out: Record<string, Json> = {
    type: channelMessageName(type),
    struct: struct.name,
    size: bytes.length,
    ...(toJson(struct.read(bytes)) as Record<string, Json>),
  };
  if (type === ChannelMessageType.OfferChannel) {
    const classId = (out.offer as Record<string, Json>).if_type as string;
    out.device_class = deviceClassName(classId) ?? null;
  } else if (type === ChannelMessageType.GpadlHeader) {
    const values = u64s(bytes, gpadlHeaderMessage.size);
    out.range_data = values;
  } else if (type === ChannelMessageType.GpadlBody) {
    out.pfn = u64s(bytes, gpadlBodyMessage.size);
  }
  const extra = bytes.length - struct.size;
  if (
    extra > 0 &&
    type !== ChannelMessageType.GpadlHeader &&
    type !== ChannelMessageType.GpadlBody
  ) {
    out.trailing_bytes = Buffer.from(bytes.subarray(struct.size)).toString('hex');
  }
  return out;
}

/** A 256-byte SynIC message; VMBus payloads (type 1) are decoded as channel messages. */
export function decodeHvMessage(bytes: Uint8Array): Json {
  if (bytes.length !== HV_MESSAGE_SIZE) {
    throw new DecodeError(`an hv_message is ${HV_MESSAGE_SIZE} bytes, got ${bytes.length}`);
  }
  const m = hvMessage.read(bytes);
  const size = m.header.payload_size;
  const out: Record<string, Json> = {
    header: toJson(m.header),
    message_type_name:
      m.header.message_type === 1
        ? 'VMBus channel message'
        : (HvMessageType[m.header.message_type] ?? `0x${m.header.message_type.toString(16)}`),
  };
  if (size > HV_MESSAGE_PAYLOAD_BYTE_COUNT) {
    out.error = `payload_size ${size} exceeds ${HV_MESSAGE_PAYLOAD_BYTE_COUNT}`;
    return out;
  }
  const payload = m.u.payload.subarray(0, size);
  out.payload = Buffer.from(payload).toString('hex');
  if (m.header.message_type === 1) {
    try {
      out.channel_message = decodeChannelMessage(payload);
    } catch (error) {
      out.channel_message_error = (error as Error).message;
    }
  }
  return out;
}

/** One packet (descriptor, extension, payload); the bytes are exactly len8 * 8. */
export function decodePacket(bytes: Uint8Array): Json {
  const view = new PacketView(bytes);
  const error = view.load(bytes.length);
  if (error) throw new DecodeError(`not a packet: ${error}`);
  const out: Record<string, Json> = {
    type: view.type,
    type_name: PacketType[view.type] ?? `Unknown(${view.type})`,
    offset8: view.offset8,
    len8: view.len8,
    flags: view.flags,
    trans_id: toJson(view.transId),
  };
  if (view.type === PacketType.DataUsingGpaDirect) {
    const ranges = new GpaRangeList();
    const problem = ranges.parse(view);
    if (problem) out.range_error = problem;
    else {
      out.range_cnt = ranges.count;
      out.range = Array.from({ length: ranges.count }, (_, i) => ({
        byte_count: ranges.byteCount[i]!,
        byte_offset: ranges.byteOffset[i]!,
        pfn_array: Array.from(
          ranges.pfns.subarray(ranges.pfnStart[i]!, ranges.pfnStart[i]! + ranges.pfnCount[i]!),
        ),
      }));
    }
  } else if (view.type === PacketType.DataUsingTransferPages) {
    const ranges = new TransferPageRanges();
    const problem = ranges.parse(view);
    if (problem) out.range_error = problem;
    else {
      out.xfer_pageset_id = ranges.pageSetId;
      out.sender_owns_set = ranges.senderOwnsSet ? 1 : 0;
      out.range_cnt = ranges.count;
      out.ranges = Array.from({ length: ranges.count }, (_, i) => ({
        byte_count: ranges.byteCount[i]!,
        byte_offset: ranges.byteOffset[i]!,
      }));
    }
  } else if (view.offset8 > 2) {
    out.descriptor_extension = Buffer.from(view.extension()).toString('hex');
  }
  out.data = Buffer.from(view.payload()).toString('hex');
  return out;
}

/** A ring image: the header page's fields and the packets between read_index and write_index. */
export function decodeRing(bytes: Uint8Array): Json {
  if (bytes.length < RING_HEADER_SIZE + 8 || (bytes.length - RING_HEADER_SIZE) % 8 !== 0) {
    throw new DecodeError(
      `a ring image is the 4096-byte header page plus a data area that is a multiple of 8, got ${bytes.length} bytes`,
    );
  }
  const copy = new Uint8Array(bytes.length);
  copy.set(bytes);
  const header = ringBufferHeader.read(copy);
  const ring = Ring.fromBytes(copy);
  const out: Record<string, Json> = {
    ring_size: bytes.length,
    data_size: ring.dataSize,
    write_index: header.write_index,
    read_index: header.read_index,
    interrupt_mask: header.interrupt_mask,
    pending_send_sz: header.pending_send_sz,
    feature_bits: toJson(header.feature_bits),
  };
  const valid = ring.validIndex(header.write_index) && ring.validIndex(header.read_index);
  if (!valid) {
    out.error = 'write_index or read_index is not an 8-byte aligned offset inside the data area';
    out.packets = [];
    return out;
  }
  out.bytes_avail_to_read = ring.availableToRead(header.write_index, header.read_index);
  out.bytes_avail_to_write = ring.availableToWrite(header.write_index, header.read_index);
  const reader = new RingReader(ring);
  const buffer = new Uint8Array(ring.dataSize);
  const packets: Json[] = [];
  let offset = header.read_index;
  for (;;) {
    const status = reader.next(buffer);
    if (status === 'empty') break;
    if (status === 'corrupt') {
      out.error = reader.error;
      break;
    }
    try {
      const packet = decodePacket(buffer.slice(0, reader.length)) as Record<string, Json>;
      packets.push({ start_offset: offset, ...packet });
    } catch (error) {
      packets.push({ start_offset: offset, error: (error as Error).message });
    }
    offset = (offset + reader.length + 8) % ring.dataSize;
  }
  out.packets = packets;
  return out;
}
