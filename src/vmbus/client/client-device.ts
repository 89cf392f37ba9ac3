import type {
  ChannelOpenOptions,
  GuestChannel,
  GuestDevice,
  GuestOffer,
  GuestPages,
  VmbusDriver,
} from '../device.ts';
import type { VmbusClient } from './vmbus-client.ts';

/** One offered device as a driver sees it. */
export class ClientDevice implements GuestDevice {
  driver: VmbusDriver | undefined;
  probing: Promise<void> | undefined;
  readonly subchannelListeners: ((device: GuestDevice) => void)[] = [];
  readonly subchannels: ClientDevice[] = [];

  constructor(
    private readonly client: VmbusClient,
    readonly offer: GuestOffer,
  ) {}

  get version(): number {
    return this.client.version;
  }

  get memory(): GuestPages {
    return this.client.pages;
  }

  open(options: ChannelOpenOptions): Promise<GuestChannel> {
    return this.client.openChannel(this.offer.relid, options);
  }

  onSubchannel(listener: (device: GuestDevice) => void): void {
    this.subchannelListeners.push(listener);
    for (const sub of this.subchannels) listener(sub);
  }

  createGpadl(pfns: readonly number[]): Promise<number> {
    return this.client.createGpadl(this.offer.relid, pfns);
  }

  teardownGpadl(handle: number): Promise<void> {
    return this.client.teardownGpadl(this.offer.relid, handle);
  }
}
