import type { GuestChannel, GuestDevice, VmbusDriver } from '../../vmbus/device.ts';
import { PacketType, type RequestTable } from '../../vmbus/queue.ts';
import { ECHO_CLASS_ID, ECHO_MAX_PAYLOAD, ECHO_RING_BYTES } from './protocol.ts';

interface Pending {
  readonly resolve: (payload: Uint8Array) => void;
  readonly reject: (error: Error) => void;
}

/** Echo requests one channel keeps in flight. */
const ECHO_MAX_IN_FLIGHT = 256;

/** One bound echo device on the guest side. */
export class EchoChannel {
  readonly requests: RequestTable<Pending>;

  constructor(readonly channel: GuestChannel) {
    const queue = channel.queue;
    this.requests = queue.trackRequests<Pending>({
      capacity: ECHO_MAX_IN_FLIGHT,
      onCompletion: (pending, packet) =>
        pending.resolve(packet.payload().slice(0, packet.payloadLength)),
      onAbandon: (pending, reason) => pending.reject(new Error(`echo channel: ${reason}`)),
    });
    queue.onPacket = (packet) =>
      queue.drop(
        packet.type === PacketType.Completion
          ? 'a completion without a transaction id'
          : `packet type ${packet.type} is not a completion`,
      );
  }

  /** Host packets that answered nothing we asked: unknown ids and other packets. */
  get badCompletions(): number {
    const stats = this.channel.queue.stats;
    return stats.unknownCompletions + stats.dropped;
  }

  /**
   * Sends `payload` and resolves with what the host echoed (padded to 8
   * bytes, as the ring carries it). A full ring makes it wait its turn.
   */
  echo(payload: Uint8Array): Promise<Uint8Array> {
    if (payload.length > ECHO_MAX_PAYLOAD) {
      return Promise.reject(
        new RangeError(`echo payload of ${payload.length} bytes > ${ECHO_MAX_PAYLOAD}`),
      );
    }
    const queue = this.channel.queue;
    return new Promise<Uint8Array>((resolve, reject) => {
      const id = this.requests.allocate({ resolve, reject });
      if (id === 0) {
        reject(new Error('too many echo requests in flight'));
        return;
      }
      if (queue.sendInband(payload, id, 0, true) === 'closed') {
        this.requests.cancel(id);
        reject(new Error(`echo channel is ${queue.state}: ${queue.error}`));
      }
    });
  }

  /** Sends without asking for a completion (the host sinks it); false when the ring is full. */
  sink(payload: Uint8Array): boolean {
    return this.channel.queue.trySendInband(payload) === 'sent';
  }

  failAll(reason: string): void {
    for (const pending of this.requests.drain()) pending.reject(new Error(reason));
  }
}

/** The guest driver for the echo class. */
export class EchoDriver implements VmbusDriver {
  readonly name = 'hvkit_echo';
  readonly classId = ECHO_CLASS_ID;
  readonly bound = new Map<number, EchoChannel>();
  /** Called after each successful probe. */
  onBound: ((echo: EchoChannel) => void) | undefined;

  constructor(private readonly ringBytes = ECHO_RING_BYTES) {}

  async probe(device: GuestDevice): Promise<void> {
    const channel = await device.open({
      sendRingBytes: this.ringBytes,
      receiveRingBytes: this.ringBytes,
    });
    const echo = new EchoChannel(channel);
    this.bound.set(device.offer.relid, echo);
    this.onBound?.(echo);
  }

  async remove(device: GuestDevice): Promise<void> {
    const echo = this.bound.get(device.offer.relid);
    if (!echo) return;
    this.bound.delete(device.offer.relid);
    echo.failAll('echo device removed');
    await echo.channel.close();
  }
}
