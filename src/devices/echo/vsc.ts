import type { GuestChannel, GuestDevice, VmbusDriver } from '../../vmbus/device.ts';
import { inbandPacketLength } from '../../vmbus/packet.ts';
import { Requestor } from '../../vmbus/requestor.ts';
import { PacketType } from '../../vmbus/ring-protocol.ts';
import { ECHO_CLASS_ID, ECHO_MAX_PAYLOAD, ECHO_RING_BYTES } from './protocol.ts';

interface Pending {
  readonly resolve: (payload: Uint8Array) => void;
  readonly reject: (error: Error) => void;
}

/** One bound echo device on the guest side. */
export class EchoChannel {
  readonly requests: Requestor<Pending>;
  badCompletions = 0;

  constructor(readonly channel: GuestChannel) {
    this.requests = new Requestor<Pending>(256);
    channel.endpoint.onPacket = (packet) => {
      if (packet.type !== PacketType.Completion) {
        this.badCompletions++;
        return true;
      }
      const pending = this.requests.complete(packet.transLo, packet.transHi);
      if (!pending) {
        this.badCompletions++;
        return true;
      }
      pending.resolve(packet.payload().slice(0, packet.payloadLength));
      return true;
    };
  }

  /**
   * Sends `payload` and resolves with what the host echoed (padded to 8
   * bytes, as the ring carries it). Waits for ring space when full.
   */
  async echo(payload: Uint8Array): Promise<Uint8Array> {
    if (payload.length > ECHO_MAX_PAYLOAD) {
      throw new RangeError(`echo payload of ${payload.length} bytes > ${ECHO_MAX_PAYLOAD}`);
    }
    const endpoint = this.channel.endpoint;
    return new Promise<Uint8Array>((resolve, reject) => {
      const id = this.requests.allocate({ resolve, reject });
      if (id === 0) {
        reject(new Error('too many echo requests in flight'));
        return;
      }
      const attempt = async (): Promise<void> => {
        for (;;) {
          const result = endpoint.sendInband(payload, id, 0, true);
          if (result === 'ok') return;
          if (
            result === 'corrupt' ||
            !(await endpoint.waitForSpace(inbandPacketLength(payload.length)))
          ) {
            this.requests.complete(id);
            reject(new Error(`echo channel is ${endpoint.state}: ${endpoint.error}`));
            return;
          }
        }
      };
      void attempt();
    });
  }

  /** Sends without asking for a completion (the host sinks it). */
  sink(payload: Uint8Array): boolean {
    return this.channel.endpoint.sendInband(payload, 0, 0, false) === 'ok';
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
