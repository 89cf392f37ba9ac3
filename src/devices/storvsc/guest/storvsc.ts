/**
 * The guest's storvsc: the driver of the synthetic SCSI controller (Linux
 * drivers/scsi/storvsc_drv.c). For each controller the host offers it opens
 * the primary channel, runs the handshake in Linux's order —
 * BEGIN_INITIALIZATION, QUERY_PROTOCOL_VERSION for each version of its
 * order until the host accepts one (6.2, 6.0, 5.1), QUERY_PROPERTIES,
 * END_INITIALIZATION, then CREATE_SUB_CHANNELS when the host can offer
 * more channels — opens the sub-channels, and scans the LUNs (REPORT LUNS,
 * INQUIRY, READ CAPACITY and the VPD pages) into guest disks.
 *
 * Requests go out on the channel with the fewest in flight; a request that
 * finds every channel's slots taken waits for one. ENUMERATE_BUS and
 * REMOVE_DEVICE from the host, and a request answered INVALID_LUN, trigger a
 * rescan: disks that went away are removed (their I/O fails from then on),
 * new ones are probed and announced.
 */

import * as cdbs from '../../../scsi/initiator/cdb-builders.ts';
import { parseReportLuns } from '../../../scsi/initiator/response-parsers.ts';
import { ChannelSet } from '../../../vmbus/channel-set.ts';
import type { GuestChannel, GuestDevice, VmbusDriver } from '../../../vmbus/device.ts';
import {
  LINUX_STORVSC_VERSION_ORDER,
  NtStatus,
  Offsets,
  SCSI_CLASS_ID,
  STORVSC_RING_BYTES,
  STORVSP_MAX_TRANSFER_BYTES,
  StorageChannelFlags,
  VmstorVersion,
  VSTOR_PACKET_SIZE,
  VstorOperation,
  vmstorageChannelProperties,
  vmstorVersionString,
  vstorPacketSize,
} from '../protocol.ts';
import { GuestBufferPool } from './buffers.ts';
import { GuestScsiDisk, type ScsiTransport } from './disk.ts';
import { probeLun } from './probe.ts';
import { ScsiCommandError } from './scsi-errors.ts';
import {
  type ChannelCounters,
  type SrbCommand,
  type SrbResult,
  StorvscChannel,
  StorvscError,
} from './storvsc-channel.ts';

export interface StorvscOptions {
  /** Versions to propose, newest first (default Linux's: 6.2, 6.0, 5.1). */
  readonly versionOrder?: readonly number[];
  /** Most sub-channels to ask for (default: all the host offers). */
  readonly subchannels?: number;
  /** Ring size of each direction, including its header page. */
  readonly ringBytes?: number;
  /** Guest memory set aside for I/O buffers (default 8 MiB). */
  readonly bufferBytes?: number;
  /** How long to wait for each handshake answer, in ms. */
  readonly timeoutMs?: number;
  readonly log?: (message: string) => void;
  /** A disk was found (at probe or by a rescan). */
  readonly onDiskAdded?: (controller: StorvscController, disk: GuestScsiDisk) => Promise<void>;
  /** A disk went away (or the controller is being removed). */
  readonly onDiskRemoved?: (controller: StorvscController, disk: GuestScsiDisk) => Promise<void>;
}

/** One handshake step as the guest saw it. */
export interface HandshakeStep {
  readonly operation: string;
  readonly status: number;
  readonly version?: number;
}

export type ControllerState = 'starting' | 'ready' | 'failed' | 'removed';

const DEFAULT_BUFFER_BYTES = 8 * 1024 * 1024;

function hex32(n: number): string {
  return `0x${(n >>> 0).toString(16).padStart(8, '0')}`;
}

export class StorvscController implements ScsiTransport {
  /** The primary channel and the sub-channels, least busy first for each turn's requests. */
  readonly channels = new ChannelSet<StorvscChannel>({
    load: (c) => c.inFlight,
    usable: (c) => c.usable && c.hasRoom,
  });
  readonly disks = new Map<number, GuestScsiDisk>();
  readonly handshake: HandshakeStep[] = [];
  state: ControllerState = 'starting';
  error = '';
  version = 0;
  /** Bytes of each packet: 48 while proposing pre-Windows-8 versions, then the version's size. */
  packetSize = VSTOR_PACKET_SIZE;
  maxTransfer = STORVSP_MAX_TRANSFER_BYTES;
  /** Sub-channels the host said it can offer, and how many we asked for. */
  hostSubchannels = 0;
  requestedSubchannels = 0;
  buffers: GuestBufferPool | undefined;
  private readonly slotWaiters: (() => void)[] = [];
  private scanning: Promise<void> | undefined;
  private scanAgain = false;
  private rescans = 0;
  private readonly log: (message: string) => void;
  private readonly subchannelWaiters: (() => void)[] = [];

  constructor(
    readonly device: GuestDevice,
    private readonly options: StorvscOptions = {},
  ) {
    this.log = options.log ?? (() => {});
  }

  get offerInstance(): string {
    return this.device.offer.instanceId;
  }

  private get gone(): boolean {
    return this.state === 'removed' || this.state === 'failed';
  }

  get rescanCount(): number {
    return this.rescans;
  }

  // --- start -------------------------------------------------------------------

  async start(): Promise<void> {
    const ring = this.options.ringBytes ?? STORVSC_RING_BYTES;
    const order = this.options.versionOrder ?? LINUX_STORVSC_VERSION_ORDER;
    if (order.length === 0) throw new StorvscError('no storage protocol version to propose');
    // Proposing a pre-Windows-8 version means starting with the short packet, as old Linux did.
    this.packetSize = Math.min(...order.map(vstorPacketSize));
    const channel = await this.device.open({
      sendRingBytes: ring,
      receiveRingBytes: ring,
      userData: new Uint8Array(vmstorageChannelProperties.size),
    });
    const primary = new StorvscChannel(channel, 0, this);
    this.channels.add(primary);
    try {
      await this.negotiate(primary, order);
      await this.openSubchannels(primary, ring);
      const pool = new GuestBufferPool(
        this.device.memory,
        this.options.bufferBytes ?? DEFAULT_BUFFER_BYTES,
        this.maxTransfer,
      );
      this.buffers = pool;
      this.state = 'ready';
      await this.rescan();
    } catch (error) {
      this.state = 'failed';
      this.error = (error as Error).message;
      await this.stop();
      throw error;
    }
  }

  private async step(
    channel: StorvscChannel,
    operation: VstorOperation,
    fill: (view: DataView) => void = () => {},
  ): Promise<{ status: number; view: DataView }> {
    const reply = await channel.control(operation, fill, this.options.timeoutMs ?? 10_000);
    const view = new DataView(reply.buffer, reply.byteOffset, reply.byteLength);
    const answered = view.getUint32(Offsets.operation, true);
    if (answered !== VstorOperation.CompleteIo) {
      throw new StorvscError(
        `the host answered ${VstorOperation[operation]} with operation ${answered}, not COMPLETE_IO`,
      );
    }
    return { status: view.getUint32(Offsets.status, true), view };
  }

  private async negotiate(primary: StorvscChannel, order: readonly number[]): Promise<void> {
    const must = async (operation: VstorOperation): Promise<DataView> => {
      const { status, view } = await this.step(primary, operation);
      this.handshake.push({ operation: VstorOperation[operation], status });
      if (status !== NtStatus.Success) {
        throw new StorvscError(
          `the host refused ${VstorOperation[operation]}: status ${hex32(status)}`,
        );
      }
      return view;
    };
    await must(VstorOperation.BeginInitialization);
    let lastStatus = 0;
    for (const version of order) {
      const { status } = await this.step(primary, VstorOperation.QueryProtocolVersion, (v) =>
        v.setUint16(Offsets.version, version, true),
      );
      this.handshake.push({ operation: 'QueryProtocolVersion', status, version });
      lastStatus = status;
      if (status === NtStatus.Success) {
        this.version = version;
        break;
      }
    }
    if (this.version === 0) {
      throw new StorvscError(
        `the host refused every storage protocol version offered (${order.map(vmstorVersionString).join(', ')}); last status ${hex32(lastStatus)}`,
      );
    }
    this.packetSize = vstorPacketSize(this.version);
    const props = await must(VstorOperation.QueryProperties);
    const flags = props.getUint32(Offsets.propertyFlags, true);
    this.hostSubchannels =
      flags & StorageChannelFlags.SupportsMultiChannel
        ? props.getUint16(Offsets.maxChannelCount, true)
        : 0;
    // Linux keeps whole pages of the host's maximum; ours is also bounded by one page list.
    const hostMax = Math.floor(props.getUint32(Offsets.maxTransferBytes, true) / 4096) * 4096;
    if (hostMax < 4096) {
      throw new StorvscError(`the host's maximum transfer of ${hostMax} bytes is below one page`);
    }
    this.maxTransfer = Math.min(hostMax, STORVSP_MAX_TRANSFER_BYTES);
    await must(VstorOperation.EndInitialization);
  }

  private async openSubchannels(primary: StorvscChannel, ring: number): Promise<void> {
    const wanted = Math.min(this.hostSubchannels, this.options.subchannels ?? this.hostSubchannels);
    if (wanted <= 0 || this.version < VmstorVersion.Win8) return;
    this.requestedSubchannels = wanted;
    this.device.onSubchannel((sub) => void this.openSubchannel(sub, ring));
    const { status } = await this.step(primary, VstorOperation.CreateSubChannels, (v) =>
      v.setUint16(Offsets.subChannelCount, wanted, true),
    );
    this.handshake.push({ operation: 'CreateSubChannels', status });
    if (status !== NtStatus.Success) {
      this.log(`storvsc: the host refused ${wanted} sub-channels: status ${hex32(status)}`);
      return;
    }
    // Sub-channels are usable as they open; wait (briefly) for all so I/O spreads from the start.
    const deadline = Date.now() + (this.options.timeoutMs ?? 10_000);
    while (this.channels.size < wanted + 1 && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.subchannelWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    if (this.channels.size < wanted + 1) {
      this.log(`storvsc: only ${this.channels.size - 1} of ${wanted} sub-channels opened`);
    }
  }

  private async openSubchannel(sub: GuestDevice, ring: number): Promise<void> {
    if (this.gone) return;
    if (sub.offer.subchannelIndex > this.requestedSubchannels) return;
    if (this.channels.has(sub.offer.subchannelIndex)) return;
    try {
      const channel: GuestChannel = await sub.open({
        sendRingBytes: ring,
        receiveRingBytes: ring,
        userData: new Uint8Array(vmstorageChannelProperties.size),
      });
      if (this.gone) {
        await channel.close();
        return;
      }
      this.channels.add(new StorvscChannel(channel, sub.offer.subchannelIndex, this));
    } catch (error) {
      this.log(
        `storvsc: cannot open sub-channel ${sub.offer.subchannelIndex}: ${(error as Error).message}`,
      );
    }
    for (const wake of this.subchannelWaiters.splice(0)) wake();
  }

  // --- requests ----------------------------------------------------------------

  /** Runs one SCSI request on the least busy channel (waiting for a free slot when all are taken). */
  submit(command: SrbCommand): Promise<SrbResult> {
    if (this.state !== 'ready') {
      return Promise.reject(new StorvscError(`storvsc controller is ${this.state}`));
    }
    const channel = this.pickChannel();
    return channel ? channel.execute(command) : this.submitLater(command);
  }

  private async submitLater(command: SrbCommand): Promise<SrbResult> {
    for (;;) {
      await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
      if (this.state !== 'ready') throw new StorvscError(`storvsc controller is ${this.state}`);
      const channel = this.pickChannel();
      if (channel) return channel.execute(command);
    }
  }

  /** The channel for the next request: a turn's requests stay on one, each turn the least busy. */
  private pickChannel(): StorvscChannel | undefined {
    return this.channels.pick();
  }

  slotFreed(): void {
    this.slotWaiters.shift()?.();
  }

  /** The host announced a change (ENUMERATE_BUS / REMOVE_DEVICE). */
  rescanRequested(): void {
    if (this.state !== 'ready') return;
    void this.rescan().catch((error: Error) =>
      this.log(`storvsc: rescan failed: ${error.message}`),
    );
  }

  /** A request to `lun` came back INVALID_LUN: the disk is gone. */
  lunGone(lun: number): void {
    this.disks.get(lun)?.markRemoved();
    this.rescanRequested();
  }

  // --- scanning ------------------------------------------------------------------

  /**
   * REPORT LUNS, then: disks no longer listed (or found removed) go away,
   * new LUNs are probed. Concurrent calls coalesce into one more pass.
   */
  rescan(): Promise<void> {
    if (this.scanning) {
      this.scanAgain = true;
      return this.scanning;
    }
    this.scanning = (async () => {
      try {
        do {
          this.scanAgain = false;
          this.rescans++;
          await this.scanOnce();
        } while (this.scanAgain && this.state === 'ready');
      } finally {
        this.scanning = undefined;
      }
    })();
    return this.scanning;
  }

  private async scanOnce(): Promise<void> {
    const luns = await this.reportLuns();
    const present = new Set(luns);
    for (const [lun, disk] of [...this.disks]) {
      if (!present.has(lun) || disk.removed) await this.removeDisk(lun);
    }
    for (const lun of luns) {
      if (this.disks.has(lun) || this.state !== 'ready') continue;
      try {
        const disk = await probeLun(this, lun);
        if (!disk) continue;
        if (this.state !== 'ready') {
          disk.markRemoved();
          return;
        }
        this.disks.set(lun, disk);
        await this.options.onDiskAdded?.(this, disk);
      } catch (error) {
        this.log(`storvsc: LUN ${lun}: ${(error as Error).message}`);
      }
    }
  }

  private async reportLuns(): Promise<number[]> {
    let allocation = 8 + 8 * 256;
    for (let attempt = 0; attempt < 4; attempt++) {
      const { result, data } = await this.command(0, cdbs.reportLuns({ allocation }), allocation);
      if (result.scsiStatus !== 0) {
        throw new ScsiCommandError('REPORT LUNS', result);
      }
      const parsed = parseReportLuns(data);
      if (!parsed.ok) throw new StorvscError(parsed.error);
      if (parsed.value.truncated && allocation < 8 + parsed.value.listLength) {
        allocation = Math.min(8 + parsed.value.listLength, this.maxTransfer);
        continue;
      }
      const out: number[] = [];
      for (const entry of parsed.value.luns) {
        if (entry.lun !== undefined && entry.lun <= 255 && !out.includes(entry.lun))
          out.push(entry.lun);
      }
      return out.sort((a, b) => a - b);
    }
    throw new StorvscError('REPORT LUNS kept growing');
  }

  /** A small data-in command (INQUIRY, REPORT LUNS, ...): its result and the bytes moved. */
  async command(
    lun: number,
    cdb: Uint8Array,
    allocation: number,
  ): Promise<{ result: SrbResult; data: Uint8Array }> {
    const pool = this.buffers;
    if (!pool) throw new StorvscError('storvsc controller has no I/O buffers');
    if (allocation === 0) {
      const result = await this.submit({ lun, cdb, direction: 'none' });
      return { result, data: new Uint8Array(0) };
    }
    const buffer = await pool.acquire(allocation);
    try {
      const result = await this.submit({ lun, cdb, direction: 'in', buffer });
      const data = new Uint8Array(result.transferred);
      buffer.copyOut(data);
      return { result, data };
    } finally {
      buffer.release();
    }
  }

  private async removeDisk(lun: number): Promise<void> {
    const disk = this.disks.get(lun);
    if (!disk) return;
    this.disks.delete(lun);
    disk.markRemoved();
    try {
      await this.options.onDiskRemoved?.(this, disk);
    } catch (error) {
      this.log(`storvsc: removing LUN ${lun}: ${(error as Error).message}`);
    }
  }

  // --- stop ------------------------------------------------------------------------

  /** Removes the disks, fails what is in flight, closes the channels. */
  async stop(): Promise<void> {
    const wasReady = this.state === 'ready';
    if (this.state !== 'failed') this.state = 'removed';
    for (const lun of [...this.disks.keys()]) await this.removeDisk(lun);
    for (const wake of this.slotWaiters.splice(0)) wake();
    let outstanding = 0;
    const channels = this.channels.clear();
    for (const channel of channels) {
      outstanding += channel.inFlight;
      channel.fail('storvsc controller removed');
    }
    // Sub-channels first, then the primary (Linux closes them in that order).
    for (const channel of [...channels].reverse()) {
      await channel.channel
        .close()
        .catch((error: Error) => this.log(`storvsc: close: ${error.message}`));
    }
    // Pages a request was still using when it was failed stay set aside: the host may write them yet.
    this.buffers?.close(outstanding === 0);
    if (wasReady) this.log(`storvsc: controller ${this.offerInstance} removed`);
  }

  // --- status ------------------------------------------------------------------------

  channelCounters(): ChannelCounters[] {
    return this.channels.list().map((c) => c.counters);
  }

  versionString(): string {
    return this.version ? vmstorVersionString(this.version) : 'none';
  }
}

/** The storvsc driver: one controller per offered SCSI device. */
export class StorvscDriver implements VmbusDriver {
  readonly name = 'storvsc';
  readonly classId = SCSI_CLASS_ID;
  readonly controllers = new Map<number, StorvscController>();
  /** Probes that failed, by instance id, with the reason (for status). */
  readonly failures = new Map<string, string>();

  constructor(private readonly optionsFor: (device: GuestDevice) => StorvscOptions = () => ({})) {}

  async probe(device: GuestDevice): Promise<void> {
    const controller = new StorvscController(device, this.optionsFor(device));
    this.controllers.set(device.offer.relid, controller);
    try {
      await controller.start();
      this.failures.delete(device.offer.instanceId);
    } catch (error) {
      this.controllers.delete(device.offer.relid);
      this.failures.set(device.offer.instanceId, (error as Error).message);
      throw error;
    }
  }

  async remove(device: GuestDevice): Promise<void> {
    const controller = this.controllers.get(device.offer.relid);
    if (!controller) return;
    this.controllers.delete(device.offer.relid);
    await controller.stop();
  }
}

export { GuestScsiDisk, StorvscError };
