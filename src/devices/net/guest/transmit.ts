/**
 * The guest's transmit path (Linux netvsc_drv.c netvsc_xmit, netvsc.c
 * netvsc_send): a frame from the guest's stack gets its per-packet info —
 * LSOv2 for a large TCP send (MSS and TCP header offset), a checksum request
 * for a frame whose TCP/UDP checksum was left undone — when the host took
 * that offload, or the guest does the work itself (segments, checksums).
 * Then the RNDIS packet goes into a free send-buffer section when it fits,
 * else into a page-aligned bounce buffer sent as a GPA-direct page list, on
 * the channel the send table gives the frame's flow.
 */
import type { ChannelSet } from '../../../vmbus/channel-set.ts';
import { type FrameOffload, GsoType } from '../frame-port.ts';
import { fillChecksums, frameLayout, IPPROTO_TCP, IPPROTO_UDP, segmentTcp } from '../frames.ts';
import { RndisChannelType } from '../protocol.ts';
import { emptyFrameInfo, lsoValue, packetOverhead, writePacketHeader } from '../rndis-message.ts';
import { ChecksumInfo } from '../rndis-protocol.ts';
import type { BouncePool, SendSections } from './guest-buffers.ts';
import type { NetvscChannel } from './netvsc-channel.ts';
import type { GuestOffloads } from './rndis-setup.ts';

export interface TransmitCounters {
  txFrames: number;
  txBytes: number;
  /** Large sends that went to the host whole, with LSOv2 info. */
  txLso: number;
  /** Segments the guest cut itself (the host did not take LSO). */
  txSegmented: number;
  /** Checksums left to the host, and those the guest computed itself. */
  txChecksumOffloaded: number;
  txChecksumsFilled: number;
  /** Frames sent through a bounce buffer (too big for a send section). */
  txBounced: number;
  /** Frames dropped: not deliverable (too big, not TCP for a large send, NIC not up). */
  txDropped: number;
}

/** What the transmit path needs of its NIC. */
export interface TransmitOwner {
  readonly channels: ChannelSet<NetvscChannel>;
  readonly sendTable: readonly number[];
  readonly sections: SendSections | undefined;
  readonly bounce: BouncePool | undefined;
  readonly offloads: GuestOffloads;
  readonly mtu: number;
  readonly counters: TransmitCounters;
}

/** A flow hash for the send table: FNV-1a over the addresses and ports (Linux uses the skb hash). */
export function flowHash(frame: Uint8Array): number {
  const layout = frameLayout(frame);
  if (!layout) return 0;
  const from = layout.ipv6 ? layout.l3 + 8 : layout.l3 + 12;
  const to = layout.ipv6 ? layout.l3 + 40 : layout.l3 + 20;
  let h = 0x811c9dc5;
  const mix = (b: number): void => {
    h = Math.imul(h ^ b, 0x01000193);
  };
  for (let i = from; i < to; i++) mix(frame[i]!);
  if (layout.protocol === IPPROTO_TCP || layout.protocol === IPPROTO_UDP) {
    for (let i = layout.l4; i < layout.l4 + 4; i++) mix(frame[i]!);
  }
  return h >>> 0;
}

export class Transmitter {
  private readonly info = emptyFrameInfo();

  constructor(private readonly nic: TransmitOwner) {}

  /**
   * Sends one frame; false when no channel, section or bounce buffer is
   * free (the caller waits for a completion and tries again). Frames that
   * can never be sent are dropped and counted (true).
   */
  send(frame: Uint8Array, offload: FrameOffload): boolean {
    const nic = this.nic;
    const channel = nic.channels.byHash(flowHash(frame), nic.sendTable);
    if (!channel) return false;
    const info = this.info;
    info.checksum = 0;
    info.lso = 0;
    info.vlan = -1;
    info.hash = -1;
    info.fragment = 0;
    const large = offload.gsoType !== GsoType.None && frame.length > nic.mtu + 14;
    if (large) {
      const layout = frameLayout(frame);
      const tcp = layout?.protocol === IPPROTO_TCP;
      const allowed = layout && tcp && (layout.ipv6 ? nic.offloads.lso6 : nic.offloads.lso4);
      if (layout && allowed && frame.length - layout.l4 <= nic.offloads.lsoMaxSize + 128) {
        info.lso = lsoValue(offload.gsoSize, layout.l4, layout.ipv6);
        const placed = this.place(channel, frame, false);
        if (placed === 'sent') nic.counters.txLso++;
        return placed !== 'wait';
      }
      // The host takes no large send: segment it here, each segment with its checksums.
      const segments =
        layout && tcp ? segmentTcp(frame, offload.gsoSize || nic.mtu - 40) : undefined;
      if (
        !segments ||
        (nic.sections?.available ?? 0) + (nic.bounce?.available ?? 0) < segments.length
      ) {
        if (!segments) {
          nic.counters.txDropped++;
          return true;
        }
        return false;
      }
      for (const segment of segments) {
        if (this.place(channel, segment, false) === 'sent') nic.counters.txSegmented++;
      }
      return true;
    }
    let fill = false;
    if (offload.needsChecksum) {
      const layout = frameLayout(frame);
      const delegate =
        layout &&
        (layout.protocol === IPPROTO_TCP
          ? layout.ipv6
            ? nic.offloads.tcp6
            : nic.offloads.tcp4
          : layout.protocol === IPPROTO_UDP &&
            (layout.ipv6 ? nic.offloads.udp6 : nic.offloads.udp4));
      if (layout && delegate) {
        info.checksum =
          (layout.ipv6 ? ChecksumInfo.txIpv6 : ChecksumInfo.txIpv4) |
          (layout.protocol === IPPROTO_TCP ? ChecksumInfo.txTcp : ChecksumInfo.txUdp) |
          (layout.l4 << ChecksumInfo.txTcpHeaderOffsetShift);
      } else {
        fill = true;
      }
    }
    const placed = this.place(channel, frame, fill);
    if (placed === 'sent' && info.checksum) nic.counters.txChecksumOffloaded++;
    return placed !== 'wait';
  }

  /** Writes the RNDIS packet into a section or bounce buffer and sends it. */
  private place(
    channel: NetvscChannel,
    frame: Uint8Array,
    fill: boolean,
  ): 'sent' | 'wait' | 'dropped' {
    const nic = this.nic;
    const total = packetOverhead(this.info) + frame.length;
    const sections = nic.sections;
    let target: Uint8Array | undefined;
    let section = -1;
    let bounce = -1;
    if (sections && total <= sections.sectionSize) section = sections.allocate();
    if (section >= 0 && sections) {
      target = sections.view(section);
    } else if (nic.bounce && total <= nic.bounce.bytesEach) {
      bounce = nic.bounce.allocate();
      if (bounce >= 0) target = nic.bounce.buffers[bounce]!.bytes;
    } else if (!nic.bounce || total > nic.bounce.bytesEach) {
      nic.counters.txDropped++;
      return 'dropped';
    }
    if (!target) return 'wait';
    const view = new DataView(target.buffer, target.byteOffset, target.byteLength);
    const at = writePacketHeader(view, 0, frame.length, this.info);
    target.set(frame, at);
    if (fill) fillChecksums(target.subarray(at, at + frame.length), false);
    const ok =
      section >= 0
        ? channel.sendSection(RndisChannelType.Data, section, total)
        : channel.sendPages(RndisChannelType.Data, bounce, nic.bounce!.range(bounce, total));
    if (!ok) {
      if (section >= 0) sections?.release(section);
      else nic.bounce?.release(bounce);
      return 'wait';
    }
    if (bounce >= 0) nic.counters.txBounced++;
    if (fill) nic.counters.txChecksumsFilled++;
    nic.counters.txFrames++;
    nic.counters.txBytes += frame.length;
    return 'sent';
  }
}
