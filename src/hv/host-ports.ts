import { takeFlagBits } from './flag-bits.ts';
import { HV_MESSAGE_PAYLOAD_BYTE_COUNT, HV_PORT_MESSAGE_QUEUE_DEPTH } from './protocol.ts';
import {
  MAX_EVENT_PORTS,
  MAX_MESSAGE_PORTS,
  PortKind,
  type SharedState,
  W_HOST_DOORBELL,
} from './shared-state.ts';

/** A message the guest posted, copied out of the port queue into host memory. */
export interface PostedMessage {
  readonly connectionId: number;
  readonly messageType: number;
  /** Exactly payload_size bytes (<= 240). */
  readonly payload: Uint8Array;
}

export type MessageHandler = (message: PostedMessage) => void;
export type EventHandler = () => void;

/**
 * The host's side of the partition's ports: message ports that receive what
 * the guest posts with HvPostMessage, event ports that HvSignalEvent sets,
 * and the loop that waits on the host doorbell (Atomics.waitAsync, so the
 * host's event loop stays free) and dispatches them.
 */
export class HostPorts {
  private readonly messageHandlers: (MessageHandler | undefined)[] = [];
  private readonly eventHandlers: (EventHandler | undefined)[] = [];
  private readonly messageConnections: number[] = [];
  private readonly eventConnections: number[] = [];
  private readonly scratch = new Uint8Array(256);
  private running = false;
  private keepAlive: ReturnType<typeof setInterval> | undefined;
  private loopDone: Promise<void> = Promise.resolve();
  private eventsHandled = 0;
  /** Dispatches one signalled event port (bound once: no closure per wake-up). */
  private readonly dispatchEvent = (port: number): void => {
    const handler = this.eventHandlers[port];
    if (handler) {
      this.eventsHandled++;
      this.guard(handler, undefined);
    }
  };

  /** Where a handler's exception goes; the dispatch loop itself never dies of one. */
  onHandlerError: (error: Error) => void = (error) =>
    console.error(`hv: port handler failed: ${error.stack}`);

  private guard<A>(handler: (argument: A) => void, argument: A): void {
    try {
      handler(argument);
    } catch (error) {
      this.onHandlerError(error as Error);
    }
  }
  /** Called on every wake-up before ports are drained (EOM handling etc.). */
  onWake: (() => void) | undefined;

  constructor(private readonly state: SharedState) {}

  /** Creates a message port and connects it at `connectionId`. */
  openMessagePort(connectionId: number, handler: MessageHandler): void {
    let port = this.messageHandlers.indexOf(undefined);
    if (port < 0) port = this.messageHandlers.length;
    if (port >= MAX_MESSAGE_PORTS) throw new Error('no free message port');
    const { i32 } = this.state;
    Atomics.store(i32, this.state.messagePortHeadWord(port), 0);
    Atomics.store(i32, this.state.messagePortTailWord(port), 0);
    for (let s = 0; s < HV_PORT_MESSAGE_QUEUE_DEPTH; s++) {
      Atomics.store(i32, this.state.messagePortReadyWord(port, s), 0);
    }
    this.state.connect(connectionId, PortKind.Message, port);
    this.messageHandlers[port] = handler;
    this.messageConnections[port] = connectionId;
  }

  closeMessagePort(connectionId: number): void {
    const port = this.messageConnections.indexOf(connectionId);
    if (port < 0) return;
    this.state.disconnect(connectionId);
    this.messageHandlers[port] = undefined;
    this.messageConnections[port] = -1;
  }

  /** Creates an event port and connects it at `connectionId`. */
  openEventPort(connectionId: number, handler: EventHandler): void {
    let port = this.eventHandlers.findIndex((h, i) => h === undefined && i > 0);
    if (port < 0) port = Math.max(1, this.eventHandlers.length);
    if (port >= MAX_EVENT_PORTS) throw new Error('no free event port');
    Atomics.and(this.state.i32, this.state.eventWord(port), ~(1 << (port & 31)));
    this.state.connect(connectionId, PortKind.Event, port);
    this.eventHandlers[port] = handler;
    this.eventConnections[port] = connectionId;
  }

  closeEventPort(connectionId: number): void {
    const port = this.eventConnections.indexOf(connectionId);
    if (port < 0) return;
    this.state.disconnect(connectionId);
    this.eventHandlers[port] = undefined;
    this.eventConnections[port] = -1;
  }

  isConnected(connectionId: number): boolean {
    return this.state.lookupConnection(connectionId) !== undefined;
  }

  /** Drains every message port and event port once. Returns the number of items handled. */
  poll(): number {
    let handled = 0;
    this.onWake?.();
    const { i32, u8 } = this.state;
    for (let port = 0; port < this.messageHandlers.length; port++) {
      const handler = this.messageHandlers[port];
      if (!handler) continue;
      const headWord = this.state.messagePortHeadWord(port);
      for (;;) {
        const head = Atomics.load(i32, headWord);
        const slotIndex = head & (HV_PORT_MESSAGE_QUEUE_DEPTH - 1);
        const readyWord = this.state.messagePortReadyWord(port, slotIndex);
        if (Atomics.load(i32, readyWord) === 0) break;
        const slot = this.state.messagePortSlot(port, slotIndex);
        this.scratch.set(u8.subarray(slot, slot + 256));
        Atomics.store(i32, readyWord, 0);
        Atomics.store(i32, headWord, (head + 1) | 0);
        const dv = new DataView(this.scratch.buffer);
        const size = Math.min(dv.getUint32(4, true), HV_MESSAGE_PAYLOAD_BYTE_COUNT);
        handled++;
        this.guard(handler, {
          connectionId: Number(dv.getBigUint64(8, true)),
          messageType: dv.getUint32(0, true),
          payload: this.scratch.slice(16, 16 + size),
        });
      }
    }
    this.eventsHandled = 0;
    takeFlagBits(
      i32,
      this.state.eventWordIndex(0),
      Math.ceil(this.eventHandlers.length / 32),
      this.dispatchEvent,
    );
    return handled + this.eventsHandled;
  }

  /** Runs the dispatch loop until stop(). */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.keepAlive = setInterval(() => {}, 1 << 30);
    this.loopDone = this.loop();
  }

  private async loop(): Promise<void> {
    const { i32 } = this.state;
    while (this.running) {
      const seq = Atomics.load(i32, W_HOST_DOORBELL);
      this.poll();
      if (!this.running) break;
      if (Atomics.load(i32, W_HOST_DOORBELL) !== seq) {
        // More arrived while we were dispatching; let I/O callbacks run first.
        await new Promise((resolve) => setImmediate(resolve));
        continue;
      }
      const wait = Atomics.waitAsync(i32, W_HOST_DOORBELL, seq);
      if (wait.async) await wait.value;
    }
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    clearInterval(this.keepAlive);
    this.state.ringHostDoorbell();
    await this.loopDone;
  }
}
