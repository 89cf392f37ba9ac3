import type {
  ChannelOpenOptions,
  GuestChannel,
  GuestDevice,
  GuestOffer,
  GuestPages,
  VmbusDriver,
} from '../device.ts';
/** What a device needs of the bus driver that found it (VmbusClient). */
export interface DeviceChannels {
  readonly version: number;
  readonly pages: GuestPages;
  openChannel(relid: number, options: ChannelOpenOptions): Promise<GuestChannel>;
  createGpadl(relid: number, pfns: readonly number[]): Promise<number>;
  teardownGpadl(relid: number, handle: number): Promise<void>;
}

/** One offered device as a driver sees it. */
export class ClientDevice implements GuestDevice {
  driver: VmbusDriver | undefined;
  probing: Promise<void> | undefined;
  readonly subchannelListeners: ((device: GuestDevice) => void)[] = [];
  readonly subchannels: ClientDevice[] = [];

  constructor(
    private readonly client: DeviceChannels,
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
