import type { GuestMemory } from './guest-memory.ts';
import {
  HV_HYPERCALL_CODE_MASK,
  HV_HYPERCALL_FAST_BIT,
  HV_MESSAGE_PAYLOAD_BYTE_COUNT,
  HV_PORT_MESSAGE_QUEUE_DEPTH,
  HvCallCode,
  HvStatus,
  hvInputPostMessage,
  PAGE_SIZE,
} from './protocol.ts';
import { PortKind, type SharedState, W_POSTS, W_POSTS_REFUSED, W_SIGNALS } from './shared-state.ts';

const POST_INPUT_SIZE = hvInputPostMessage.size;
const CONNECTION_ID_MASK = 0xffffff;

/**
 * The hypervisor's handling of the two hypercalls VMBus uses, executed on the
 * calling guest VP's thread. Inputs are read from guest memory exactly as
 * the TLFS lays them out and every field is validated; the result is an
 * HV_STATUS in the low 16 bits, as a real hypercall returns it.
 */
export class Hypercalls {
  constructor(
    private readonly memory: GuestMemory,
    private readonly state: SharedState,
  ) {}

  /**
   * The hypercall instruction: control word (call code in bits 0..15, fast
   * bit 16), then the input and output parameters — GPAs for memory calls,
   * the register values themselves for fast calls.
   */
  call(control: bigint, input: bigint, _output = 0n): bigint {
    const code = Number(control & HV_HYPERCALL_CODE_MASK);
    const fast = (control & HV_HYPERCALL_FAST_BIT) !== 0n;
    // Rep counts, variable headers and nesting are not used by these calls.
    if ((control & ~(HV_HYPERCALL_CODE_MASK | HV_HYPERCALL_FAST_BIT)) !== 0n) {
      return BigInt(HvStatus.InvalidHypercallInput);
    }
    switch (code) {
      case HvCallCode.PostMessage:
        if (fast) return BigInt(HvStatus.InvalidHypercallInput);
        return BigInt(this.postMessage(input));
      case HvCallCode.SignalEvent:
        return BigInt(fast ? this.signalEvent(input) : this.signalEventFromMemory(input));
      default:
        return BigInt(HvStatus.InvalidHypercallCode);
    }
  }

  /** HvPostMessage: queue a message on the port connected at the given connection id. */
  postMessage(inputGpa: bigint): HvStatus {
    if (inputGpa % 8n !== 0n) return HvStatus.InvalidAlignment;
    if ((inputGpa % BigInt(PAGE_SIZE)) + BigInt(POST_INPUT_SIZE) > BigInt(PAGE_SIZE)) {
      return HvStatus.InvalidAlignment;
    }
    const gpa = Number(inputGpa);
    if (!this.memory.contains(gpa, POST_INPUT_SIZE)) return HvStatus.InvalidParameter;

    const view = this.memory.dataView;
    const connectionWord = view.getUint32(gpa, true);
    const reservedWord = view.getUint32(gpa + 4, true);
    const messageType = view.getUint32(gpa + 8, true);
    const payloadSize = view.getUint32(gpa + 12, true);
    if (reservedWord !== 0 || connectionWord > CONNECTION_ID_MASK) {
      return HvStatus.InvalidHypercallInput;
    }
    // Message types with the high bit set are reserved for the hypervisor.
    if (messageType === 0 || messageType >= 0x80000000) return HvStatus.InvalidParameter;
    if (payloadSize > HV_MESSAGE_PAYLOAD_BYTE_COUNT) return HvStatus.InvalidParameter;

    const target = this.state.lookupConnection(connectionWord);
    if (!target || target.kind !== PortKind.Message) return HvStatus.InvalidConnectionId;

    const status = this.enqueue(
      target.port,
      connectionWord,
      messageType,
      this.memory.u8.subarray(gpa + 16, gpa + 16 + payloadSize),
    );
    this.state.count(status === HvStatus.Success ? W_POSTS : W_POSTS_REFUSED);
    return status;
  }

  private enqueue(
    port: number,
    connectionId: number,
    messageType: number,
    payload: Uint8Array,
  ): HvStatus {
    const { i32, u8 } = this.state;
    const headWord = this.state.messagePortHeadWord(port);
    const tailWord = this.state.messagePortTailWord(port);
    for (;;) {
      const tail = Atomics.load(i32, tailWord);
      const head = Atomics.load(i32, headWord);
      if (((tail - head) | 0) >= HV_PORT_MESSAGE_QUEUE_DEPTH) return HvStatus.InsufficientBuffers;
      if (Atomics.compareExchange(i32, tailWord, tail, (tail + 1) | 0) !== tail) continue;
      const slotIndex = tail & (HV_PORT_MESSAGE_QUEUE_DEPTH - 1);
      const slot = this.state.messagePortSlot(port, slotIndex);
      // Slot layout follows hv_message: type, size, flags, port, payload.
      const dv = new DataView(this.state.buffer, slot, 256);
      dv.setUint32(0, messageType, true);
      dv.setUint32(4, payload.length, true);
      dv.setBigUint64(8, BigInt(connectionId), true);
      u8.set(payload, slot + 16);
      u8.fill(0, slot + 16 + payload.length, slot + 256);
      Atomics.store(i32, this.state.messagePortReadyWord(port, slotIndex), 1);
      this.state.ringHostDoorbell();
      return HvStatus.Success;
    }
  }

  /**
   * HvSignalEvent, fast form: the 64-bit input is connection id (bits 0..31,
   * of which 24 are the id) and flag number (bits 32..47); bits 48..63 are
   * reserved and must be zero.
   */
  signalEvent(input: bigint): HvStatus {
    const connectionWord = Number(input & 0xffffffffn);
    const flagNumber = Number((input >> 32n) & 0xffffn);
    if (input >> 48n !== 0n || connectionWord > CONNECTION_ID_MASK) {
      return HvStatus.InvalidHypercallInput;
    }
    const target = this.state.lookupConnection(connectionWord);
    if (!target || target.kind !== PortKind.Event) return HvStatus.InvalidConnectionId;
    if (flagNumber >= 2048) return HvStatus.InvalidParameter;
    const word = this.state.eventWord(target.port);
    const bit = 1 << (target.port & 31);
    const old = Atomics.or(this.state.i32, word, bit);
    this.state.count(W_SIGNALS);
    if ((old & bit) === 0) this.state.ringHostDoorbell();
    return HvStatus.Success;
  }

  private signalEventFromMemory(inputGpa: bigint): HvStatus {
    if (inputGpa % 8n !== 0n) return HvStatus.InvalidAlignment;
    const gpa = Number(inputGpa);
    if (!this.memory.contains(gpa, 8)) return HvStatus.InvalidParameter;
    return this.signalEvent(this.memory.dataView.getBigUint64(gpa, true));
  }
}
