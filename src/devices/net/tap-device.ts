/**
 * A TAP device as a frame port: /dev/net/tun opened through the native addon
 * with a virtio-net header in front of each frame (IFF_VNET_HDR), so that
 * partial checksums and GSO frames of up to 64 KiB cross between the kernel
 * and the NIC without either side segmenting or summing them (the way
 * virtio-net and vhost get their speed; Linux include/uapi/linux/virtio_net.h
 * defines the header, drivers/net/tun.c how TUNSETOFFLOAD limits what the
 * kernel hands over).
 *
 * The same class serves both ends: the host's backend (a TAP beside the
 * host's stack or bridge) and the guest's operating-system side of its NIC
 * (a TAP named eth0 in the VM's namespace). Reading runs off a libuv poll on
 * the fd, a bounded batch per wake-up; when the NIC cannot take a frame the
 * poll stops until `resume`.
 */
import { createRequire } from 'node:module';
import {
  type FrameOffload,
  type FramePort,
  type FrameSink,
  GsoType,
  noOffload,
  type PortOffloads,
} from './frame-port.ts';

interface TapAddon {
  tapOpen(name: string, vnetHeader: boolean, offloads: number): { fd: number; name: string };
  tapSetOffload(fd: number, offloads: number): void;
  tapRead(fd: number, buffer: Uint8Array): number;
  tapWrite(fd: number, header: Uint8Array, frame: Uint8Array): number;
  tapClose(fd: number): void;
  pollStart(fd: number, callback: (status: number) => void): unknown;
  pollStop(handle: unknown): void;
  pollResume(handle: unknown): void;
  pollClose(handle: unknown): void;
  readonly TUN_F_CSUM: number;
  readonly TUN_F_TSO4: number;
  readonly TUN_F_TSO6: number;
  readonly EAGAIN: number;
}

function loadAddon(): TapAddon | string {
  try {
    const require = createRequire(import.meta.url);
    const addon = require('../../../native/build/Release/hvkit_native.node') as Partial<TapAddon>;
    if (typeof addon.tapOpen !== 'function')
      return 'the native addon has no TAP support (rebuild it: npm ci)';
    return addon as TapAddon;
  } catch (error) {
    return `the native addon is not built (npm ci builds it): ${(error as Error).message}`;
  }
}

const addon = loadAddon();

/** Why TAP devices cannot be used here, or undefined when they can. */
export function tapUnavailable(): string | undefined {
  return typeof addon === 'string' ? addon : undefined;
}

/** virtio_net_hdr: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset (10 bytes). */
const VNET_HDR = 10;
const NEEDS_CSUM = 1;
const DATA_VALID = 2;
const GSO_ECN = 0x80;
/** The largest frame a TAP hands over: 64 KiB of GSO payload plus headers. */
const READ_BUFFER = VNET_HDR + 65_536 + 256;
/** Frames read per poll wake-up before yielding to the event loop. */
const BATCH = 64;

export interface TapOptions {
  /** Interface name (at most 15 bytes); created when missing. */
  readonly name: string;
  /**
   * Offloads this end accepts from the kernel: partial checksums, and GSO
   * (TCP segmentation) frames on top of them.
   */
  readonly accept: { readonly checksum: boolean; readonly segmentation: boolean };
  /** Called with problems worth a log line (rate-limited by the caller). */
  readonly log?: (message: string) => void;
}

export class TapDevice implements FramePort {
  readonly name: string;
  readonly fd: number;
  /** What the NIC may hand this TAP: the kernel takes partial checksums and GSO frames. */
  readonly offloads: PortOffloads = { checksum: true, segmentation: true };
  readonly link = true;
  private readonly native: TapAddon;
  private poll: unknown;
  private sink: FrameSink | undefined;
  private readonly buffer = new Uint8Array(READ_BUFFER);
  private readonly bufferView = new DataView(this.buffer.buffer);
  private readonly header = new Uint8Array(VNET_HDR);
  private readonly headerView = new DataView(this.header.buffer);
  private readonly offload: FrameOffload = noOffload();
  /** A frame the NIC could not take yet (held until `resume`). */
  private held: { frame: Uint8Array; offload: FrameOffload } | undefined;
  private closed = false;
  private readonly counts = {
    framesIn: 0,
    bytesIn: 0,
    gsoIn: 0,
    framesOut: 0,
    bytesOut: 0,
    writeErrors: 0,
    readErrors: 0,
    waits: 0,
  };

  constructor(private readonly options: TapOptions) {
    if (typeof addon === 'string') throw new Error(addon);
    this.native = addon;
    if (Buffer.byteLength(options.name) > 15) {
      throw new RangeError(`TAP name ${JSON.stringify(options.name)} is longer than 15 bytes`);
    }
    let flags = 0;
    if (options.accept.checksum) {
      flags |= addon.TUN_F_CSUM;
      if (options.accept.segmentation) flags |= addon.TUN_F_TSO4 | addon.TUN_F_TSO6;
    }
    const opened = addon.tapOpen(options.name, true, flags);
    this.fd = opened.fd;
    this.name = opened.name;
  }

  /** What the kernel may hand this end: MTU frames, or partial-checksum GSO frames too. */
  acceptLarge(on: boolean): void {
    if (this.closed) return;
    const a = this.native;
    const flags = on
      ? a.TUN_F_CSUM | a.TUN_F_TSO4 | a.TUN_F_TSO6
      : this.options.accept.checksum
        ? a.TUN_F_CSUM | (this.options.accept.segmentation ? a.TUN_F_TSO4 | a.TUN_F_TSO6 : 0)
        : 0;
    a.tapSetOffload(this.fd, flags);
  }

  start(sink: FrameSink): void {
    if (this.closed) return;
    this.sink = sink;
    this.poll ??= this.native.pollStart(this.fd, () => this.drain());
  }

  resume(): void {
    if (this.closed || !this.sink) return;
    const held = this.held;
    if (held) {
      if (!this.sink(held.frame, held.offload)) return;
      this.held = undefined;
      this.counts.framesIn++;
      this.counts.bytesIn += held.frame.length;
    }
    if (this.poll) this.native.pollResume(this.poll);
    this.drain();
  }

  /** Reads what the kernel has queued, a batch at a time, into the NIC. */
  private drain(): void {
    const sink = this.sink;
    if (!sink || this.held || this.closed) return;
    for (let i = 0; i < BATCH; i++) {
      const n = this.native.tapRead(this.fd, this.buffer);
      if (n < 0) {
        if (-n !== this.native.EAGAIN) {
          this.counts.readErrors++;
          this.options.log?.(`tap ${this.name}: read failed (errno ${-n})`);
        }
        return;
      }
      if (n < VNET_HDR + 14) continue;
      const offload = this.readHeader();
      const frame = this.buffer.subarray(VNET_HDR, n);
      if (offload.gsoType !== GsoType.None) this.counts.gsoIn++;
      if (!sink(frame, offload)) {
        // The NIC is full: keep this frame and stop reading until it says resume.
        this.held = { frame: frame.slice(), offload: { ...offload } };
        this.counts.waits++;
        if (this.poll) this.native.pollStop(this.poll);
        return;
      }
      this.counts.framesIn++;
      this.counts.bytesIn += frame.length;
    }
  }

  private readHeader(): FrameOffload {
    const v = this.bufferView;
    const o = this.offload;
    const flags = this.buffer[0]!;
    o.needsChecksum = (flags & NEEDS_CSUM) !== 0;
    o.dataValid = (flags & DATA_VALID) !== 0;
    const gso = this.buffer[1]! & ~GSO_ECN;
    o.gsoType =
      gso === 1
        ? GsoType.TcpV4
        : gso === 4
          ? GsoType.TcpV6
          : gso === 3
            ? GsoType.Udp
            : GsoType.None;
    o.headerLength = v.getUint16(2, true);
    o.gsoSize = v.getUint16(4, true);
    o.csumStart = v.getUint16(6, true);
    o.csumOffset = v.getUint16(8, true);
    return o;
  }

  /** A frame out of the NIC into the kernel. */
  send(frame: Uint8Array, offload: FrameOffload): void {
    if (this.closed) return;
    const h = this.headerView;
    this.header[0] =
      (offload.needsChecksum ? NEEDS_CSUM : 0) | (offload.dataValid ? DATA_VALID : 0);
    this.header[1] = offload.gsoType;
    h.setUint16(2, offload.gsoType === GsoType.None ? 0 : offload.headerLength, true);
    h.setUint16(4, offload.gsoType === GsoType.None ? 0 : offload.gsoSize, true);
    h.setUint16(6, offload.needsChecksum ? offload.csumStart : 0, true);
    h.setUint16(8, offload.needsChecksum ? offload.csumOffset : 0, true);
    const n = this.native.tapWrite(this.fd, this.header, frame);
    if (n < 0) {
      this.counts.writeErrors++;
      // EIO: the interface is down; the frame is lost, as on a wire.
      if (this.counts.writeErrors <= 3)
        this.options.log?.(`tap ${this.name}: write failed (errno ${-n})`);
      return;
    }
    this.counts.framesOut++;
    this.counts.bytesOut += frame.length;
  }

  stats(): Record<string, number> {
    return { ...this.counts };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.sink = undefined;
    if (this.poll) this.native.pollClose(this.poll);
    this.poll = undefined;
    // Closing the last fd of a TAP this process created removes the interface.
    this.native.tapClose(this.fd);
  }
}
