/**
 * The task that runs the VMBus server state machine on a partition: it
 * receives the guest's messages from the hypervisor's message ports, feeds
 * them to the server, and carries out the server's actions — posting
 * messages into the guest's SynIC, mapping ring GPADLs, connecting each
 * channel's event port, and calling the devices.
 */
import { takeFlagBits } from '../../hv/flag-bits.ts';
import type { HostPartition } from '../../hv/partition.ts';
import { PAGE_SIZE } from '../../hv/protocol.ts';
import { regionOverPages } from '../byte-region.ts';
import { ChannelEndpoint } from '../channel.ts';
import type { DeviceBus, MappedGpadl, OpenRequest, VmbusDevice } from '../device.ts';
import {
  VMBUS_EVENT_CONNECTION_ID,
  VMBUS_MESSAGE_CONNECTION_ID,
  VMBUS_MESSAGE_CONNECTION_ID_4,
  VmbusVersion,
} from '../protocol.ts';
import { Queue } from '../queue.ts';
import { RateLimitedLog } from '../rate-limited-log.ts';
import { Ring } from '../ring.ts';
import { type ServerAction, VmbusServer } from './state.ts';

/** HvPostMessage message type the VMBus uses. */
const VMBUS_HV_MESSAGE_TYPE = 1;

export interface HostBusOptions {
  readonly versions?: readonly number[];
  readonly dedicatedInterrupts?: boolean;
  /** Where dropped-message reasons and device errors go (rate-limited). */
  readonly log?: (message: string) => void;
}

/** Where a channel's interrupts go; MODIFYCHANNEL changes the VP. */
interface InterruptRoute {
  readonly relid: number;
  targetVp: number;
}

interface OpenChannel {
  readonly relid: number;
  readonly deviceId: number;
  readonly endpoint: ChannelEndpoint;
  readonly queue: Queue;
  readonly request: OpenRequest;
  readonly connectionId: number;
  readonly route: InterruptRoute;
}

interface DeviceEntry {
  readonly device: VmbusDevice;
  removed: boolean;
}

export interface HostChannelStatus {
  readonly relid: number;
  readonly deviceId: number;
  readonly classId: string;
  readonly instanceId: string;
  readonly subchannelIndex: number;
  readonly state: string;
  readonly targetVp: number;
  readonly stats?: ChannelEndpoint['stats'];
  readonly occupancy?: ReturnType<ChannelEndpoint['occupancy']>;
  readonly error?: string;
}

export class HostBus {
  readonly server: VmbusServer;
  private readonly devices = new Map<number, DeviceEntry>();
  private readonly open = new Map<number, OpenChannel>();
  private nextDeviceId = 1;
  private started = false;
  private readonly logger: RateLimitedLog;
  private pending: Promise<unknown>[] = [];

  constructor(
    readonly partition: HostPartition,
    options: HostBusOptions = {},
  ) {
    this.logger = new RateLimitedLog(options.log ?? ((m: string) => console.error(m)));
    this.server = new VmbusServer({
      versions: options.versions,
      vpCount: partition.state.vpCount,
      guestPageCount: partition.memory.pageCount,
      dedicatedInterrupts: options.dedicatedInterrupts,
    });
  }

  /** Connects the message ports (1, and 4 when the host knows 5.0) and starts dispatching. */
  start(): void {
    if (this.started) return;
    this.started = true;
    const onMessage = (m: { connectionId: number; payload: Uint8Array }): void => {
      this.execute(this.server.receive(m.connectionId, m.payload));
    };
    this.partition.ports.onHandlerError = (error) => this.log(`vmbus: ${error.message}`);
    this.partition.ports.openMessagePort(VMBUS_MESSAGE_CONNECTION_ID, onMessage);
    if (this.server.usesConnectionId4) {
      this.partition.ports.openMessagePort(VMBUS_MESSAGE_CONNECTION_ID_4, onMessage);
    }
    // Channels without a dedicated interrupt signal connection id 2 and set
    // their relid in the send half of the guest's interrupt page.
    this.partition.ports.openEventPort(VMBUS_EVENT_CONNECTION_ID, () => this.scanInterruptPage());
    this.partition.start();
  }

  async stop(): Promise<void> {
    for (const channel of [...this.open.values()]) await this.closeChannel(channel.relid);
    await Promise.allSettled(this.pending);
    await this.partition.stop();
    this.started = false;
  }

  /** Adds a device: it is offered now (or when the guest asks for offers). */
  addDevice(device: VmbusDevice): number {
    const deviceId = this.nextDeviceId++;
    this.devices.set(deviceId, { device, removed: false });
    device.attach?.(this.deviceBus(deviceId));
    const { actions } = this.server.addOffer(deviceId, device.offer, 0);
    this.execute(actions);
    return deviceId;
  }

  /** Removes a device: its channels are closed and rescinded. */
  removeDevice(deviceId: number): void {
    const entry = this.devices.get(deviceId);
    if (!entry || entry.removed) return;
    entry.removed = true;
    for (const relid of this.server.deviceRelids(deviceId))
      this.execute(this.server.rescind(relid));
  }

  /** The id `addDevice` gave a device still on the bus, or undefined. */
  deviceIdOf(device: VmbusDevice): number | undefined {
    for (const [id, entry] of this.devices)
      if (entry.device === device && !entry.removed) return id;
    return undefined;
  }

  deviceIds(): number[] {
    return [...this.devices.entries()].filter(([, e]) => !e.removed).map(([id]) => id);
  }

  /** Resolves when every device open/close started so far has finished. */
  async settle(): Promise<void> {
    while (this.pending.length > 0) {
      const batch = this.pending;
      this.pending = [];
      await Promise.allSettled(batch);
    }
  }

  endpoint(relid: number): ChannelEndpoint | undefined {
    return this.open.get(relid)?.endpoint;
  }

  channelStatus(): HostChannelStatus[] {
    return this.server.channelSummaries().map((c) => {
      const open = this.open.get(c.relid);
      return {
        relid: c.relid,
        deviceId: c.deviceId,
        classId: c.classId,
        instanceId: c.instanceId,
        subchannelIndex: c.subchannelIndex,
        state: c.rescinded ? `${c.phase} (rescinded)` : c.phase,
        targetVp: c.targetVp,
        ...(open ? { stats: open.endpoint.stats, occupancy: open.endpoint.occupancy() } : {}),
        ...(open?.endpoint.error ? { error: open.endpoint.error } : {}),
      };
    });
  }

  private deviceBus(deviceId: number): DeviceBus {
    const memory = this.partition.memory;
    const server = this.server;
    return {
      memory,
      get version() {
        return server.connected?.version ?? 0;
      },
      offerSubchannels: (count: number) => {
        const entry = this.devices.get(deviceId);
        if (!entry || entry.removed) return;
        for (let i = 0; i < count; i++) {
          const index = this.server.nextSubchannelIndex(deviceId);
          this.execute(this.server.addOffer(deviceId, entry.device.offer, index).actions);
        }
      },
      mapGpadl: (handle: number): MappedGpadl | undefined => {
        const gpadl = this.server.acquireGpadl(handle);
        if (!gpadl) return undefined;
        let released = false;
        const views: Uint8Array[] = [];
        let byteCount = 0;
        for (const range of gpadl.ranges) {
          let remaining = range.byteCount;
          let offset = range.byteOffset;
          for (const pfn of range.pfns) {
            if (remaining <= 0) break;
            const n = Math.min(PAGE_SIZE - offset, remaining);
            views.push(memory.bytes(pfn * PAGE_SIZE + offset, n));
            remaining -= n;
            byteCount += n;
            offset = 0;
          }
        }
        const whole = gpadl.ranges.length === 1 && gpadl.ranges[0]!.byteOffset === 0;
        const region =
          whole && gpadl.ranges[0]!.byteCount === gpadl.pfns.length * PAGE_SIZE
            ? regionOverPages(memory.buffer, gpadl.pfns)
            : undefined;
        return {
          handle,
          byteCount,
          views,
          region,
          release: () => {
            if (released) return;
            released = true;
            this.execute(this.server.releaseGpadlView(handle));
          },
        };
      },
    };
  }

  private execute(actions: readonly ServerAction[]): void {
    for (const action of actions) {
      switch (action.kind) {
        case 'send':
          this.partition.synic.postMessage(
            action.vp,
            action.sint,
            VMBUS_HV_MESSAGE_TYPE,
            action.payload,
          );
          break;
        case 'open-channel':
          this.track(this.openChannel(action));
          break;
        case 'close-channel':
          this.track(this.closeChannel(action.relid));
          break;
        case 'modify-channel': {
          const channel = this.open.get(action.relid);
          if (channel) channel.route.targetVp = action.targetVp;
          break;
        }
        case 'connected':
        case 'disconnected':
          break;
        case 'dropped':
          this.log(`vmbus: dropped guest message: ${action.reason}`);
          break;
      }
    }
  }

  private track(work: Promise<void>): void {
    this.pending.push(work);
    void work.finally(() => {
      const i = this.pending.indexOf(work);
      if (i >= 0) this.pending.splice(i, 1);
    });
  }

  private async openChannel(
    action: Extract<ServerAction, { kind: 'open-channel' }>,
  ): Promise<void> {
    const entry = this.devices.get(action.deviceId);
    const memoryBuffer = this.partition.memory.buffer;
    let endpoint: ChannelEndpoint;
    const route: InterruptRoute = { relid: action.relid, targetVp: action.request.targetVp };
    try {
      const pfns = action.gpadl.pfns;
      const guestToHost = Ring.fromPages(memoryBuffer, pfns.slice(0, action.downstreamPageOffset));
      const hostToGuest = Ring.fromPages(memoryBuffer, pfns.slice(action.downstreamPageOffset));
      const relid = action.relid;
      endpoint = new ChannelEndpoint(
        hostToGuest,
        guestToHost,
        () => this.signalGuest(route),
        `relid ${relid}`,
      );
    } catch (error) {
      this.log(`vmbus: cannot map rings of relid ${action.relid}: ${(error as Error).message}`);
      this.execute(this.server.openCompleted(action.relid, false));
      return;
    }
    if (!entry || entry.removed) {
      this.execute(this.server.openCompleted(action.relid, false));
      return;
    }
    const queue = new Queue(endpoint, { name: `relid ${action.relid}`, log: (m) => this.log(m) });
    try {
      await entry.device.open(queue, action.request);
    } catch (error) {
      this.log(`vmbus: device refused to open relid ${action.relid}: ${(error as Error).message}`);
      this.execute(this.server.openCompleted(action.relid, false));
      return;
    }
    this.open.set(action.relid, {
      relid: action.relid,
      deviceId: action.deviceId,
      endpoint,
      queue,
      request: action.request,
      connectionId: action.connectionId,
      route,
    });
    try {
      this.partition.ports.openEventPort(action.connectionId, () => endpoint.handleInterrupt());
    } catch (error) {
      this.log(`vmbus: event port for relid ${action.relid}: ${(error as Error).message}`);
    }
    this.execute(this.server.openCompleted(action.relid, true));
    // The guest may have written before the port was connected.
    endpoint.drain();
  }

  private async closeChannel(relid: number): Promise<void> {
    const channel = this.open.get(relid);
    if (!channel) {
      this.execute(this.server.closeCompleted(relid));
      return;
    }
    this.open.delete(relid);
    this.partition.ports.closeEventPort(channel.connectionId);
    channel.queue.close(`relid ${relid} closed`);
    const entry = this.devices.get(channel.deviceId);
    try {
      await entry?.device.close(channel.queue, channel.request);
    } catch (error) {
      this.log(`vmbus: device close of relid ${relid} failed: ${(error as Error).message}`);
    }
    this.execute(this.server.closeCompleted(relid));
  }

  /**
   * Host-to-guest channel interrupt: from Windows 8 on, the relid's bit in
   * the SIEFP slot of the channel's SINT; before that, the relid's bit in the
   * receive half of the guest's interrupt page plus SIEFP bit 0 (Linux
   * vmbus_chan_sched for old protocol versions).
   */
  private signalGuest(route: InterruptRoute): void {
    const connection = this.server.connected;
    if (!connection) return;
    const relid = route.relid;
    if (connection.version >= VmbusVersion.Win8) {
      this.partition.synic.signalEvent(route.targetVp, connection.sint, relid);
      return;
    }
    const page = Number(connection.interruptPage);
    const memory = this.partition.memory;
    const word = page + (relid >>> 5) * 4;
    if (page !== 0 && relid < 2048 * 8 && memory.contains(word, 4) && word % 4 === 0) {
      Atomics.or(memory.i32, word >>> 2, 1 << (relid & 31));
      this.partition.synic.signalEvent(route.targetVp, connection.sint, 0);
    }
  }

  /** Connection id 2: find which channels the guest flagged in its interrupt page's send half. */
  private scanInterruptPage(): void {
    const connection = this.server.connected;
    if (!connection || connection.interruptPage === 0n) return;
    const sendHalf = Number(connection.interruptPage) + 2048;
    const memory = this.partition.memory;
    if (!memory.contains(sendHalf, 2048) || sendHalf % 4 !== 0) return;
    takeFlagBits(memory.i32, sendHalf >>> 2, 2048 / 4, (relid) =>
      this.open.get(relid)?.endpoint.handleInterrupt(),
    );
  }

  private log(message: string): void {
    this.logger.log(message);
  }
}
