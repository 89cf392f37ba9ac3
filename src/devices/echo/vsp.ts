import type { ChannelEndpoint } from '../../vmbus/channel.ts';
import type { OfferParameters, VmbusDevice } from '../../vmbus/device.ts';
import type { PacketView } from '../../vmbus/packet.ts';
import { PacketType } from '../../vmbus/ring-protocol.ts';
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
  readonly channels = new Set<ChannelEndpoint>();

  constructor(instanceId: string = crypto.randomUUID()) {
    this.offer = {
      classId: ECHO_CLASS_ID,
      instanceId,
      sendRingBytes: ECHO_RING_BYTES,
      receiveRingBytes: ECHO_RING_BYTES,
    };
  }

  open(channel: ChannelEndpoint): void {
    this.channels.add(channel);
    channel.onPacket = (packet) => this.handle(channel, packet);
  }

  close(channel: ChannelEndpoint): void {
    channel.onPacket = undefined;
    this.channels.delete(channel);
  }

  private handle(channel: ChannelEndpoint, packet: PacketView): boolean {
    if (packet.type !== PacketType.DataInband) {
      this.stats.ignored++;
      return true;
    }
    if (!packet.completionRequested) {
      this.stats.sunk++;
      return true;
    }
    const result = channel.sendCompletion(packet.transLo, packet.transHi, packet.payload());
    if (result === 'full') return false; // retried when the guest frees room
    if (result === 'ok') this.stats.echoed++;
    return true;
  }
}
