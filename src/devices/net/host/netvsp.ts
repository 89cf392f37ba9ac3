/**
 * The host's synthetic NIC (netvsp): the VMBus device of the NIC class, its
 * NVSP control path on the primary channel, its RNDIS device, and frames
 * between the guest and a backend.
 *
 * NVSP, in the order Linux's netvsc follows (netvsc_connect_vsp,
 * netvsc_init_buf): INIT (one version, min = max; the host answers the
 * newest version it accepts inside the range), NDIS_CONFIG (MTU and
 * capabilities, from NVSP 2 on, no completion) and NDIS_VERSION in either
 * order, SEND_RECV_BUF (the receive buffer's GPADL; NDIS_CONFIG must come
 * first from NVSP 2 on, since the MTU sizes the sections), SEND_SEND_BUF,
 * then RNDIS, and SUBCHANNEL from NVSP 5 on (never more than asked, nor more
 * than offered), after which the host sends its indirection table.
 *
 * Offloads: frames the guest leaves a TCP/UDP checksum or a large send to
 * are passed on as such when the backend takes them (a TAP with a virtio-net
 * header), else the host computes the checksum or segments the send itself.
 */
import type {
  DeviceBus,
  GuestMemoryAccess,
  MappedGpadl,
  OfferParameters,
  OpenRequest,
  VmbusDevice,
} from '../../../vmbus/device.ts';
import type { IncomingPacket, Queue } from '../../../vmbus/queue.ts';
import { RateLimitedLog } from '../../../vmbus/rate-limited-log.ts';
import type { FramePort } from '../frame-port.ts';
import { type NvspReader, nvspMessage } from '../nvsp-message.ts';
import {
  ALL_NVSP_VERSIONS,
  INDIRECTION_TABLE_OFFSET,
  NETVSC_MTU_MAX,
  NETVSC_MTU_MIN,
  NETVSC_RING_BYTES,
  NETVSC_SEND_SECTION_SIZE,
  NIC_CLASS_ID,
  NVSP_SUBCHANNEL_ALLOCATE,
  NvspMessageType,
  NvspStatus,
  NvspVersion,
  RndisChannelType,
  VRSS_SEND_TAB_SIZE,
  VscCapability,
} from '../protocol.ts';
import { buildIndicateStatus, readControl } from '../rndis-control.ts';
import { Oid, RndisMessageType, RndisStatus } from '../rndis-protocol.ts';
import { DataPath, type NicCounters } from './data-path.ts';
import { type ChannelCounters, NetvspChannel, type SendBuffer } from './netvsp-channel.ts';
import { ReceiveBuffer, sectionSizeFor } from './receive-buffer.ts';
import { type OffloadState, RndisDevice } from './rndis-device.ts';

export interface NetvspOptions {
  readonly instanceId?: string;
  /** The NIC's MAC address, 6 bytes. */
  readonly mac: Uint8Array;
  /** Largest MTU the guest may use (68..9000). */
  readonly mtu?: number;
  /** Channels the NIC can have: the primary plus sub-channels (vRSS). */
  readonly channels?: number;
  /** NVSP versions the host accepts (default: all six). */
  readonly versions?: readonly number[];
  readonly backend: FramePort;
  /** Link speed in bits per second (default 10 Gbit/s). */
  readonly linkSpeed?: number;
  readonly friendlyName?: string;
  /** Every frame, as it crossed (checksums filled in): for a capture. */
  readonly tap?: (direction: 'to-host' | 'to-guest', frame: Uint8Array) => void;
  readonly log?: (message: string) => void;
}

/** NVSP control steps as the host saw them on the primary channel, in order (for tests and logs). */
export interface NvspEvent {
  readonly type: number;
  readonly status?: number;
  readonly version?: number;
}

const MAX_EVENTS = 200;

export class NetvspDevice implements VmbusDevice {
  readonly offer: OfferParameters;
  readonly rndis: RndisDevice;
  readonly counters: NicCounters = {
    txFrames: 0,
    txBytes: 0,
    txLso: 0,
    txSegmented: 0,
    txChecksumsFilled: 0,
    rxFrames: 0,
    rxBytes: 0,
    rxDropped: 0,
    rxCoalesced: 0,
    badRndis: 0,
  };
  readonly events: NvspEvent[] = [];
  /** Negotiated NVSP version (0 before INIT). */
  version = 0;
  ndisVersion = 0;
  /** The MTU the guest announced in NDIS_CONFIG (0 before). */
  guestMtu = 0;
  capabilities = 0n;
  receiveBuffer: ReceiveBuffer | undefined;
  sendBuffer: (SendBuffer & { readonly mapping: MappedGpadl }) | undefined;
  readonly maxChannels: number;
  readonly mtu: number;
  private readonly versions: readonly number[];
  private bus: DeviceBus | undefined;
  private readonly channels = new Map<Queue, NetvspChannel>();
  /** Open channels by sub-channel index (0: the primary). */
  readonly byIndex: (NetvspChannel | undefined)[] = [];
  private subchannelsOffered = 0;
  private readonly logger: RateLimitedLog;
  private readonly data: DataPath;
  private started = false;

  constructor(private readonly options: NetvspOptions) {
    if (options.mac.length !== 6) throw new RangeError('a MAC address is 6 bytes');
    const mtu = options.mtu ?? 1500;
    if (!Number.isInteger(mtu) || mtu < NETVSC_MTU_MIN || mtu > NETVSC_MTU_MAX) {
      throw new RangeError(`MTU ${mtu} is outside ${NETVSC_MTU_MIN}..${NETVSC_MTU_MAX}`);
    }
    this.mtu = mtu;
    const channels = options.channels ?? 1;
    if (!Number.isInteger(channels) || channels < 1 || channels > 64) {
      throw new RangeError(`${channels} channels is outside 1..64`);
    }
    this.maxChannels = channels;
    this.versions = options.versions ?? ALL_NVSP_VERSIONS;
    this.offer = {
      classId: NIC_CLASS_ID,
      instanceId: options.instanceId ?? crypto.randomUUID(),
      sendRingBytes: NETVSC_RING_BYTES,
      receiveRingBytes: NETVSC_RING_BYTES,
      maxSubchannels: channels - 1,
    };
    this.logger = new RateLimitedLog(options.log ?? (() => {}));
    this.data = new DataPath(this, options);
    this.rndis = new RndisDevice(
      {
        mac: options.mac,
        mtu,
        linkSpeed: options.linkSpeed ?? 10_000_000_000,
        friendlyName: options.friendlyName ?? 'hvkit Network Adapter',
        maxChannels: channels,
      },
      () => this.version,
    );
  }

  get backend(): FramePort {
    return this.options.backend;
  }

  get memory(): GuestMemoryAccess {
    if (!this.bus) throw new Error('netvsp is not attached to a bus');
    return this.bus.memory;
  }

  get openChannels(): number {
    return this.channels.size;
  }

  attach(bus: DeviceBus): void {
    this.bus = bus;
  }

  open(queue: Queue, request: OpenRequest): void {
    const channel = new NetvspChannel(this, queue, request.subchannelIndex);
    this.channels.set(queue, channel);
    this.byIndex[request.subchannelIndex] = channel;
    this.rndis.channels = Math.max(this.rndis.channels, request.subchannelIndex + 1);
    if (request.subchannelIndex === 0) this.reset();
    if (!this.started) {
      this.started = true;
      this.options.backend.start(
        (frame, offload) => this.data.fromBackend(frame, offload),
        (up) => this.linkChanged(up),
      );
    }
  }

  close(queue: Queue): void {
    const channel = this.channels.get(queue);
    if (!channel) return;
    channel.close();
    this.channels.delete(queue);
    if (this.byIndex[channel.index] === channel) this.byIndex[channel.index] = undefined;
    if (channel.index === 0) this.reset();
  }

  /** A new primary channel (or none): the guest starts over. */
  private reset(): void {
    this.version = 0;
    this.guestMtu = 0;
    this.ndisVersion = 0;
    this.receiveBuffer?.mapping.release();
    this.receiveBuffer = undefined;
    this.sendBuffer?.mapping.release();
    this.sendBuffer = undefined;
    this.rndis.state = 'uninitialized';
    this.rndis.packetFilter = 0;
    this.rndis.rssTable = new Uint16Array(0);
    for (const key of Object.keys(this.rndis.offloads) as (keyof OffloadState)[]) {
      this.rndis.offloads[key] = false;
    }
    this.updateBackendOffloads();
  }

  /**
   * Whether frames of up to 64 KiB may come from the backend: only when the
   * guest takes them coalesced (RSC, NVSP 6.1 with the capability, enabled
   * in its offload parameters); otherwise the backend segments for it.
   */
  get coalescing(): { readonly v4: boolean; readonly v6: boolean } {
    const on = this.version >= NvspVersion.V61 && (this.capabilities & VscCapability.rsc) !== 0n;
    return { v4: on && this.rndis.offloads.rsc4, v6: on && this.rndis.offloads.rsc6 };
  }

  private updateBackendOffloads(): void {
    const { v4, v6 } = this.coalescing;
    this.options.backend.acceptLarge?.(v4 && v6);
  }

  private record(event: NvspEvent): void {
    if (this.events.length < MAX_EVENTS) this.events.push(event);
  }

  warn(message: string): void {
    this.logger.log(`netvsp: ${message}`);
  }

  // --- NVSP control ------------------------------------------------------------------

  control(channel: NetvspChannel, nvsp: NvspReader, packet: IncomingPacket): void {
    const type = nvsp.type;
    const reply = (bytes: Uint8Array): void => {
      if (packet.completionRequested)
        channel.sendControl(bytes, packet.transLo, packet.transHi, true);
    };
    if (channel.index !== 0) {
      this.record({ type, status: NvspStatus.Failure });
      channel.queue.drop(`NVSP ${type} on sub-channel ${channel.index}`);
      return;
    }
    switch (type) {
      case NvspMessageType.Init: {
        if (!nvsp.has(8)) {
          channel.queue.drop('an INIT without its versions');
          return;
        }
        const min = nvsp.u32(0);
        const max = nvsp.u32(4);
        const chosen = [...this.versions].sort((a, b) => b - a).find((v) => v >= min && v <= max);
        const ok = chosen !== undefined && !this.receiveBuffer;
        if (ok && chosen !== undefined) this.version = chosen;
        const status = ok ? NvspStatus.Success : NvspStatus.Failure;
        this.record({ type, status, version: max });
        reply(nvspMessage(NvspMessageType.InitComplete, ok ? (chosen ?? 0) : 0, 34, status));
        return;
      }
      case NvspMessageType.SendNdisConfig: {
        if (!nvsp.has(16) || this.version < NvspVersion.V2) {
          this.record({ type, status: NvspStatus.Failure });
          channel.queue.drop('NDIS_CONFIG before INIT or too short');
          return;
        }
        const mtu = nvsp.u32(0) - 14;
        this.guestMtu = Math.max(NETVSC_MTU_MIN, Math.min(this.mtu, mtu));
        this.capabilities = nvsp.u64(8);
        this.record({ type, status: NvspStatus.Success });
        return;
      }
      case NvspMessageType.SendNdisVersion: {
        if (!nvsp.has(8) || this.version === 0) {
          this.record({ type, status: NvspStatus.Failure });
          channel.queue.drop('NDIS_VERSION before INIT or too short');
          return;
        }
        this.ndisVersion = ((nvsp.u32(0) << 16) | (nvsp.u32(4) & 0xffff)) >>> 0;
        this.record({ type, status: NvspStatus.Success, version: this.ndisVersion });
        return;
      }
      case NvspMessageType.SendReceiveBuffer:
        reply(this.receiveBufferArrived(nvsp));
        return;
      case NvspMessageType.SendSendBuffer:
        reply(this.sendBufferArrived(nvsp));
        return;
      case NvspMessageType.RevokeReceiveBuffer:
        this.record({ type });
        this.receiveBuffer?.mapping.release();
        this.receiveBuffer = undefined;
        return;
      case NvspMessageType.RevokeSendBuffer:
        this.record({ type });
        this.sendBuffer?.mapping.release();
        this.sendBuffer = undefined;
        return;
      case NvspMessageType.Subchannel:
        reply(this.subchannels(nvsp, channel));
        return;
      default:
        this.record({ type, status: NvspStatus.Failure });
        if (packet.completionRequested) reply(nvspMessage(type, NvspStatus.Failure));
        else channel.queue.drop(`NVSP message type ${type} the host does not know`);
    }
  }

  private receiveBufferArrived(nvsp: NvspReader): Uint8Array {
    const type = NvspMessageType.SendReceiveBufferComplete;
    const fail = (why: string): Uint8Array => {
      this.warn(`receive buffer refused: ${why}`);
      this.record({ type: NvspMessageType.SendReceiveBuffer, status: NvspStatus.Failure });
      return nvspMessage(type, NvspStatus.Failure, 0);
    };
    if (!nvsp.has(6) || this.version === 0) return fail('before INIT');
    if (this.version >= NvspVersion.V2 && this.guestMtu === 0)
      return fail('no NDIS_CONFIG yet (it sizes the sections)');
    if (this.receiveBuffer) return fail('a receive buffer is already in use');
    const mapping = this.bus?.mapGpadl(nvsp.u32(0));
    if (!mapping) return fail(`GPADL 0x${nvsp.u32(0).toString(16)} is not one of this channel's`);
    if (!mapping.region) {
      mapping.release();
      return fail('the GPADL is not one range of whole pages');
    }
    const size = sectionSizeFor(this.guestMtu || 1500);
    const buffer = new ReceiveBuffer(mapping, mapping.region, size);
    if (buffer.count < 2) {
      mapping.release();
      return fail(`${mapping.byteCount} bytes hold fewer than two ${size}-byte sections`);
    }
    this.receiveBuffer = buffer;
    this.record({ type: NvspMessageType.SendReceiveBuffer, status: NvspStatus.Success });
    // One section covering the whole buffer: {offset 0, sub_alloc_size, num_sub_allocs, end_offset}.
    return nvspMessage(type, NvspStatus.Success, 1, 0, size, buffer.count, size * buffer.count);
  }

  private sendBufferArrived(nvsp: NvspReader): Uint8Array {
    const type = NvspMessageType.SendSendBufferComplete;
    const fail = (why: string): Uint8Array => {
      this.warn(`send buffer refused: ${why}`);
      this.record({ type: NvspMessageType.SendSendBuffer, status: NvspStatus.Failure });
      return nvspMessage(type, NvspStatus.Failure, 0);
    };
    if (!nvsp.has(6) || !this.receiveBuffer) return fail('before the receive buffer');
    if (this.sendBuffer) return fail('a send buffer is already in use');
    const mapping = this.bus?.mapGpadl(nvsp.u32(0));
    if (!mapping?.region) {
      mapping?.release();
      return fail('the GPADL is unknown or not one range of whole pages');
    }
    const count = Math.floor(mapping.region.length / NETVSC_SEND_SECTION_SIZE);
    this.sendBuffer = {
      mapping,
      region: mapping.region,
      sectionSize: NETVSC_SEND_SECTION_SIZE,
      count,
    };
    this.record({ type: NvspMessageType.SendSendBuffer, status: NvspStatus.Success });
    return nvspMessage(type, NvspStatus.Success, NETVSC_SEND_SECTION_SIZE);
  }

  private subchannels(nvsp: NvspReader, primary: NetvspChannel): Uint8Array {
    const type = NvspMessageType.Subchannel;
    if (this.version < NvspVersion.V5 || !nvsp.has(8) || nvsp.u32(0) !== NVSP_SUBCHANNEL_ALLOCATE) {
      this.record({ type, status: NvspStatus.Failure });
      return nvspMessage(type, NvspStatus.Failure, 0);
    }
    const asked = nvsp.u32(4);
    const granted = Math.min(asked, this.maxChannels - 1);
    if (granted > this.subchannelsOffered) {
      this.bus?.offerSubchannels(granted - this.subchannelsOffered);
      this.subchannelsOffered = granted;
    }
    this.rndis.channels = granted + 1;
    this.record({ type, status: NvspStatus.Success, version: granted });
    // Then the send indirection table: transmit queue i goes to channel i mod n.
    setImmediate(() => this.sendIndirectionTable(primary, granted + 1));
    return nvspMessage(type, NvspStatus.Success, granted);
  }

  private sendIndirectionTable(primary: NetvspChannel, channels: number): void {
    const bytes = new Uint8Array(INDIRECTION_TABLE_OFFSET + 4 * VRSS_SEND_TAB_SIZE);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, NvspMessageType.SendIndirectionTable, true);
    view.setUint32(4, VRSS_SEND_TAB_SIZE, true);
    view.setUint32(8, INDIRECTION_TABLE_OFFSET, true);
    for (let i = 0; i < VRSS_SEND_TAB_SIZE; i++) {
      view.setUint32(INDIRECTION_TABLE_OFFSET + 4 * i, i % channels, true);
    }
    if (!primary.closed) primary.sendControl(bytes);
  }

  // --- RNDIS from the guest ------------------------------------------------------------

  /** One or more RNDIS messages back to back (a batched send section). Returns the NVSP status. */
  rndisMessages(
    channel: NetvspChannel,
    _type: RndisChannelType,
    bytes: Uint8Array,
    length: number,
  ): number {
    const view = new DataView(bytes.buffer, bytes.byteOffset, length);
    let at = 0;
    let status = NvspStatus.Success;
    for (let n = 0; at + 8 <= length && n < 64; n++) {
      const messageType = view.getUint32(at, true);
      const msgLen = view.getUint32(at + 4, true);
      if (msgLen < 8 || msgLen > length - at) {
        this.counters.badRndis++;
        return NvspStatus.InvalidRndisPacket;
      }
      if (messageType === RndisMessageType.Packet) {
        if (!this.data.fromGuest(view, at, msgLen)) status = NvspStatus.InvalidRndisPacket;
      } else {
        this.controlMessage(channel, bytes.slice(at, at + msgLen));
      }
      at += msgLen;
    }
    return status;
  }

  private controlMessage(channel: NetvspChannel, message: Uint8Array): void {
    const m = readControl(message);
    if (typeof m === 'string') {
      this.counters.badRndis++;
      this.warn(`RNDIS control message refused: ${m}`);
      return;
    }
    const answer = this.rndis.handle(m);
    if (m.type === RndisMessageType.Set && m.oid === Oid.TcpOffloadParameters)
      this.updateBackendOffloads();
    if (!answer) return;
    const primary = this.byIndex[0] ?? channel;
    if (!this.deliverControl(primary, answer)) this.warn('no receive section for an RNDIS answer');
  }

  private deliverControl(channel: NetvspChannel, message: Uint8Array): boolean {
    return channel.deliver(RndisChannelType.Control, (buffer, section) => {
      const n = Math.min(message.length, buffer.sectionSize);
      buffer.write(section, 0, message, 0, n);
      return n;
    });
  }

  sectionsFreed(): void {
    this.options.backend.resume();
  }

  private linkChanged(up: boolean): void {
    if (this.rndis.link === up) return;
    this.rndis.link = up;
    const primary = this.byIndex[0];
    if (!primary || this.rndis.state !== 'initialized') return;
    this.deliverControl(
      primary,
      buildIndicateStatus(up ? RndisStatus.MediaConnect : RndisStatus.MediaDisconnect),
    );
  }

  // --- status ---------------------------------------------------------------------------

  channelCounters(): (ChannelCounters & { outstanding: number })[] {
    return [...this.channels.values()]
      .map((c) => ({ ...c.counters, outstanding: c.outstanding }))
      .sort((a, b) => a.index - b.index);
  }

  describe(): Record<string, unknown> {
    return {
      nvsp: this.version,
      ndis: this.ndisVersion,
      mtu: this.guestMtu,
      channels: this.channels.size,
      rndis: this.rndis.state,
      packetFilter: this.rndis.packetFilter,
      offloads: { ...this.rndis.offloads },
      rss: this.rndis.rssTable.length > 0,
      receiveSections: this.receiveBuffer
        ? {
            size: this.receiveBuffer.sectionSize,
            count: this.receiveBuffer.count,
            inUse: this.receiveBuffer.inUse,
          }
        : null,
      sendSections: this.sendBuffer ? this.sendBuffer.count : 0,
      ...this.counters,
      backend: { name: this.options.backend.name, ...this.options.backend.stats() },
    };
  }
}
