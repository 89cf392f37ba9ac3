/**
 * The guest's netvsc: the driver of the synthetic NIC (Linux
 * drivers/net/hyperv). For each NIC the host offers it opens the primary
 * channel, runs the NVSP handshake and posts its receive and send buffers
 * (nvsp-handshake.ts), brings RNDIS up (rndis-setup.ts), asks for
 * sub-channels from NVSP 5 on and opens them, sets RSS over them, and on
 * open sets the packet filter. Then frames move between the host and the
 * guest's port — the operating system's side of the NIC: received frames
 * go to the port with the checksum facts the host gave, the port's frames
 * go out through the transmit path (transmit.ts).
 *
 * Removal, in Linux's order (rndis_filter_device_remove,
 * netvsc_device_remove): packet filter 0, RNDIS HALT, revoke the receive
 * and send buffers, close the sub-channels and the primary, tear the
 * GPADLs down.
 */
import { ChannelSet } from '../../../vmbus/channel-set.ts';
import type { GuestDevice, VmbusDriver } from '../../../vmbus/device.ts';
import type { FrameOffload, FramePort } from '../frame-port.ts';
import { nvspMessage } from '../nvsp-message.ts';
import {
  LINUX_NVSP_VERSION_ORDER,
  NETVSC_MTU_MAX,
  NETVSC_MTU_MIN,
  NETVSC_RECEIVE_BUFFER_DEFAULT,
  NETVSC_RECEIVE_BUFFER_ID,
  NETVSC_RING_BYTES,
  NETVSC_SEND_BUFFER_DEFAULT,
  NETVSC_SEND_BUFFER_ID,
  NIC_CLASS_ID,
  NvspMessageType,
  NvspStatus,
  NvspVersion,
  nvspVersionString,
  RndisChannelType,
  VRSS_CHANNEL_MAX,
} from '../protocol.ts';
import { buildSimpleRequest, type ControlMessage, readControl } from '../rndis-control.ts';
import { NdisPacketType, RndisMessageType, RndisStatus } from '../rndis-protocol.ts';
import { BouncePool, SendSections, SharedPages } from './guest-buffers.ts';
import { type GuestChannelCounters, NetvscChannel } from './netvsc-channel.ts';
import {
  allocateSubchannels,
  type InitStep,
  NetvscError,
  negotiateVersion,
  postReceiveBuffer,
  postSendBuffer,
  sendNdisSettings,
} from './nvsp-handshake.ts';
import { type ReceiveCounters, Receiver } from './receive.ts';
import { RndisClient } from './rndis-client.ts';
import {
  type GuestOffloads,
  noGuestOffloads,
  type OffloadWish,
  RndisSetup,
} from './rndis-setup.ts';
import { type TransmitCounters, Transmitter } from './transmit.ts';

export interface NetvscOptions {
  /** NVSP versions to propose, newest first (default Linux's: 6.1, 6, 5, 4, 2, 1). */
  readonly versionOrder?: readonly number[];
  /** The MTU the guest wants (68..9000; a smaller one from the host wins). */
  readonly mtu?: number;
  /** Most channels to use, the primary included (default: all the host offers). */
  readonly channels?: number;
  readonly receiveBufferBytes?: number;
  readonly sendBufferBytes?: number;
  /** Offloads to ask the host for (default: checksums and LSO). */
  readonly offloads?: OffloadWish;
  readonly timeoutMs?: number;
  readonly log?: (message: string) => void;
  /** The NIC is up: the VM gives it its port (the guest's eth0). */
  readonly onUp?: (nic: NetvscNic) => Promise<void> | void;
  /** The NIC is going away (rescinded or the bus unloading). */
  readonly onDown?: (nic: NetvscNic) => Promise<void> | void;
}

export type NicState = 'starting' | 'ready' | 'failed' | 'removed';

/** Large sends (64 KiB of TCP plus headers and RNDIS) fit a bounce buffer of this size. */
const BOUNCE_BYTES = 68 * 1024;
const BOUNCE_BUFFERS = 16;

export class NetvscNic {
  readonly channels = new ChannelSet<NetvscChannel>({
    load: (c) => c.inFlight,
    usable: (c) => !c.closed && c.hasRoom,
  });
  readonly steps: InitStep[] = [];
  state: NicState = 'starting';
  error = '';
  version = 0;
  ndisVersion = 0;
  mtu: number;
  mac: Uint8Array = new Uint8Array(6);
  friendlyName = '';
  link = false;
  linkSpeed = 0;
  offloads: GuestOffloads = noGuestOffloads();
  /** The host's send table (16 channel indices), and the RSS table the guest set. */
  sendTable: number[] = [];
  rssTable: number[] = [];
  receiveBuffer: SharedPages | undefined;
  receiveSectionSize = 0;
  receiveSectionCount = 0;
  sections: SendSections | undefined;
  bounce: BouncePool | undefined;
  maxPacketsPerMessage = 1;
  packetAlignment = 8;
  readonly counters: TransmitCounters & ReceiveCounters = {
    txFrames: 0,
    txBytes: 0,
    txLso: 0,
    txSegmented: 0,
    txChecksumOffloaded: 0,
    txChecksumsFilled: 0,
    txBounced: 0,
    txDropped: 0,
    rxFrames: 0,
    rxBytes: 0,
    rxDropped: 0,
    rxChecksumValid: 0,
    rxCoalesced: 0,
    badRndis: 0,
    linkChanges: 0,
  };
  private port: FramePort | undefined;
  private readonly rndis: RndisClient;
  private readonly setup: () => RndisSetup;
  private readonly transmitter: Transmitter;
  private readonly receiver: Receiver;
  private blocked = false;
  private wantedSubchannels = 0;
  private readonly subchannelWaiters: (() => void)[] = [];
  private readonly log: (message: string) => void;
  private readonly timeoutMs: number;

  constructor(
    readonly device: GuestDevice,
    private readonly options: NetvscOptions = {},
  ) {
    const mtu = options.mtu ?? 1500;
    if (!Number.isInteger(mtu) || mtu < NETVSC_MTU_MIN || mtu > NETVSC_MTU_MAX) {
      throw new RangeError(`MTU ${mtu} is outside ${NETVSC_MTU_MIN}..${NETVSC_MTU_MAX}`);
    }
    this.mtu = mtu;
    this.log = options.log ?? (() => {});
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.rndis = new RndisClient((message) => this.sendControl(message), this.timeoutMs);
    this.setup = () => new RndisSetup(this.rndis, this.version, this.steps);
    this.transmitter = new Transmitter(this);
    this.receiver = new Receiver(this);
  }

  get instanceId(): string {
    return this.device.offer.instanceId;
  }

  get primary(): NetvscChannel | undefined {
    return this.channels.get(0);
  }

  /** A readable MAC, "00:15:5d:...". */
  get macString(): string {
    return [...this.mac].map((b) => b.toString(16).padStart(2, '0')).join(':');
  }

  private get gone(): boolean {
    return this.state === 'removed' || this.state === 'failed';
  }

  // --- bring-up -----------------------------------------------------------------------

  async start(): Promise<void> {
    const order = this.options.versionOrder ?? LINUX_NVSP_VERSION_ORDER;
    if (order.length === 0) throw new NetvscError('no NVSP version to propose');
    const channel = await this.device.open({
      sendRingBytes: NETVSC_RING_BYTES,
      receiveRingBytes: NETVSC_RING_BYTES,
    });
    const primary = new NetvscChannel(this, channel.queue, 0);
    this.channels.add(primary);
    this.closers.set(0, () => channel.close());
    try {
      this.version = await negotiateVersion(primary, order, this.timeoutMs, this.steps);
      const wish = this.options.offloads ?? { checksum: true, lso: true };
      this.ndisVersion = sendNdisSettings(
        primary,
        this.version,
        this.mtu,
        this.steps,
        wish.rsc ?? true,
      );
      await this.postBuffers(primary);
      const facts = await this.setup().bringUp(
        this.mtu,
        this.options.offloads ?? { checksum: true, lso: true },
      );
      this.maxPacketsPerMessage = facts.maxPacketsPerMessage;
      this.packetAlignment = facts.alignment;
      this.mtu = facts.mtu;
      this.mac = facts.mac;
      this.friendlyName = facts.friendlyName;
      this.offloads = facts.offloads;
      this.link = facts.link;
      this.linkSpeed = facts.linkSpeed;
      if (this.version >= NvspVersion.V5 && facts.rssQueues >= 2) {
        await this.openSubchannels(primary, facts.rssQueues);
      }
      if (this.channels.size > 1) this.rssTable = await this.setup().setRss(this.channels.size);
      const filter =
        NdisPacketType.directed | NdisPacketType.allMulticast | NdisPacketType.broadcast;
      if (!(await this.setup().setPacketFilter(filter))) {
        throw new NetvscError('the host refused the packet filter');
      }
      this.state = 'ready';
      this.log(
        `netvsc: ${this.macString} up: NVSP ${nvspVersionString(this.version)}, ${this.channels.size} channel(s), MTU ${this.mtu}`,
      );
      await this.options.onUp?.(this);
    } catch (error) {
      this.state = 'failed';
      this.error = (error as Error).message;
      await this.stop();
      throw error;
    }
  }

  private async postBuffers(primary: NetvscChannel): Promise<void> {
    const memory = this.device.memory;
    const rxBytes = this.options.receiveBufferBytes ?? NETVSC_RECEIVE_BUFFER_DEFAULT;
    this.receiveBuffer = await SharedPages.share(this.device, rxBytes);
    const layout = await postReceiveBuffer(
      primary,
      this.receiveBuffer.gpadl,
      this.receiveBuffer.bytes.length,
      this.timeoutMs,
      this.steps,
    );
    this.receiveSectionSize = layout.sectionSize;
    this.receiveSectionCount = layout.sectionCount;
    const txBytes = this.options.sendBufferBytes ?? NETVSC_SEND_BUFFER_DEFAULT;
    const shared = await SharedPages.share(this.device, txBytes);
    try {
      const sectionSize = await postSendBuffer(
        primary,
        shared.gpadl,
        shared.bytes.length,
        this.timeoutMs,
        this.steps,
      );
      this.sections = new SendSections(shared, sectionSize);
    } catch (error) {
      await shared.unshare(this.device);
      throw error;
    }
    this.bounce = new BouncePool(memory, BOUNCE_BUFFERS, BOUNCE_BYTES);
  }

  private readonly closers = new Map<number, () => Promise<void>>();

  private async openSubchannels(primary: NetvscChannel, hostQueues: number): Promise<void> {
    const most = Math.min(VRSS_CHANNEL_MAX, hostQueues, this.options.channels ?? hostQueues);
    if (most < 2) return;
    this.device.onSubchannel((sub) => void this.openSubchannel(sub));
    this.wantedSubchannels = most - 1;
    const granted = await allocateSubchannels(primary, most - 1, this.timeoutMs, this.steps);
    this.wantedSubchannels = granted;
    const deadline = Date.now() + this.timeoutMs;
    while (this.channels.size < granted + 1 && Date.now() < deadline && !this.gone) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.subchannelWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    if (this.channels.size < granted + 1) {
      this.log(`netvsc: only ${this.channels.size - 1} of ${granted} sub-channels opened`);
    }
  }

  private async openSubchannel(sub: GuestDevice): Promise<void> {
    const index = sub.offer.subchannelIndex;
    if (this.gone || index > this.wantedSubchannels || this.channels.has(index)) return;
    try {
      const channel = await sub.open({
        sendRingBytes: NETVSC_RING_BYTES,
        receiveRingBytes: NETVSC_RING_BYTES,
      });
      if (this.gone) {
        await channel.close();
        return;
      }
      this.channels.add(new NetvscChannel(this, channel.queue, index));
      this.closers.set(index, () => channel.close());
    } catch (error) {
      this.log(`netvsc: cannot open sub-channel ${index}: ${(error as Error).message}`);
    }
    for (const wake of this.subchannelWaiters.splice(0)) wake();
  }

  // --- the port -------------------------------------------------------------------------

  /** Joins the NIC to the guest's side of it: frames flow both ways from now on. */
  attachPort(port: FramePort): void {
    this.port = port;
    port.start(
      (frame, offload) => this.transmit(frame, offload),
      () => {},
    );
  }

  get attachedPort(): FramePort | undefined {
    return this.port;
  }

  /** A frame from the guest's stack; false when it must wait (the port holds it until `resume`). */
  transmit(frame: Uint8Array, offload: FrameOffload): boolean {
    if (this.state !== 'ready') {
      this.counters.txDropped++;
      return true;
    }
    if (this.transmitter.send(frame, offload)) return true;
    this.blocked = true;
    return false;
  }

  // --- what the channels report ----------------------------------------------------------

  /** One RNDIS message from the host (a private copy). */
  received(channel: NetvscChannel, message: Uint8Array): NvspStatus {
    if (message.length < 8) {
      this.counters.badRndis++;
      return NvspStatus.Failure;
    }
    const view = new DataView(message.buffer, message.byteOffset, message.byteLength);
    if (view.getUint32(0, true) === RndisMessageType.Packet)
      return this.receiver.frame(
        channel,
        view,
        message,
        this.state === 'ready' ? this.port : undefined,
      );
    const m = readControl(message);
    if (typeof m === 'string') {
      this.counters.badRndis++;
      channel.queue.warn(`RNDIS from the host refused: ${m}`);
      return NvspStatus.Failure;
    }
    if (m.type === RndisMessageType.IndicateStatus) {
      this.indication(m);
      return NvspStatus.Success;
    }
    if (!this.rndis.complete(m))
      channel.queue.warn(`an RNDIS answer (type 0x${(m.type >>> 0).toString(16)}) to no request`);
    return NvspStatus.Success;
  }

  private indication(m: ControlMessage): void {
    if (m.status === RndisStatus.MediaConnect || m.status === RndisStatus.MediaDisconnect) {
      const up = m.status === RndisStatus.MediaConnect;
      if (up !== this.link) this.counters.linkChanges++;
      this.link = up;
      this.log(`netvsc: ${this.macString} link ${up ? 'up' : 'down'}`);
    } else if (m.status === RndisStatus.LinkSpeedChange && m.info.length >= 4) {
      this.linkSpeed = new DataView(m.info.buffer, m.info.byteOffset, 4).getUint32(0, true) * 100;
    }
  }

  sendTableArrived(table: readonly number[]): void {
    this.sendTable = [...table];
  }

  /** A send finished: its section or bounce buffer is free again. */
  sendDone(section: number, bounce: number): void {
    if (section >= 0) this.sections?.release(section);
    if (bounce >= 0) this.bounce?.release(bounce);
    if (this.blocked) {
      this.blocked = false;
      this.port?.resume();
    }
  }

  /** An RNDIS control message to the host, through a bounce page (rndis_filter_send_request). */
  private sendControl(message: Uint8Array): boolean {
    const primary = this.primary;
    const pool = this.bounce;
    if (!primary || !pool || message.length > pool.bytesEach) return false;
    const index = pool.allocate();
    if (index < 0) return false;
    pool.buffers[index]!.bytes.set(message);
    if (!primary.sendPages(RndisChannelType.Control, index, pool.range(index, message.length))) {
      pool.release(index);
      return false;
    }
    return true;
  }

  // --- removal ----------------------------------------------------------------------------

  async stop(): Promise<void> {
    const wasReady = this.state === 'ready';
    if (this.state !== 'failed') this.state = 'removed';
    for (const wake of this.subchannelWaiters.splice(0)) wake();
    const port = this.port;
    this.port = undefined;
    if (wasReady) {
      await this.options.onDown?.(this);
    }
    const primary = this.primary;
    if (primary && !primary.closed && primary.queue.open && wasReady) {
      await this.setup()
        .setPacketFilter(0)
        .catch(() => false);
      // HALT has no answer: wait (briefly) for its send completion, as Linux waits for the drain.
      if (this.sendControl(buildSimpleRequest(RndisMessageType.Halt, 0xffff))) {
        const deadline = Date.now() + Math.min(2000, this.timeoutMs);
        while (primary.inFlight > 0 && primary.queue.open && Date.now() < deadline) {
          await new Promise((resolve) => setTimeout(resolve, 1));
        }
      }
    }
    if (primary && !primary.closed && primary.queue.open && this.receiveBuffer) {
      primary.post(nvspMessage(NvspMessageType.RevokeReceiveBuffer, NETVSC_RECEIVE_BUFFER_ID));
      if (this.sections)
        primary.post(nvspMessage(NvspMessageType.RevokeSendBuffer, NETVSC_SEND_BUFFER_ID));
    }
    this.rndis.failAll('netvsc NIC removed');
    const channels = this.channels.clear();
    for (const channel of channels) channel.close('netvsc NIC removed');
    // Sub-channels first, then the primary; closing a channel tears its GPADLs down (Linux does
    // that after the close from VMBus 4.0 on), so the buffers' pages are then only freed.
    for (const channel of [...channels].reverse()) {
      await this.closers
        .get(channel.index)?.()
        .catch((error: Error) => this.log(`netvsc: close: ${error.message}`));
    }
    this.closers.clear();
    await port?.close().catch(() => {});
    this.receiveBuffer?.release();
    this.receiveBuffer = undefined;
    this.sections?.shared.release();
    this.sections = undefined;
    this.bounce?.close();
    this.bounce = undefined;
    if (wasReady) this.log(`netvsc: NIC ${this.instanceId} removed`);
  }

  // --- status -------------------------------------------------------------------------------

  channelCounters(): (GuestChannelCounters & { inFlight: number })[] {
    return this.channels.list().map((c) => ({ ...c.counters, inFlight: c.inFlight }));
  }

  describe() {
    return {
      state: this.state,
      ...(this.error ? { error: this.error } : {}),
      mac: this.macString,
      nvsp: this.version ? nvspVersionString(this.version) : 'none',
      ndis: this.ndisVersion ? `${this.ndisVersion >>> 16}.${this.ndisVersion & 0xffff}` : 'none',
      mtu: this.mtu,
      link: this.link,
      linkSpeed: this.linkSpeed,
      channels: this.channels.size,
      offloads: { ...this.offloads },
      receiveSections: { size: this.receiveSectionSize, count: this.receiveSectionCount },
      sendSections: this.sections
        ? {
            size: this.sections.sectionSize,
            free: this.sections.available,
            count: this.sections.count,
          }
        : null,
      ...this.counters,
      rndisUnknown: this.rndis.unknown,
    };
  }
}

/** The netvsc driver: one NIC per offered network device. */
export class NetvscDriver implements VmbusDriver {
  readonly name = 'netvsc';
  readonly classId = NIC_CLASS_ID;
  readonly nics = new Map<number, NetvscNic>();
  /** Probes that failed, by instance id, with the reason. */
  readonly failures = new Map<string, string>();

  constructor(private readonly optionsFor: (device: GuestDevice) => NetvscOptions = () => ({})) {}

  async probe(device: GuestDevice): Promise<void> {
    const nic = new NetvscNic(device, this.optionsFor(device));
    this.nics.set(device.offer.relid, nic);
    try {
      await nic.start();
      this.failures.delete(device.offer.instanceId);
    } catch (error) {
      this.nics.delete(device.offer.relid);
      this.failures.set(device.offer.instanceId, (error as Error).message);
      throw error;
    }
  }

  async remove(device: GuestDevice): Promise<void> {
    const nic = this.nics.get(device.offer.relid);
    if (!nic) return;
    this.nics.delete(device.offer.relid);
    await nic.stop();
  }
}

export { NetvscError };
