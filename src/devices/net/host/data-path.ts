/**
 * The NIC's frames, both ways: from the guest's RNDIS packets to the
 * backend, with the offloads the guest delegated passed on where the
 * backend takes them and done here where it does not; and from the backend
 * into the guest's receive buffer, on the channel RSS picks, with the
 * checksum info the guest may rely on.
 */

import { type FrameOffload, type FramePort, GsoType, noOffload } from '../frame-port.ts';
import { fillChecksums, frameLayout, segmentTcp } from '../frames.ts';
import { RndisChannelType } from '../protocol.ts';
import {
  emptyFrameInfo,
  lsoMss,
  type ParsedPacket,
  packetOverhead,
  readPacket,
  wantsL4Checksum,
  writePacketHeader,
} from '../rndis-message.ts';
import { ChecksumInfo, RndisPktinfoFlag } from '../rndis-protocol.ts';
import { ToeplitzHasher } from '../toeplitz.ts';
import type { NetvspChannel } from './netvsp-channel.ts';
import type { ReceiveBuffer } from './receive-buffer.ts';
import type { RndisDevice } from './rndis-device.ts';

export interface NicCounters {
  /** Frames the guest sent, and their bytes. */
  txFrames: number;
  txBytes: number;
  /** Large sends (LSOv2) among them, and the segments the host cut when the backend could not. */
  txLso: number;
  txSegmented: number;
  /** Checksums the guest delegated that the host computed. */
  txChecksumsFilled: number;
  /** Frames the backend delivered to the guest, and their bytes. */
  rxFrames: number;
  rxBytes: number;
  /** Frames for the guest dropped: no receive buffer yet, packet filter closed, or too big. */
  rxDropped: number;
  /** Large frames the guest took coalesced (RSC fragments). */
  rxCoalesced: number;
  /** RNDIS messages from the guest that did not parse. */
  badRndis: number;
}

/** What the data path needs of its NIC. */
export interface DataPathOwner {
  readonly counters: NicCounters;
  readonly rndis: RndisDevice;
  readonly receiveBuffer: ReceiveBuffer | undefined;
  readonly byIndex: readonly (NetvspChannel | undefined)[];
  /** Whether the guest takes large TCP frames coalesced, per IP version. */
  readonly coalescing: { readonly v4: boolean; readonly v6: boolean };
  warn(message: string): void;
}

export interface DataPathOptions {
  readonly backend: FramePort;
  readonly tap?: (direction: 'to-host' | 'to-guest', frame: Uint8Array) => void;
}

/** Room a section keeps for the RNDIS header and per-packet info in front of a frame. */
const SECTION_HEADROOM = 128;
/** Linux's NVSP_RSC_MAX: the most fragments of one coalesced frame. */
const MAX_FRAGMENTS = 562;
/** The offload state of a segment the host made (checksums filled). */
const FILLED = noOffload();

export class DataPath {
  private readonly parsed: ParsedPacket = { dataOffset: 0, dataLength: 0, info: emptyFrameInfo() };
  private readonly header = new DataView(new ArrayBuffer(256));
  private readonly headerBytes = new Uint8Array(this.header.buffer);
  private readonly offload: FrameOffload = noOffload();
  private hasher: ToeplitzHasher | undefined;

  constructor(
    private readonly nic: DataPathOwner,
    private readonly options: DataPathOptions,
  ) {}

  /** A frame from the guest: offloads mapped, checksums or segments made where the backend cannot. */
  fromGuest(view: DataView, at: number, msgLen: number): boolean {
    const problem = readPacket(view, at, msgLen, this.parsed);
    if (problem) {
      this.nic.counters.badRndis++;
      this.nic.warn(problem);
      return false;
    }
    const frame = new Uint8Array(
      view.buffer,
      view.byteOffset + at + this.parsed.dataOffset,
      this.parsed.dataLength,
    );
    const info = this.parsed.info;
    this.nic.counters.txFrames++;
    this.nic.counters.txBytes += frame.length;
    const backend = this.options.backend;
    const offload = this.offload;
    offload.needsChecksum = false;
    offload.dataValid = false;
    offload.gsoType = GsoType.None;
    offload.gsoSize = 0;
    const layout = info.lso || wantsL4Checksum(info.checksum) ? frameLayout(frame) : undefined;
    if (info.lso && layout) {
      this.nic.counters.txLso++;
      const mss = lsoMss(info.lso);
      if (backend.offloads.segmentation && mss > 0) {
        offload.needsChecksum = true;
        offload.csumStart = layout.l4;
        offload.csumOffset = 16;
        offload.gsoType = layout.ipv6 ? GsoType.TcpV6 : GsoType.TcpV4;
        offload.gsoSize = mss;
        offload.headerLength = layout.l4 + layout.l4HeaderLength;
        this.toBackend(frame, offload, true);
        return true;
      }
      const segments = segmentTcp(frame, mss);
      if (!segments) return false;
      this.nic.counters.txSegmented += segments.length;
      for (const segment of segments) this.toBackend(segment, offload, false);
      return true;
    }
    if (wantsL4Checksum(info.checksum) && layout) {
      if (backend.offloads.checksum) {
        offload.needsChecksum = true;
        offload.csumStart = layout.l4;
        offload.csumOffset = layout.protocol === 6 ? 16 : 6;
        this.toBackend(frame, offload, true);
        return true;
      }
      const copy = frame.slice();
      fillChecksums(copy, (info.checksum & ChecksumInfo.txIpHeader) !== 0);
      this.nic.counters.txChecksumsFilled++;
      this.toBackend(copy, offload, false);
      return true;
    }
    this.toBackend(frame, offload, false);
    return true;
  }

  private toBackend(frame: Uint8Array, offload: FrameOffload, unfilled: boolean): void {
    const tap = this.options.tap;
    if (tap) {
      if (unfilled) {
        // The capture shows the frame as it will be on the wire.
        const copy = frame.slice();
        fillChecksums(copy, false);
        tap('to-host', copy);
      } else {
        tap('to-host', frame);
      }
    }
    this.options.backend.send(frame, offload);
  }

  // --- frames for the guest -------------------------------------------------------------

  /** A frame from the backend; false when no receive section is free (the backend waits). */
  fromBackend(frame: Uint8Array, offload: FrameOffload): boolean {
    const buffer = this.nic.receiveBuffer;
    if (!buffer || this.nic.rndis.packetFilter === 0) {
      this.nic.counters.rxDropped++;
      return true;
    }
    if (frame.length > buffer.sectionSize - SECTION_HEADROOM) {
      return this.largeFromBackend(frame, offload, buffer);
    }
    if (offload.needsChecksum) fillChecksums(frame, false);
    const channel = this.channelFor(frame);
    if (!channel) {
      this.nic.counters.rxDropped++;
      return true;
    }
    const info = this.parsed.info;
    info.checksum = offload.needsChecksum || offload.dataValid ? this.validChecksumInfo(frame) : 0;
    info.lso = 0;
    info.vlan = -1;
    info.fragment = 0;
    const ok = channel.deliver(RndisChannelType.Data, (b, section) => {
      const header = writePacketHeader(this.header, 0, frame.length, info);
      b.write(section, 0, this.headerBytes, 0, header);
      b.write(section, header, frame);
      return header + frame.length;
    });
    if (!ok) return false;
    this.nic.counters.rxFrames++;
    this.nic.counters.rxBytes += frame.length;
    this.options.tap?.('to-guest', frame);
    return true;
  }

  /**
   * A frame larger than a section: a TCP large send from a backend that
   * coalesces (a TAP handing over GSO frames). A guest that asked for RSC
   * gets it as consecutive fragments, one section each, marked first / last
   * by the internal RNDIS_PKTINFO_ID (Linux rndis_filter_receive_data
   * reassembles them); any other guest gets it segmented here. Anything else
   * that large cannot be delivered and is dropped.
   */
  private largeFromBackend(
    frame: Uint8Array,
    offload: FrameOffload,
    buffer: ReceiveBuffer,
  ): boolean {
    const layout =
      offload.gsoType === GsoType.TcpV4 || offload.gsoType === GsoType.TcpV6
        ? frameLayout(frame)
        : undefined;
    if (layout?.protocol !== 6) {
      this.nic.counters.rxDropped++;
      return true;
    }
    const rsc = this.nic.coalescing;
    if (layout.ipv6 ? rsc.v6 : rsc.v4) return this.coalesced(frame, buffer);
    const mss =
      offload.gsoSize ||
      buffer.sectionSize - SECTION_HEADROOM - (layout.l4 + layout.l4HeaderLength);
    const segments = segmentTcp(frame, mss);
    if (!segments) {
      this.nic.counters.rxDropped++;
      return true;
    }
    if (buffer.available < segments.length) return false;
    for (const segment of segments) this.fromBackend(segment, FILLED);
    return true;
  }

  private coalesced(frame: Uint8Array, buffer: ReceiveBuffer): boolean {
    const channel = this.channelFor(frame);
    if (!channel) {
      this.nic.counters.rxDropped++;
      return true;
    }
    const info = this.parsed.info;
    const hash = info.hash;
    const checksum = this.validChecksumInfo(frame);
    info.checksum = checksum;
    info.lso = 0;
    info.vlan = -1;
    info.fragment =
      RndisPktinfoFlag.suballoc | RndisPktinfoFlag.firstFragment | RndisPktinfoFlag.lastFragment;
    const room = buffer.sectionSize - packetOverhead(info);
    const count = Math.ceil(frame.length / room);
    if (count > MAX_FRAGMENTS) {
      this.nic.counters.rxDropped++;
      return true;
    }
    if (buffer.available < count) return false;
    for (let i = 0, at = 0; i < count; i++, at += room) {
      const piece = frame.subarray(at, Math.min(frame.length, at + room));
      info.fragment =
        RndisPktinfoFlag.suballoc |
        (i === 0 ? RndisPktinfoFlag.firstFragment : 0) |
        (i === count - 1 ? RndisPktinfoFlag.lastFragment : 0);
      // Checksum, hash and VLAN count from the first fragment (Linux rsc_add_data).
      info.checksum = i === 0 ? checksum : 0;
      info.hash = i === 0 ? hash : -1;
      channel.deliver(RndisChannelType.Data, (b, section) => {
        const header = writePacketHeader(this.header, 0, piece.length, info);
        b.write(section, 0, this.headerBytes, 0, header);
        b.write(section, header, piece);
        return header + piece.length;
      });
    }
    this.nic.counters.rxFrames++;
    this.nic.counters.rxBytes += frame.length;
    this.nic.counters.rxCoalesced++;
    const tap = this.options.tap;
    if (tap) {
      // The capture shows the frame with its checksums, as a receiver would check them.
      const copy = frame.slice();
      fillChecksums(copy, false);
      tap('to-guest', copy);
    }
    return true;
  }

  /** The receive checksum info for a frame whose checksums the host vouches for. */
  private validChecksumInfo(frame: Uint8Array): number {
    const layout = frameLayout(frame);
    if (!layout) return 0;
    let value = layout.ipv6 ? 0 : ChecksumInfo.rxIpSucceeded;
    if (layout.protocol === 6) value |= ChecksumInfo.rxTcpSucceeded;
    else if (layout.protocol === 17) value |= ChecksumInfo.rxUdpSucceeded;
    return value;
  }

  /** The channel RSS picks for a frame (its hash also goes to the guest), or the primary. */
  private channelFor(frame: Uint8Array): NetvspChannel | undefined {
    const table = this.nic.rndis.rssTable;
    this.parsed.info.hash = -1;
    const key = this.nic.rndis.rssKey;
    if (table.length > 0 && key.length === 40) {
      if (this.hasher?.key !== key) this.hasher = new ToeplitzHasher(key);
      const hash = this.hasher.frameHash(frame);
      if (hash !== undefined) {
        this.parsed.info.hash = hash;
        const channel = this.nic.byIndex[table[hash % table.length]!];
        if (channel && !channel.closed) return channel;
      }
    }
    const primary = this.nic.byIndex[0];
    return primary && !primary.closed ? primary : undefined;
  }
}
