/**
 * Hypervisor Top-Level Functional Specification (TLFS) definitions that the
 * VMBus needs: hypercall codes and statuses, SynIC message and event-flag
 * layouts, synthetic MSRs. Layouts follow Linux's include/hyperv/hvgdk_mini.h
 * and the TLFS sections "Hypercall Interface" and "Virtual Interrupt
 * Controller" (SynIC).
 */
import {
  bits,
  bytes,
  defineStruct,
  defineUnion,
  reserved,
  struct,
  u8,
  u16,
  u32,
  u64,
  union,
} from '../wire/index.ts';

export const PAGE_SIZE = 4096;
export const PAGE_SHIFT = 12;

/** Hypercall call codes (TLFS appendix "Hypercall Code Reference"). */
export enum HvCallCode {
  /** 0x5c: post a message to a connection's port (memory input). */
  PostMessage = 0x5c,
  /** 0x5d: signal an event on a connection's port (usually a fast call). */
  SignalEvent = 0x5d,
}

/** Control-word bits (TLFS "Hypercall Inputs"). */
export const HV_HYPERCALL_FAST_BIT = 1n << 16n;
export const HV_HYPERCALL_CODE_MASK = 0xffffn;

/** HV_STATUS values returned in the low 16 bits of the hypercall result. */
export enum HvStatus {
  /** 0x0000 */ Success = 0,
  /** 0x0002: unknown call code. */ InvalidHypercallCode = 2,
  /** 0x0003: reserved bits set in the control word or the input. */ InvalidHypercallInput = 3,
  /** 0x0004: input not 8-byte aligned or crossing a page. */ InvalidAlignment = 4,
  /** 0x0005: an input parameter is out of range. */ InvalidParameter = 5,
  /** 0x000b */ InsufficientMemory = 11,
  /** 0x0011 */ InvalidPortId = 17,
  /** 0x0012: no port is connected at that connection id. */ InvalidConnectionId = 18,
  /** 0x0013: the port's message queue is full. */ InsufficientBuffers = 19,
}

/** SynIC constants. */
export const HV_SYNIC_SINT_COUNT = 16;
export const HV_MESSAGE_SIZE = 256;
export const HV_MESSAGE_PAYLOAD_BYTE_COUNT = 240;
export const HV_EVENT_FLAGS_COUNT = 2048;
export const HV_EVENT_FLAGS_BYTE_COUNT = 256;
/** Messages a port queues before HvPostMessage answers INSUFFICIENT_BUFFERS. */
export const HV_PORT_MESSAGE_QUEUE_DEPTH = 16;

/** Message types in hv_message_header.message_type. */
export enum HvMessageType {
  /** 0x00000000: the slot is free. */ None = 0,
  /** 0x80000010 */ TimerExpired = 0x80000010,
}

/** Synthetic MSRs the guest programs (TLFS "SynIC MSRs"). */
export enum HvMsr {
  /** 0x40000080 */ Scontrol = 0x40000080,
  /** 0x40000081 */ Sversion = 0x40000081,
  /** 0x40000082: event flags page GPA | enable. */ Siefp = 0x40000082,
  /** 0x40000083: message page GPA | enable. */ Simp = 0x40000083,
  /** 0x40000084: end of message; any write asks for redelivery of a pending message. */ Eom = 0x40000084,
  /** 0x40000090 + n */ Sint0 = 0x40000090,
}

export const HV_SYNIC_SIMP_ENABLE = 1n;
export const HV_SYNIC_SIEFP_ENABLE = 1n;
export const HV_SYNIC_SINT_MASKED = 1n << 16n;

export const hvMessageHeader = defineStruct('hv_message_header', {
  message_type: u32,
  payload_size: u8,
  message_flags: bits(1, { msg_pending: 1, reserved: 7 }),
  reserved: reserved(2),
  $origin: union({ sender: u64, port: u32 }),
});

export const hvMessage = defineStruct('hv_message', {
  header: hvMessageHeader,
  u: struct({ payload: bytes(HV_MESSAGE_PAYLOAD_BYTE_COUNT) }),
});

/** Byte offsets used for in-place atomic access to a message slot. */
export const HV_MESSAGE_TYPE_OFFSET = hvMessage.offsetOf('header.message_type');
export const HV_MESSAGE_FLAGS_OFFSET = hvMessage.offsetOf('header.message_flags');
export const HV_MESSAGE_PAYLOAD_OFFSET = hvMessage.offsetOf('u.payload');
/** Bit of message_flags (and of the 32-bit word at offset 4) that says a message is pending. */
export const HV_MESSAGE_FLAG_PENDING = 1;

/** HvPostMessage input (TLFS "HvPostMessage"): 8-byte aligned, must not cross a page. */
export const hvInputPostMessage = defineStruct('hv_input_post_message', {
  connectionid: u32,
  reserved: reserved(4),
  message_type: u32,
  payload_size: u32,
  payload: bytes(HV_MESSAGE_PAYLOAD_BYTE_COUNT),
});

/** HvSignalEvent input; the fast form passes these 8 bytes in a register. */
export const hvInputSignalEvent = defineStruct('legacy_hv_input_signal_event', {
  connectionid: u32,
  flag_number: u16,
  rsvdz: reserved(2),
});

export const hvSynicSimp = defineUnion('hv_synic_simp', {
  as_uint64: u64,
  $bits: bits(8, { simp_enabled: 1, preserved: 11, base_simp_gpa: 52 }),
});

export const hvSynicSiefp = defineUnion('hv_synic_siefp', {
  as_uint64: u64,
  $bits: bits(8, { siefp_enabled: 1, preserved: 11, base_siefp_gpa: 52 }),
});

export const hvSynicSint = defineUnion('hv_synic_sint', {
  as_uint64: u64,
  $bits: bits(8, {
    vector: 8,
    reserved1: 8,
    masked: 1,
    auto_eoi: 1,
    polling: 1,
    as_intercept: 1,
    proxy: 1,
  }),
});

export const hvMonitorParameter = defineStruct('hv_monitor_parameter', {
  connectionid: u32,
  flagnumber: u16,
  rsvdz: reserved(2),
});

export const hvMonitorTriggerGroup = defineUnion('hv_monitor_trigger_group', {
  as_uint64: u64,
  $s: struct({ pending: u32, armed: u32 }),
});
