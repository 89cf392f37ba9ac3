import type { OfferParameters, VmbusDevice } from '../../vmbus/device.ts';
import { type IncomingPacket, PacketType, type Queue } from '../../vmbus/queue.ts';
import { ECHO_CLASS_ID, ECHO_RING_BYTES } from './protocol.ts';

export interface EchoStats {
  echoed: number;
  sunk: number;
  ignored: number;
}

/** The host side of the echo device: answers every request with its own payload. */
export class EchoVsp implements VmbusDevice {
  readonly offer: OfferParameters;
  readonly stats: EchoStats = { echoed: 0, sunk: 0, ignored: 0 };
  readonly channels = new Set<Queue>();

  constructor(instanceId: string = crypto.randomUUID()) {
    this.offer = {
      classId: ECHO_CLASS_ID,
      instanceId,
      sendRingBytes: ECHO_RING_BYTES,
      receiveRingBytes: ECHO_RING_BYTES,
    };
  }

  open(queue: Queue): void {
    this.channels.add(queue);
    // A responder: while answers wait for room, later requests stay in the ring.
    queue.configure({ pauseWhileBacklogged: true });
    queue.onPacket = (packet) => this.handle(queue, packet);
  }

  close(queue: Queue): void {
    queue.onPacket = undefined;
    this.channels.delete(queue);
  }

  private handle(queue: Queue, packet: IncomingPacket): void {
    if (packet.type !== PacketType.DataInband) {
      this.stats.ignored++;
      queue.drop(`packet type ${packet.type} is not in-band data`);
      return;
    }
    if (!packet.completionRequested) {
      this.stats.sunk++;
      return;
    }
    if (queue.sendCompletion(packet.transLo, packet.transHi, packet.payload()) !== 'closed') {
      this.stats.echoed++;
    }
  }
}
