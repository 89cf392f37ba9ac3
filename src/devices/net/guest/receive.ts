/**
 * The guest's receive path (Linux rndis_filter_receive_data,
 * netvsc_recv_callback): an RNDIS data packet from the host, read with
 * every offset bounded; fragments of a coalesced frame (RSC) joined on their
 * channel; the frame handed to the port with what the host vouched for —
 * checksums it verified, or, for a coalesced TCP segment larger than the
 * MTU, a large receive the stack takes as one.
 */
import { type FrameOffload, type FramePort, GsoType, noOffload } from '../frame-port.ts';
import { ETH_HLEN, frameLayout, IPPROTO_TCP } from '../frames.ts';
import { NvspStatus } from '../protocol.ts';
import { emptyFrameInfo, type ParsedPacket, readPacket } from '../rndis-message.ts';
import { ChecksumInfo } from '../rndis-protocol.ts';
import type { NetvscChannel } from './netvsc-channel.ts';

export interface ReceiveCounters {
  rxFrames: number;
  rxBytes: number;
  /** Frames that arrived with no port to take them, or before the NIC was up. */
  rxDropped: number;
  /** Frames whose checksums the host vouched for. */
  rxChecksumValid: number;
  /** Frames the host sent coalesced (RSC) that went to the port as one large receive. */
  rxCoalesced: number;
  /** RNDIS messages from the host that did not parse. */
  badRndis: number;
  /** Link changes the host indicated. */
  linkChanges: number;
}

/** What the receive path needs of its NIC. */
export interface ReceiveOwner {
  readonly counters: ReceiveCounters;
  readonly mtu: number;
}

export class Receiver {
  private readonly parsed: ParsedPacket = { dataOffset: 0, dataLength: 0, info: emptyFrameInfo() };
  private readonly rxOffload: FrameOffload = noOffload();

  constructor(private readonly nic: ReceiveOwner) {}

  /** One RNDIS data packet (a private copy); the port is where frames go, when the NIC is up. */
  frame(
    channel: NetvscChannel,
    view: DataView,
    message: Uint8Array,
    port: FramePort | undefined,
  ): NvspStatus {
    const problem = readPacket(view, 0, message.length, this.parsed);
    if (problem) {
      this.nic.counters.badRndis++;
      return NvspStatus.Failure;
    }
    const start = this.parsed.dataOffset;
    let frame = message.subarray(start, start + this.parsed.dataLength);
    let checksum = this.parsed.info.checksum;
    const joined = channel.coalesced.add(this.parsed.info.fragment, frame, checksum);
    if (joined === 'more') return NvspStatus.Success;
    if (joined === 'dropped') {
      this.nic.counters.rxDropped++;
      return NvspStatus.Success;
    }
    if (joined === 'done') {
      frame = channel.coalesced.take();
      checksum = channel.coalesced.checksum;
    }
    if (!port) {
      this.nic.counters.rxDropped++;
      return NvspStatus.Success;
    }
    const offload = this.rxOffload;
    const ok = ChecksumInfo.rxTcpSucceeded | ChecksumInfo.rxUdpSucceeded;
    const bad = ChecksumInfo.rxTcpFailed | ChecksumInfo.rxUdpFailed | ChecksumInfo.rxIpFailed;
    const valid = (checksum & ok) !== 0 && (checksum & bad) === 0;
    offload.dataValid = valid;
    offload.needsChecksum = false;
    offload.gsoType = GsoType.None;
    offload.gsoSize = 0;
    if (valid) this.nic.counters.rxChecksumValid++;
    if (joined === 'done' && frame.length > this.nic.mtu + 14) this.asLargeReceive(frame, offload);
    this.nic.counters.rxFrames++;
    this.nic.counters.rxBytes += frame.length;
    port.send(frame, offload);
    return NvspStatus.Success;
  }

  /**
   * A coalesced TCP segment larger than the MTU goes to the port as a GSO
   * frame with a partial checksum (what the stack takes from a GRO'd packet):
   * the host vouched for its data, and the segment size is the MTU's.
   */
  private asLargeReceive(frame: Uint8Array, offload: FrameOffload): void {
    const layout = frameLayout(frame);
    if (!layout || layout.protocol !== IPPROTO_TCP) return;
    this.nic.counters.rxCoalesced++;
    offload.needsChecksum = true;
    offload.dataValid = false;
    offload.csumStart = layout.l4;
    offload.csumOffset = 16;
    offload.gsoType = layout.ipv6 ? GsoType.TcpV6 : GsoType.TcpV4;
    offload.headerLength = layout.l4 + layout.l4HeaderLength;
    offload.gsoSize = Math.max(1, this.nic.mtu - (layout.l4 - ETH_HLEN) - layout.l4HeaderLength);
  }
}
