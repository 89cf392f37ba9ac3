/**
 * Decoding of NIC bytes for people (`hvkit decode nvsp|rndis`): an NVSP
 * message or an RNDIS message to a plain object with Linux's field names
 * (hyperv_net.h, rndis.h), per-packet info and the frame of a data packet
 * spelled out. Bounded by the input; what does not hold together is
 * reported, never guessed.
 */
import { type Json, toJson } from '../../wire/index.ts';
import { frameLayout } from './frames.ts';
import {
  NvspMessageType,
  NvspStatus,
  nvspAllocReceiveBuffer,
  nvspAllocReceiveBufferComplete,
  nvspFreeReceiveBuffer,
  nvspMessageInit,
  nvspMessageInitComplete,
  nvspReceiveBufferSection,
  nvspRevokeReceiveBuffer,
  nvspRevokeSendBuffer,
  nvspSendIndirectionTable,
  nvspSendNdisConfig,
  nvspSendNdisVersion,
  nvspSendReceiveBuffer,
  nvspSendReceiveBufferComplete,
  nvspSendRndisPacket,
  nvspSendRndisPacketComplete,
  nvspSendSendBuffer,
  nvspSendSendBufferComplete,
  nvspSendVfAssociation,
  nvspSubchannelRequest,
  nvspSwitchDataPath,
  nvspTypeName,
} from './protocol.ts';
import { emptyFrameInfo, type ParsedPacket, readPacket } from './rndis-message.ts';
import {
  Oid,
  oidName,
  PpiType,
  RNDIS_HEADER_SIZE,
  RndisMessageType,
  RndisStatus,
  rndisHaltRequest,
  rndisIndicateStatus,
  rndisInitializeComplete,
  rndisInitializeRequest,
  rndisKeepaliveComplete,
  rndisKeepaliveRequest,
  rndisPacket,
  rndisQueryComplete,
  rndisQueryRequest,
  rndisResetComplete,
  rndisResetRequest,
  rndisSetComplete,
  rndisSetRequest,
  rndisTypeName,
} from './rndis-protocol.ts';

export class NetDecodeError extends Error {
  override readonly name = 'DecodeError';
}

type AnyStruct = { size: number; read(bytes: Uint8Array, offset?: number): unknown; name: string };

const nvspBodies = new Map<number, AnyStruct>([
  [NvspMessageType.Init, nvspMessageInit],
  [NvspMessageType.InitComplete, nvspMessageInitComplete],
  [NvspMessageType.SendNdisVersion, nvspSendNdisVersion],
  [NvspMessageType.SendReceiveBuffer, nvspSendReceiveBuffer],
  [NvspMessageType.SendReceiveBufferComplete, nvspSendReceiveBufferComplete],
  [NvspMessageType.RevokeReceiveBuffer, nvspRevokeReceiveBuffer],
  [NvspMessageType.SendSendBuffer, nvspSendSendBuffer],
  [NvspMessageType.SendSendBufferComplete, nvspSendSendBufferComplete],
  [NvspMessageType.RevokeSendBuffer, nvspRevokeSendBuffer],
  [NvspMessageType.SendRndisPacket, nvspSendRndisPacket],
  [NvspMessageType.SendRndisPacketComplete, nvspSendRndisPacketComplete],
  [NvspMessageType.AllocReceiveBuffer, nvspAllocReceiveBuffer],
  [NvspMessageType.AllocReceiveBufferComplete, nvspAllocReceiveBufferComplete],
  [NvspMessageType.FreeReceiveBuffer, nvspFreeReceiveBuffer],
  [NvspMessageType.SendNdisConfig, nvspSendNdisConfig],
  [NvspMessageType.SendVfAssociation, nvspSendVfAssociation],
  [NvspMessageType.SwitchDataPath, nvspSwitchDataPath],
  [NvspMessageType.Subchannel, nvspSubchannelRequest],
  [NvspMessageType.SendIndirectionTable, nvspSendIndirectionTable],
]);

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

function u32s(bytes: Uint8Array, from: number, count: number): number[] {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: number[] = [];
  for (let i = 0; i < count && from + 4 * i + 4 <= bytes.length; i++)
    out.push(v.getUint32(from + 4 * i, true));
  return out;
}

/** An NVSP message: its type from the header, the body by type (40 bytes, or 8 for a receive completion). */
export function decodeNvsp(bytes: Uint8Array): Json {
  if (bytes.length < 4)
    throw new NetDecodeError(`an NVSP message needs at least 4 bytes, got ${bytes.length}`);
  const type = new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, true);
  const struct = nvspBodies.get(type);
  if (!struct) throw new NetDecodeError(`unknown NVSP message type ${type}`);
  const body = bytes.subarray(4);
  if (body.length < struct.size) {
    throw new NetDecodeError(
      `${struct.name} needs ${struct.size} bytes after the 4-byte header, got ${body.length}`,
    );
  }
  const out: Record<string, Json> = {
    msg_type: nvspTypeName(type),
    msg_type_value: type,
    struct:
      type === NvspMessageType.SendRndisPacketComplete && bytes.length === 8
        ? 'recv_comp_msg'
        : struct.name,
    size: bytes.length,
    ...(toJson(struct.read(body)) as Record<string, Json>),
  };
  if ('status' in out && typeof out.status === 'number')
    out.status_name = NvspStatus[out.status] ?? null;
  if (type === NvspMessageType.SendReceiveBufferComplete) {
    const count = Math.min(Number(out.num_sections) || 0, Math.floor((body.length - 8) / 16));
    out.sections = Array.from({ length: count }, (_, i) =>
      toJson(nvspReceiveBufferSection.read(body, 8 + 16 * i)),
    );
  } else if (type === NvspMessageType.SendIndirectionTable) {
    // The table sits `offset` bytes from the message's start (Linux reads it at 40 up to NVSP 6).
    const offset = Number(out.offset) || 0;
    const count = Math.min(Number(out.count) || 0, 64);
    const at = offset + 4 * count <= bytes.length ? offset : 40;
    out.table_at = at;
    out.table = u32s(bytes, at, count);
  } else if (type === NvspMessageType.SendRndisPacket) {
    const index = out.send_buf_section_index as number;
    out.channel =
      (out.channel_type as number) === 1
        ? 'control'
        : (out.channel_type as number) === 0
          ? 'data'
          : null;
    out.page_list = index === 0xffff_ffff;
  }
  return out;
}

const controlStructs = new Map<number, AnyStruct>([
  [RndisMessageType.Initialize, rndisInitializeRequest],
  [RndisMessageType.InitializeComplete, rndisInitializeComplete],
  [RndisMessageType.Halt, rndisHaltRequest],
  [RndisMessageType.Query, rndisQueryRequest],
  [RndisMessageType.QueryComplete, rndisQueryComplete],
  [RndisMessageType.Set, rndisSetRequest],
  [RndisMessageType.SetComplete, rndisSetComplete],
  [RndisMessageType.Reset, rndisResetRequest],
  [RndisMessageType.ResetComplete, rndisResetComplete],
  [RndisMessageType.IndicateStatus, rndisIndicateStatus],
  [RndisMessageType.Keepalive, rndisKeepaliveRequest],
  [RndisMessageType.KeepaliveComplete, rndisKeepaliveComplete],
]);

/** Per-packet info entries, each with its type's name and value. */
function ppis(body: Uint8Array, offset: number, length: number): Json[] {
  const v = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const out: Json[] = [];
  let at = offset;
  const end = Math.min(body.length, offset + length);
  while (at + 12 <= end) {
    const size = v.getUint32(at, true);
    const word = v.getUint32(at + 4, true);
    const ppiOffset = v.getUint32(at + 8, true);
    const entry: Record<string, Json> = {
      size,
      type: PpiType[word & 0x7fff_ffff] ?? word & 0x7fff_ffff,
      internal: word >>> 31,
      ppi_offset: ppiOffset,
    };
    if (ppiOffset >= 12 && size >= ppiOffset + 4 && at + ppiOffset + 4 <= end) {
      entry.value = v.getUint32(at + ppiOffset, true);
    }
    out.push(entry);
    if (size < 12) {
      out.push({
        problem: `an entry of size ${size} ends the list (Linux would not move past it)`,
      });
      break;
    }
    at += size;
  }
  return out;
}

function frameSummary(frame: Uint8Array): Json {
  const layout = frameLayout(frame);
  const out: Record<string, Json> = {
    length: frame.length,
    destination: hex(frame.subarray(0, 6)).replace(/(..)(?=.)/g, '$1:'),
    source: hex(frame.subarray(6, 12)).replace(/(..)(?=.)/g, '$1:'),
  };
  if (layout) {
    out.ip = layout.ipv6 ? 6 : 4;
    out.protocol = layout.protocol === 6 ? 'tcp' : layout.protocol === 17 ? 'udp' : layout.protocol;
    if (layout.l4HeaderLength > 0) {
      const v = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
      out.source_port = v.getUint16(layout.l4);
      out.destination_port = v.getUint16(layout.l4 + 2);
    }
  }
  out.head = hex(frame.subarray(0, 64));
  return out;
}

/** An RNDIS message: its type from the header, the body by type, info buffers and packets spelled out. */
export function decodeRndis(bytes: Uint8Array): Json {
  if (bytes.length < RNDIS_HEADER_SIZE) {
    throw new NetDecodeError(`an RNDIS message needs at least 8 bytes, got ${bytes.length}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const type = view.getUint32(0, true);
  const msgLen = view.getUint32(4, true);
  const out: Record<string, Json> = {
    ndis_msg_type: rndisTypeName(type),
    ndis_msg_type_value: type,
    msg_len: msgLen,
  };
  if (msgLen > bytes.length || msgLen < RNDIS_HEADER_SIZE) {
    throw new NetDecodeError(`msg_len ${msgLen} is outside 8..${bytes.length} (the bytes given)`);
  }
  const body = bytes.subarray(RNDIS_HEADER_SIZE, msgLen);
  if (type === RndisMessageType.Packet) {
    if (body.length < rndisPacket.size)
      throw new NetDecodeError(`rndis_packet needs ${rndisPacket.size} bytes, got ${body.length}`);
    Object.assign(out, {
      struct: rndisPacket.name,
      ...(toJson(rndisPacket.read(body)) as Record<string, Json>),
    });
    const p = rndisPacket.read(body);
    out.per_pkt_info = ppis(body, p.per_pkt_info_offset, p.per_pkt_info_len);
    const parsed: ParsedPacket = { dataOffset: 0, dataLength: 0, info: emptyFrameInfo() };
    const problem = readPacket(view, 0, msgLen, parsed);
    if (problem) out.problem = problem;
    else
      out.frame = frameSummary(
        bytes.subarray(parsed.dataOffset, parsed.dataOffset + parsed.dataLength),
      );
    return out;
  }
  const struct = controlStructs.get(type);
  if (!struct)
    throw new NetDecodeError(`unknown RNDIS message type 0x${(type >>> 0).toString(16)}`);
  if (body.length < struct.size)
    throw new NetDecodeError(`${struct.name} needs ${struct.size} bytes, got ${body.length}`);
  const fields = toJson(struct.read(body)) as Record<string, Json>;
  Object.assign(out, { struct: struct.name, ...fields });
  if (typeof fields.oid === 'number') out.oid_name = oidName(fields.oid);
  if (typeof fields.status === 'number') out.status_name = RndisStatus[fields.status] ?? null;
  const length = (fields.info_buflen ?? fields.status_buflen) as number | undefined;
  const offset = (fields.info_buf_offset ?? fields.status_buf_offset) as number | undefined;
  if (typeof length === 'number' && typeof offset === 'number' && length > 0) {
    if (offset > body.length || length > body.length - offset) {
      out.problem = `the information buffer ${offset}+${length} leaves the ${body.length}-byte body`;
    } else {
      const info = body.subarray(offset, offset + length);
      out.info_buf = hex(info);
      if (
        fields.oid === Oid.Ieee8023PermanentAddress ||
        (info.length === 6 && type === RndisMessageType.QueryComplete)
      ) {
        out.mac = hex(info).replace(/(..)(?=.)/g, '$1:');
      }
    }
  }
  return out;
}
