/**
 * The host's synthetic SCSI controller (storvsp): a VMBus device of the SCSI
 * class whose channels carry VSTOR packets, executed against a SCSI target
 * holding the controller's disks.
 *
 * The handshake runs on the primary channel, in the order the guest must
 * follow (as Hyper-V and OpenVMM's storvsp enforce it): BEGIN_INITIALIZATION,
 * QUERY_PROTOCOL_VERSION until a version the host supports (others get
 * REVISION_MISMATCH), QUERY_PROPERTIES (sub-channel count, maximum
 * transfer), optionally CREATE_SUB_CHANNELS, END_INITIALIZATION. Anything
 * out of order gets INVALID_DEVICE_STATE; request blocks run only after it.
 *
 * Completions are as long as the request the guest sent (Hyper-V's rule,
 * which Linux relies on during the handshake); unsolicited packets
 * (ENUMERATE_BUS when a disk is added, REMOVE_DEVICE when one goes) are as
 * long as the negotiated version's packet.
 */

import type { BlockDevice } from '../../../block/block-device.ts';
import { ScsiDisk } from '../../../scsi/target/disk.ts';
import { ScsiTarget } from '../../../scsi/target/target.ts';
import type {
  DeviceBus,
  GuestMemoryAccess,
  OfferParameters,
  OpenRequest,
  VmbusDevice,
} from '../../../vmbus/device.ts';
import type { Queue } from '../../../vmbus/queue.ts';
import { RateLimitedLog } from '../../../vmbus/rate-limited-log.ts';
import {
  DEFAULT_HOST_STORVSC_VERSIONS,
  NtStatus,
  Offsets,
  SCSI_CLASS_ID,
  STORVSC_RING_BYTES,
  STORVSP_MAX_TRANSFER_BYTES,
  StorageChannelFlags,
  VmstorVersion,
  VSTOR_HEADER_SIZE,
  VstorOperation,
  vmscsiRequest,
  vmstorageChannelProperties,
  vmstorVersionString,
  vstorPacketSize,
} from '../protocol.ts';
import type { SrbRequest } from './srb-request.ts';
import { type QueueCounters, StorvspChannel } from './storvsp-channel.ts';

/** Highest LUN a controller holds (REPORT LUNS' flat space addressing, as Hyper-V uses). */
export const MAX_LUN = 254;

/** Why `bytes` cannot be a controller's maximum transfer, or undefined when it can. */
export function maxTransferProblem(bytes: number): string | undefined {
  if (!Number.isInteger(bytes) || bytes < 4096 || bytes > STORVSP_MAX_TRANSFER_BYTES) {
    return `must be a multiple of 4096 in 4096..${STORVSP_MAX_TRANSFER_BYTES}, got ${bytes}`;
  }
  return bytes % 4096 === 0
    ? undefined
    : `must be a multiple of 4096 in 4096..${STORVSP_MAX_TRANSFER_BYTES}, got ${bytes}`;
}

export type HandshakePhase = 'begin' | 'query-version' | 'query-properties' | 'end-init' | 'ready';

export interface StorvspOptions {
  readonly instanceId?: string;
  /** Sub-channels the host can offer (channels - 1). */
  readonly maxSubchannels?: number;
  /** Protocol versions the host accepts (default 6.2, 6.0, 5.1). */
  readonly versions?: readonly number[];
  /** Largest transfer of one request (default and most 1 MiB). */
  readonly maxTransferBytes?: number;
  readonly ringBytes?: number;
  readonly log?: (message: string) => void;
}

/** What the controller knows of an attached disk, for status and detach. */
export interface AttachedDisk {
  readonly lun: number;
  readonly device: BlockDevice;
  readonly disk: ScsiDisk;
  /** Where it came from (a path, or "memory"). */
  readonly source: string;
}

export interface DiskView {
  lun: number;
  capacity: number;
  format: string;
  source: string;
  readOnly: boolean;
  blockSize: number;
  identifier: string;
}

/** One operation the guest sent on the primary channel, in order (for tests and logs). */
export interface ControlEvent {
  readonly operation: number;
  readonly status: number;
  readonly version?: number;
}

export class StorvspDevice implements VmbusDevice {
  readonly offer: OfferParameters;
  readonly target = new ScsiTarget();
  /** Answers for paths/targets other than 0/0: REPORT LUNS empty, INQUIRY "no unit". */
  private readonly nowhere = new ScsiTarget();
  readonly versions: readonly number[];
  readonly maxTransfer: number;
  readonly maxSubchannels: number;
  phase: HandshakePhase = 'begin';
  version = 0;
  /** What happened on the primary channel's control path, in order. */
  readonly controlLog: ControlEvent[] = [];
  private bus: DeviceBus | undefined;
  private readonly queues = new Map<Queue, StorvspChannel>();
  private primary: StorvspChannel | undefined;
  private subchannelsOffered = 0;
  private readonly disks = new Map<number, AttachedDisk>();
  private readonly logger: RateLimitedLog;
  /** Counters of channels that closed, so totals survive reopen. */
  private readonly closedCounters: QueueCounters[] = [];

  constructor(options: StorvspOptions = {}) {
    this.maxSubchannels = options.maxSubchannels ?? 0;
    this.versions = options.versions ?? DEFAULT_HOST_STORVSC_VERSIONS;
    const max = options.maxTransferBytes ?? STORVSP_MAX_TRANSFER_BYTES;
    const problem = maxTransferProblem(max);
    if (problem) throw new RangeError(`storvsp: maximum transfer ${problem}`);
    this.maxTransfer = max;
    const ring = options.ringBytes ?? STORVSC_RING_BYTES;
    this.offer = {
      classId: SCSI_CLASS_ID,
      instanceId: options.instanceId ?? crypto.randomUUID(),
      sendRingBytes: ring,
      receiveRingBytes: ring,
      maxSubchannels: this.maxSubchannels,
    };
    this.logger = new RateLimitedLog(options.log ?? (() => {}));
  }

  get memory(): GuestMemoryAccess {
    if (!this.bus) throw new Error('storvsp is not attached to a bus');
    return this.bus.memory;
  }

  get ready(): boolean {
    return this.phase === 'ready';
  }

  attach(bus: DeviceBus): void {
    this.bus = bus;
  }

  open(channel: Queue, request: OpenRequest): void {
    const queue = new StorvspChannel(this, channel, request.subchannelIndex);
    this.queues.set(channel, queue);
    if (request.subchannelIndex === 0) {
      this.primary = queue;
      // A (re)opened primary channel starts a new handshake.
      this.phase = 'begin';
      this.version = 0;
    }
  }

  close(channel: Queue): void {
    const queue = this.queues.get(channel);
    if (!queue) return;
    queue.close();
    this.closedCounters.push({ ...queue.counters, inFlight: 0 });
    this.queues.delete(channel);
    if (queue === this.primary) {
      this.primary = undefined;
      this.phase = 'begin';
    }
  }

  // --- disks -----------------------------------------------------------------

  /**
   * Hot-adds (or, before the guest connects, adds) a disk at `lun` — the
   * lowest free LUN when none is given — and tells the guest.
   */
  attachDisk(requested: number | undefined, device: BlockDevice, source: string): AttachedDisk {
    const lun = this.freeLun(requested);
    const disk = new ScsiDisk(device, { maxTransferBytes: this.maxTransfer });
    this.target.attach(lun, disk);
    const attached: AttachedDisk = { lun, device, disk, source };
    this.disks.set(lun, attached);
    this.announce(VstorOperation.EnumerateBus, lun);
    return attached;
  }

  /**
   * Hot-removes the disk at `lun`: commands still running on it end with
   * LOGICAL UNIT NOT SUPPORTED once the backend is done with them, the
   * guest is told, and the disk is returned for its owner to close.
   */
  async detachDisk(lun: number): Promise<AttachedDisk> {
    const attached = this.disks.get(lun);
    if (!attached) throw new Error(`no disk is attached at LUN ${lun}`);
    this.disks.delete(lun);
    const drained = this.target.detach(lun);
    this.announce(VstorOperation.RemoveDevice, lun);
    await drained;
    return attached;
  }

  /**
   * The LUN a new disk would take: `requested` when it is valid and free,
   * the lowest free LUN when none is asked for; throws saying why not.
   */
  freeLun(requested?: number): number {
    if (requested === undefined) {
      for (let lun = 0; lun <= MAX_LUN; lun++) if (!this.disks.has(lun)) return lun;
      throw new Error(`every LUN 0..${MAX_LUN} of the controller is in use`);
    }
    if (!Number.isInteger(requested) || requested < 0 || requested > MAX_LUN) {
      throw new RangeError(`LUN ${requested} is not an integer in 0..${MAX_LUN}`);
    }
    const holder = this.disks.get(requested);
    if (holder) throw new Error(`LUN ${requested} already holds a disk (${holder.source})`);
    return requested;
  }

  attachedDisks(): AttachedDisk[] {
    return [...this.disks.values()].sort((a, b) => a.lun - b.lun);
  }

  diskViews(): DiskView[] {
    return this.attachedDisks().map((d) => ({
      lun: d.lun,
      capacity: d.device.size,
      format: d.device.format,
      source: d.source,
      readOnly: d.device.readOnly,
      blockSize: d.device.logicalSectorSize,
      identifier: Buffer.from(d.disk.identity.identifier).toString('hex'),
    }));
  }

  /** Sends ENUMERATE_BUS / REMOVE_DEVICE when the guest is past the handshake. */
  private announce(operation: VstorOperation, lun: number): void {
    const queue = this.primary;
    if (!queue || this.phase !== 'ready' || this.version < VmstorVersion.Win7) return;
    const packet = new Uint8Array(vstorPacketSize(this.version));
    const v = new DataView(packet.buffer);
    v.setUint32(Offsets.operation, operation, true);
    // The LUN is a hint; the guest rescans the whole bus either way.
    v.setUint8(Offsets.lun, lun);
    if (!queue.notify(packet)) this.warn(`could not announce ${VstorOperation[operation]}`);
  }

  // --- packets -----------------------------------------------------------------

  execute(request: SrbRequest): void {
    const target = request.onTarget0 ? this.target : this.nowhere;
    void target.execute(request.lun, request.command).then(request.onResult);
  }

  control(
    queue: StorvspChannel,
    operation: number,
    payload: Uint8Array,
    lo: number,
    hi: number,
  ): void {
    const size =
      VSTOR_HEADER_SIZE + Math.min(payload.length - VSTOR_HEADER_SIZE, vmscsiRequest.size);
    const reply = new Uint8Array(size);
    const body = reply.subarray(VSTOR_HEADER_SIZE);
    const status = this.handle(queue, operation, payload, body);
    const v = new DataView(reply.buffer);
    v.setUint32(Offsets.operation, VstorOperation.CompleteIo, true);
    v.setUint32(Offsets.status, status, true);
    queue.send(reply, lo, hi);
  }

  /** Runs one control operation; writes its answer's union into `body`, returns the NT status. */
  private handle(
    queue: StorvspChannel,
    operation: number,
    payload: Uint8Array,
    body: Uint8Array,
  ): NtStatus {
    const primary = queue === this.primary;
    const record = (status: NtStatus, version?: number): NtStatus => {
      if (primary && this.controlLog.length < 1000) {
        this.controlLog.push(
          version === undefined ? { operation, status } : { operation, status, version },
        );
      }
      return status;
    };
    switch (operation) {
      case VstorOperation.BeginInitialization:
        if (!primary || this.phase !== 'begin') return record(NtStatus.InvalidDeviceState);
        this.phase = 'query-version';
        return record(NtStatus.Success);
      case VstorOperation.QueryProtocolVersion: {
        if (!primary || this.phase !== 'query-version') return record(NtStatus.InvalidDeviceState);
        const asked =
          payload.length >= VSTOR_HEADER_SIZE + 2
            ? new DataView(payload.buffer, payload.byteOffset).getUint16(Offsets.version, true)
            : 0;
        new DataView(body.buffer, body.byteOffset, body.byteLength).setUint16(0, asked, true);
        if (!this.versions.includes(asked)) return record(NtStatus.RevisionMismatch, asked);
        this.version = asked;
        this.phase = 'query-properties';
        return record(NtStatus.Success, asked);
      }
      case VstorOperation.QueryProperties: {
        if (!primary || this.phase !== 'query-properties')
          return record(NtStatus.InvalidDeviceState);
        const multi = this.version >= VmstorVersion.Win8;
        const props = vmstorageChannelProperties.write({
          reserved: 0,
          max_channel_cnt: multi ? this.maxSubchannels : 0,
          reserved1: 0,
          flags: multi ? StorageChannelFlags.SupportsMultiChannel : 0,
          max_transfer_bytes: this.maxTransfer,
          reserved2: 0n,
        });
        body.set(props.subarray(0, Math.min(props.length, body.length)));
        this.phase = 'end-init';
        return record(NtStatus.Success);
      }
      case VstorOperation.CreateSubChannels: {
        if (!primary || (this.phase !== 'end-init' && this.phase !== 'ready'))
          return record(NtStatus.InvalidDeviceState);
        if (this.version < VmstorVersion.Win8) return record(NtStatus.InvalidDeviceState);
        const count =
          payload.length >= VSTOR_HEADER_SIZE + 2
            ? new DataView(payload.buffer, payload.byteOffset).getUint16(
                Offsets.subChannelCount,
                true,
              )
            : 0;
        if (count > this.maxSubchannels) {
          this.warn(
            `guest asked for ${count} sub-channels; the controller offers at most ${this.maxSubchannels}`,
          );
          return record(NtStatus.InvalidParameter);
        }
        if (count > this.subchannelsOffered) {
          this.bus?.offerSubchannels(count - this.subchannelsOffered);
          this.subchannelsOffered = count;
        }
        return record(NtStatus.Success);
      }
      case VstorOperation.EndInitialization:
        if (!primary || this.phase !== 'end-init') return record(NtStatus.InvalidDeviceState);
        this.phase = 'ready';
        return record(NtStatus.Success);
      case VstorOperation.ExecuteSrb:
        // Only reached before the handshake ended.
        return record(NtStatus.InvalidDeviceState);
      case VstorOperation.ResetLun:
      case VstorOperation.ResetAdapter:
      case VstorOperation.ResetBus:
        // Requests are never held back, so there is nothing to abort (Hyper-V answers these as no-ops too).
        return record(this.phase === 'ready' ? NtStatus.Success : NtStatus.InvalidDeviceState);
      default:
        // FCHBA_DATA (not a Fibre Channel adapter), host-to-guest operations and unknown codes.
        return record(NtStatus.InvalidDeviceRequest);
    }
  }

  /** Logs what the guest got wrong, at a limited rate (the counters keep the totals). */
  warn(message: string): void {
    this.logger.log(`storvsp: ${message}`);
  }

  // --- status ------------------------------------------------------------------

  channelCounters(): QueueCounters[] {
    return [...this.queues.values()]
      .map((q) => ({ ...q.counters }))
      .sort((a, b) => a.index - b.index);
  }

  /** Totals over every channel, open or closed. */
  totals(): Omit<QueueCounters, 'index'> {
    const all = [...this.closedCounters, ...this.channelCounters()];
    const sum = (k: keyof Omit<QueueCounters, 'index'>): number =>
      all.reduce((n, c) => n + c[k], 0);
    return {
      requests: sum('requests'),
      completions: sum('completions'),
      reads: sum('reads'),
      writes: sum('writes'),
      bytesRead: sum('bytesRead'),
      bytesWritten: sum('bytesWritten'),
      errors: sum('errors'),
      rejected: sum('rejected'),
      badPackets: sum('badPackets'),
      busy: sum('busy'),
      inFlight: sum('inFlight'),
      maxInFlight: Math.max(0, ...all.map((c) => c.maxInFlight)),
      backlogged: sum('backlogged'),
    };
  }

  versionString(): string {
    return this.version ? vmstorVersionString(this.version) : 'none';
  }
}
