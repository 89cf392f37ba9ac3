/**
 * The guest's VMBus driver (Linux drivers/hv/vmbus_drv.c, connection.c,
 * channel_mgmt.c, channel.c): negotiates a protocol version, asks for
 * offers, binds drivers to offered devices by class GUID, opens channels on
 * ring GPADLs, handles rescinds, and unloads.
 */

import type { PageAllocator } from '../../hv/page-allocator.ts';
import type { GuestPartition } from '../../hv/partition.ts';
import { PAGE_SIZE } from '../../hv/protocol.ts';
import { ChannelEndpoint } from '../channel.ts';
import type {
  ChannelOpenOptions,
  GuestChannel,
  GuestOffer,
  GuestPages,
  VmbusDriver,
} from '../device.ts';
import { buildGpadlMessages, FIRST_GPADL_HANDLE } from '../gpadl.ts';
import {
  ChannelMessageType,
  channelMessageHeader,
  closeChannelMessage,
  gpadlCreatedMessage,
  gpadlTeardownMessage,
  gpadlTorndownMessage,
  LINUX_VERSION_ORDER,
  MAX_CHANNEL_RELIDS,
  modifyChannelMessage,
  modifyChannelResponseMessage,
  offerChannelMessage,
  openChannelMessage,
  openResultMessage,
  relidReleasedMessage,
  rescindOfferMessage,
  VMBUS_MESSAGE_CONNECTION_ID,
  VmbusVersion,
  versionResponseMessage,
  versionString,
} from '../protocol.ts';
import { Queue } from '../queue.ts';
import { RateLimitedLog } from '../rate-limited-log.ts';
import { Ring } from '../ring.ts';
import { ClientDevice } from './client-device.ts';
import { initiateContactFor } from './initiate-contact.ts';
import { MessageConnection, PostMessageError } from './message-connection.ts';
import { decodeOffer } from './offer.ts';

export interface ClientOptions {
  /** Versions to try, newest first. Default: Linux's order (5.3 down to 2.4). */
  readonly versionOrder?: readonly number[];
  /** How long to wait for each host answer, in ms. */
  readonly timeoutMs?: number;
  readonly log?: (message: string) => void;
}

interface ChannelRecord {
  readonly offer: GuestOffer;
  device: ClientDevice | undefined;
  endpoint: ChannelEndpoint | undefined;
  queue: Queue | undefined;
  ringGpadl: number | undefined;
  ringPfn: number;
  ringPages: number;
  /** GPADLs the driver created on this channel, torn down on close/rescind. */
  readonly gpadls: Set<number>;
  rescinded: boolean;
  opening: boolean;
}

export interface GuestChannelStatus {
  readonly relid: number;
  readonly classId: string;
  readonly instanceId: string;
  readonly subchannelIndex: number;
  readonly open: boolean;
  readonly rescinded: boolean;
  readonly driver: string | undefined;
  readonly stats?: ChannelEndpoint['stats'];
  readonly occupancy?: ReturnType<ChannelEndpoint['occupancy']>;
  readonly error?: string;
}

export class VmbusNegotiationError extends Error {
  override readonly name = 'VmbusNegotiationError';
}

export class VmbusClient {
  readonly connection: MessageConnection;
  readonly pages: GuestPages;
  version = 0;
  private readonly channels = new Map<number, ChannelRecord>();
  private readonly drivers = new Map<string, VmbusDriver>();
  private nextGpadl = FIRST_GPADL_HANDLE;
  private readonly timeoutMs: number;
  private readonly log: (message: string) => void;
  private readonly probes = new Set<Promise<void>>();

  constructor(
    readonly partition: GuestPartition,
    readonly allocator: PageAllocator,
    private readonly options: ClientOptions = {},
  ) {
    this.connection = new MessageConnection(partition, allocator);
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.log = options.log ?? ((m) => console.error(m));
    this.connection.dropLog = new RateLimitedLog(this.log);
    const memory = partition.memory;
    this.pages = {
      allocate: (count) => {
        const pfn = allocator.allocate(count);
        memory.fill(pfn * PAGE_SIZE, count * PAGE_SIZE);
        return pfn;
      },
      free: (pfn, count) => allocator.free(pfn, count),
      bytes: (gpa, length) => memory.bytes(gpa, length),
    };
    this.connection.onMessage = (type, payload) => this.unsolicited(type, payload);
    this.connection.onChannelInterrupt = (relid) =>
      this.channels.get(relid)?.endpoint?.handleInterrupt();
  }

  get connected(): boolean {
    return this.version !== 0;
  }

  // --- connect -----------------------------------------------------------------

  /**
   * vmbus_connect(): tries each version of the order in turn, newest first.
   * From 5.0 the INITIATE_CONTACT goes to connection id 4 with the message
   * SINT; an old host has no port there, so the post fails and we try the
   * next version. Returns the negotiated version.
   */
  async connect(): Promise<number> {
    if (this.connected) throw new VmbusNegotiationError('already connected; unload first');
    this.connection.start();
    const order = this.options.versionOrder ?? LINUX_VERSION_ORDER;
    for (const version of order) {
      const { message, connectionId } = initiateContactFor(version, this.connection);
      const response = this.connection.expect(
        ChannelMessageType.VersionResponse,
        () => true,
        this.timeoutMs,
      );
      try {
        await this.connection.post(message, connectionId);
      } catch (error) {
        response.catch(() => {});
        this.connection.cancelWaiters(
          undefined,
          [ChannelMessageType.VersionResponse],
          'post failed',
        );
        if (error instanceof PostMessageError) continue;
        throw error;
      }
      const answer = versionResponseMessage.read(await response);
      if (answer.version_supported) {
        this.version = version;
        this.connection.version = version;
        this.connection.messageConnectionId =
          version >= VmbusVersion.Win10V5 ? answer.msg_conn_id : VMBUS_MESSAGE_CONNECTION_ID;
        return version;
      }
    }
    this.connection.stop();
    throw new VmbusNegotiationError(
      `the host supports none of the versions ${order.map(versionString).join(', ')}`,
    );
  }

  /** REQUESTOFFERS; resolves when ALLOFFERS_DELIVERED arrived and drivers have probed. */
  async requestOffers(): Promise<void> {
    const done = this.connection.expect(
      ChannelMessageType.AllOffersDelivered,
      () => true,
      this.timeoutMs,
    );
    await this.connection.post(
      channelMessageHeader.write({ msgtype: ChannelMessageType.RequestOffers }),
    );
    await done;
    await this.settle();
  }

  /** Waits for every driver probe started so far. */
  async settle(): Promise<void> {
    while (this.probes.size > 0) await Promise.allSettled([...this.probes]);
  }

  // --- driver model --------------------------------------------------------------

  registerDriver(driver: VmbusDriver): void {
    const key = driver.classId.toLowerCase();
    if (this.drivers.has(key)) throw new Error(`a driver for ${key} is already registered`);
    this.drivers.set(key, driver);
    for (const record of this.channels.values()) {
      if (record.offer.subchannelIndex === 0 && record.device && !record.device.driver) {
        this.bind(record.device);
      }
    }
  }

  offers(): GuestOffer[] {
    return [...this.channels.values()].map((r) => r.offer).sort((a, b) => a.relid - b.relid);
  }

  channelStatus(): GuestChannelStatus[] {
    return [...this.channels.values()]
      .sort((a, b) => a.offer.relid - b.offer.relid)
      .map((r) => {
        const primary = r.offer.subchannelIndex === 0 ? r.device : this.primaryOf(r.offer)?.device;
        return {
          relid: r.offer.relid,
          classId: r.offer.classId,
          instanceId: r.offer.instanceId,
          subchannelIndex: r.offer.subchannelIndex,
          open: r.endpoint !== undefined,
          rescinded: r.rescinded,
          driver: primary?.driver?.name,
          ...(r.endpoint ? { stats: r.endpoint.stats, occupancy: r.endpoint.occupancy() } : {}),
          ...(r.endpoint?.error ? { error: r.endpoint.error } : {}),
        };
      });
  }

  private bind(device: ClientDevice): void {
    const driver = this.drivers.get(device.offer.classId);
    if (!driver || device.driver) return;
    device.driver = driver;
    const probe = driver.probe(device).catch((error: Error) => {
      this.log(
        `vmbus: ${driver.name} probe of relid ${device.offer.relid} failed: ${error.message}`,
      );
      device.driver = undefined;
    });
    device.probing = probe;
    this.probes.add(probe);
    void probe.finally(() => this.probes.delete(probe));
  }

  private primaryOf(offer: GuestOffer): ChannelRecord | undefined {
    for (const r of this.channels.values()) {
      if (
        r.offer.subchannelIndex === 0 &&
        r.offer.classId === offer.classId &&
        r.offer.instanceId === offer.instanceId
      ) {
        return r;
      }
    }
    return undefined;
  }

  // --- host messages ---------------------------------------------------------

  private unsolicited(type: ChannelMessageType, payload: Uint8Array): void {
    switch (type) {
      case ChannelMessageType.OfferChannel:
        this.onOffer(payload);
        break;
      case ChannelMessageType.RescindChannelOffer:
        void this.onRescind(rescindOfferMessage.read(payload).child_relid);
        break;
      default:
        this.connection.drop(`unexpected ${ChannelMessageType[type]}`);
    }
  }

  private onOffer(payload: Uint8Array): void {
    const m = offerChannelMessage.read(payload);
    const relid = m.child_relid;
    if (relid === 0 || relid >= MAX_CHANNEL_RELIDS) {
      this.connection.drop(`offer with relid ${relid} outside 1..${MAX_CHANNEL_RELIDS - 1}`);
      return;
    }
    if (this.channels.has(relid)) {
      this.connection.drop(`second offer for relid ${relid}`);
      return;
    }
    const offer = decodeOffer(m, this.version);
    const record: ChannelRecord = {
      offer,
      device: undefined,
      endpoint: undefined,
      queue: undefined,
      ringGpadl: undefined,
      ringPfn: 0,
      ringPages: 0,
      gpadls: new Set(),
      rescinded: false,
      opening: false,
    };
    this.channels.set(relid, record);
    const device = new ClientDevice(this, offer);
    record.device = device;
    if (offer.subchannelIndex === 0) {
      this.bind(device);
      return;
    }
    const primary = this.primaryOf(offer)?.device;
    if (!primary) {
      this.connection.drop(`sub-channel relid ${relid} has no primary channel`);
      return;
    }
    primary.subchannels.push(device);
    for (const listener of primary.subchannelListeners) listener(device);
  }

  /**
   * The host withdrew a channel: the driver lets go (for a primary channel),
   * the channel is closed and its GPADLs torn down, then the relid is
   * released back to the host.
   */
  private async onRescind(relid: number): Promise<void> {
    const record = this.channels.get(relid);
    if (!record) {
      this.connection.drop(`rescind of unknown relid ${relid}`);
      return;
    }
    if (record.rescinded) return;
    record.rescinded = true;
    this.connection.cancelWaiters(
      relid,
      [ChannelMessageType.OpenChannelResult, ChannelMessageType.GpadlCreated],
      `relid ${relid} was rescinded`,
    );
    const device = record.device;
    try {
      if (device?.driver && record.offer.subchannelIndex === 0) {
        await device.probing;
        await device.driver.remove(device);
        device.driver = undefined;
      }
      await this.closeRecord(record);
    } catch (error) {
      this.log(`vmbus: cleaning up rescinded relid ${relid}: ${(error as Error).message}`);
    }
    this.channels.delete(relid);
    await this.connection
      .post(
        relidReleasedMessage.write({
          header: { msgtype: ChannelMessageType.RelidReleased },
          child_relid: relid,
        }),
      )
      .catch((error: Error) => this.log(`vmbus: RELID_RELEASED ${relid}: ${error.message}`));
  }

  // --- GPADLs ----------------------------------------------------------------------

  /** Shares pages with the host (vmbus_establish_gpadl): header + bodies, then GPADL_CREATED. */
  async createGpadl(relid: number, pfns: readonly number[]): Promise<number> {
    const record = this.channels.get(relid);
    if (!record || record.rescinded) throw new Error(`relid ${relid} is not an offered channel`);
    const handle = this.nextGpadl++;
    const created = this.connection.expect(
      ChannelMessageType.GpadlCreated,
      (p) => {
        const m = gpadlCreatedMessage.read(p);
        return m.gpadl === handle && m.child_relid === relid;
      },
      this.timeoutMs,
      relid,
    );
    try {
      for (const message of buildGpadlMessages(relid, handle, pfns))
        await this.connection.post(message);
    } catch (error) {
      created.catch(() => {});
      throw error;
    }
    const result = gpadlCreatedMessage.read(await created);
    if (result.creation_status !== 0) {
      throw new Error(
        `host refused GPADL ${handle}: status 0x${result.creation_status.toString(16)}`,
      );
    }
    record.gpadls.add(handle);
    return handle;
  }

  /** vmbus_teardown_gpadl: GPADL_TEARDOWN, then wait for GPADL_TORNDOWN. */
  async teardownGpadl(relid: number, handle: number): Promise<void> {
    const record = this.channels.get(relid);
    record?.gpadls.delete(handle);
    const torndown = this.connection.expect(
      ChannelMessageType.GpadlTorndown,
      (p) => gpadlTorndownMessage.read(p).gpadl === handle,
      this.timeoutMs,
    );
    try {
      await this.connection.post(
        gpadlTeardownMessage.write({
          header: { msgtype: ChannelMessageType.GpadlTeardown },
          child_relid: relid,
          gpadl: handle,
        }),
      );
    } catch (error) {
      torndown.catch(() => {});
      throw error;
    }
    await torndown;
  }

  // --- open / close ------------------------------------------------------------

  /**
   * vmbus_open(): allocates both rings in one run of pages, shares them in
   * one GPADL (send ring first), sends OPENCHANNEL with the receive ring's
   * page offset, and waits for OPENCHANNEL_RESULT.
   */
  async openChannel(relid: number, options: ChannelOpenOptions): Promise<GuestChannel> {
    const record = this.channels.get(relid);
    if (!record || record.rescinded) throw new Error(`relid ${relid} is not an offered channel`);
    if (record.endpoint || record.opening) throw new Error(`relid ${relid} is already open`);
    for (const [name, bytes] of [
      ['send', options.sendRingBytes],
      ['receive', options.receiveRingBytes],
    ] as const) {
      if (!Number.isInteger(bytes) || bytes < 2 * PAGE_SIZE || bytes % PAGE_SIZE !== 0) {
        throw new RangeError(
          `${name} ring of ${bytes} bytes: need a multiple of 4096, at least 8192`,
        );
      }
    }
    const sendPages = options.sendRingBytes / PAGE_SIZE;
    const recvPages = options.receiveRingBytes / PAGE_SIZE;
    const total = sendPages + recvPages;
    record.opening = true;
    const firstPfn = this.pages.allocate(total);
    const pfns = Array.from({ length: total }, (_, i) => firstPfn + i);
    const buffer = this.partition.memory.buffer;
    const sendRing = Ring.fromPages(buffer, pfns.slice(0, sendPages));
    const recvRing = Ring.fromPages(buffer, pfns.slice(sendPages));
    sendRing.initialize();
    recvRing.initialize();
    let gpadl: number | undefined;
    try {
      gpadl = await this.createGpadl(relid, pfns);
      record.gpadls.delete(gpadl);
      const result = this.connection.expect(
        ChannelMessageType.OpenChannelResult,
        (p) => {
          const m = openResultMessage.read(p);
          return m.child_relid === relid && m.openid === relid;
        },
        this.timeoutMs,
        relid,
      );
      await this.connection.post(
        openChannelMessage.write({
          header: { msgtype: ChannelMessageType.OpenChannel },
          child_relid: relid,
          openid: relid,
          ringbuffer_gpadlhandle: gpadl,
          target_vp: options.targetVp ?? 0,
          downstream_ringbuffer_pageoffset: sendPages,
          userdata: options.userData ?? new Uint8Array(0),
        }),
      );
      const status = openResultMessage.read(await result).status;
      if (status !== 0)
        throw new Error(`host refused to open relid ${relid}: status 0x${status.toString(16)}`);
    } catch (error) {
      record.opening = false;
      if (gpadl !== undefined && !record.rescinded) {
        await this.teardownGpadl(relid, gpadl).catch(() => {});
      }
      this.pages.free(firstPfn, total);
      throw error;
    }
    const offer = record.offer;
    const endpoint = new ChannelEndpoint(
      sendRing,
      recvRing,
      () => {
        if (!offer.dedicatedInterrupt) this.connection.flagInterruptPage(relid);
        this.connection.signal(offer.connectionId);
      },
      `relid ${relid}`,
    );
    const queue = new Queue(endpoint, { name: `relid ${relid}`, log: (m) => this.log(m) });
    record.endpoint = endpoint;
    record.queue = queue;
    record.ringGpadl = gpadl;
    record.ringPfn = firstPfn;
    record.ringPages = total;
    record.opening = false;
    return { offer, queue, close: () => this.closeChannel(relid) };
  }

  /** vmbus_close(): CLOSECHANNEL, tear down the ring GPADL and the driver's GPADLs, free the rings. */
  async closeChannel(relid: number): Promise<void> {
    const record = this.channels.get(relid);
    if (!record) return;
    await this.closeRecord(record);
  }

  private async closeRecord(record: ChannelRecord): Promise<void> {
    const relid = record.offer.relid;
    const endpoint = record.endpoint;
    if (endpoint) {
      record.queue?.close(`relid ${relid} closed`);
      record.queue = undefined;
      record.endpoint = undefined;
      await this.connection.post(
        closeChannelMessage.write({
          header: { msgtype: ChannelMessageType.CloseChannel },
          child_relid: relid,
        }),
      );
    }
    for (const handle of [...record.gpadls]) await this.teardownGpadl(relid, handle);
    if (record.ringGpadl !== undefined) {
      const handle = record.ringGpadl;
      record.ringGpadl = undefined;
      await this.teardownGpadl(relid, handle);
      this.pages.free(record.ringPfn, record.ringPages);
    }
  }

  /** MODIFYCHANNEL (4.1+): move a channel's interrupts to another VP; 5.3 hosts answer. */
  async modifyChannel(relid: number, targetVp: number): Promise<number> {
    if (this.version < VmbusVersion.Win10V4_1) throw new Error('MODIFYCHANNEL needs VMBus 4.1');
    const message = modifyChannelMessage.write({
      header: { msgtype: ChannelMessageType.ModifyChannel },
      child_relid: relid,
      target_vp: targetVp,
    });
    if (this.version < VmbusVersion.Win10V5_3) {
      await this.connection.post(message);
      return 0;
    }
    const response = this.connection.expect(
      ChannelMessageType.ModifyChannelResponse,
      (p) => modifyChannelResponseMessage.read(p).child_relid === relid,
      this.timeoutMs,
    );
    await this.connection.post(message);
    return modifyChannelResponseMessage.read(await response).status;
  }

  // --- unload ------------------------------------------------------------------------

  /**
   * Removes every driver (closing their channels), then sends UNLOAD and
   * waits for UNLOAD_RESPONSE (hosts from Windows 7 on answer). Afterwards
   * the client can connect again.
   */
  async unload(): Promise<void> {
    if (!this.connected) return;
    for (const record of [...this.channels.values()]) {
      const device = record.device;
      if (device?.driver && record.offer.subchannelIndex === 0) {
        try {
          await device.probing;
          await device.driver.remove(device);
        } catch (error) {
          this.log(`vmbus: removing ${device.driver.name}: ${(error as Error).message}`);
        }
        device.driver = undefined;
      }
    }
    for (const record of [...this.channels.values()]) {
      await this.closeRecord(record).catch((error: Error) =>
        this.log(`vmbus: close on unload: ${error.message}`),
      );
    }
    const answered =
      this.version >= VmbusVersion.Win7
        ? this.connection.expect(ChannelMessageType.UnloadResponse, () => true, this.timeoutMs)
        : undefined;
    await this.connection.post(channelMessageHeader.write({ msgtype: ChannelMessageType.Unload }));
    if (answered) await answered;
    this.channels.clear();
    this.version = 0;
    this.connection.version = 0;
    this.connection.messageConnectionId = VMBUS_MESSAGE_CONNECTION_ID;
  }

  /** Stops taking interrupts and frees the SynIC pages (after unload). */
  shutdown(): void {
    this.connection.stop();
    this.connection.release();
  }
}
