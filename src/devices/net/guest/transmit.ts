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
  /** From the host's INITIALIZE_C: RNDIS packets one send may carry, and their alignment. */
  readonly maxPacketsPerMessage: number;
  readonly packetAlignment: number;
}

/** A send section being filled with several packets (Linux's msd batching), sent at the end of the batch. */
interface OpenSection {
  channel: NetvscChannel;
  section: number;
  /** Bytes used, and where the last packet starts (its msg_len takes the padding when one more comes). */
  used: number;
  last: number;
  count: number;
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
  private open: OpenSection | undefined;
  private flushQueued = false;

  constructor(private readonly nic: TransmitOwner) {}

  /**
   * Sends the section being filled. Packets that arrive together (a TAP
   * read's batch) share one RNDIS_PKT; the batch closes in a microtask, so
   * it goes out before the queue publishes at the end of the turn.
   */
  flush(): void {
    const o = this.open;
    if (!o) return;
    this.open = undefined;
    if (!o.channel.sendSection(RndisChannelType.Data, o.section, o.used)) {
      this.nic.sections?.release(o.section);
      this.nic.counters.txDropped += o.count;
    }
  }

  private readonly flushLater = (): void => {
    this.flushQueued = false;
    this.flush();
  };

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

  /** Writes the RNDIS packet into a section (shared with others) or a bounce buffer and sends it. */
  private place(
    channel: NetvscChannel,
    frame: Uint8Array,
    fill: boolean,
  ): 'sent' | 'wait' | 'dropped' {
    const nic = this.nic;
    const total = packetOverhead(this.info) + frame.length;
    const sections = nic.sections;
    if (sections && total <= sections.sectionSize) {
      const batched = this.batch(channel, sections, frame, total, fill);
      if (batched !== 'no-section') return batched;
    }
    // A packet of its own: whatever is batched goes first, so a flow keeps its order.
    this.flush();
    const pool = nic.bounce;
    if (!pool || total > pool.bytesEach) {
      if (!sections || total > sections.sectionSize) {
        nic.counters.txDropped++;
        return 'dropped';
      }
      return 'wait';
    }
    const bounce = pool.allocate();
    if (bounce < 0) return 'wait';
    const target = pool.buffers[bounce]!.bytes;
    this.write(target, 0, frame, fill);
    if (!channel.sendPages(RndisChannelType.Data, bounce, pool.range(bounce, total))) {
      pool.release(bounce);
      return 'wait';
    }
    nic.counters.txBounced++;
    this.sent(frame, fill);
    return 'sent';
  }

  /** Adds a packet to the open section (or a fresh one); 'no-section' when none is free. */
  private batch(
    channel: NetvscChannel,
    sections: SendSections,
    frame: Uint8Array,
    total: number,
    fill: boolean,
  ): 'sent' | 'wait' | 'no-section' {
    const nic = this.nic;
    const align = Math.max(1, nic.packetAlignment);
    let o = this.open;
    if (o) {
      const start = Math.ceil(o.used / align) * align;
      const fits =
        o.channel === channel &&
        o.count < nic.maxPacketsPerMessage &&
        start + total <= sections.sectionSize;
      if (fits) {
        // The previous packet's msg_len takes the padding up to the next one (as Linux pads).
        const view = sections.view(o.section);
        const dv = new DataView(view.buffer, view.byteOffset, view.byteLength);
        view.fill(0, o.used, start);
        dv.setUint32(o.last + 4, start - o.last, true);
        this.write(view, start, frame, fill);
        o.last = start;
        o.used = start + total;
        o.count++;
        this.sent(frame, fill);
        if (o.count >= nic.maxPacketsPerMessage) this.flush();
        return 'sent';
      }
      this.flush();
    }
    if (!channel.hasRoom) return 'wait';
    const section = sections.allocate();
    if (section < 0) return 'no-section';
    this.write(sections.view(section), 0, frame, fill);
    o = { channel, section, used: total, last: 0, count: 1 };
    this.open = o;
    this.sent(frame, fill);
    if (nic.maxPacketsPerMessage <= 1) this.flush();
    else if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(this.flushLater);
    }
    return 'sent';
  }

  private write(target: Uint8Array, at: number, frame: Uint8Array, fill: boolean): void {
    const view = new DataView(target.buffer, target.byteOffset, target.byteLength);
    const dataAt = writePacketHeader(view, at, frame.length, this.info);
    target.set(frame, dataAt);
    if (fill) fillChecksums(target.subarray(dataAt, dataAt + frame.length), false);
  }

  private sent(frame: Uint8Array, fill: boolean): void {
    const c = this.nic.counters;
    if (fill) c.txChecksumsFilled++;
    c.txFrames++;
    c.txBytes += frame.length;
  }
}
