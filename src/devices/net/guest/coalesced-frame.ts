/**
 * A frame the host sent coalesced (RSC, NVSP 6.1): consecutive RNDIS packets
 * on one channel, each a fragment marked by the internal RNDIS_PKTINFO_ID —
 * the first and last flagged, all with the sub-allocation flag — joined
 * back into one frame, as Linux's rsc_add_data / netvsc_recv_callback do. A
 * fragment that does not follow a first one, or a frame that grows past 64
 * KiB of payload or Linux's 562 fragments, is dropped whole.
 */
import { RndisPktinfoFlag } from '../rndis-protocol.ts';

/** Linux's NVSP_RSC_MAX. */
const MAX_FRAGMENTS = 562;
/** A coalesced TCP segment: at most 64 KiB of IP datagram plus its Ethernet header. */
const MAX_FRAME = 65_535 + 14 + 4;

export type FragmentResult = 'more' | 'done' | 'dropped' | 'not-a-fragment';

export class CoalescedFrame {
  private buffer: Uint8Array | undefined;
  private length = 0;
  private fragments = 0;
  /** The first fragment's receive checksum info (what the whole frame is vouched for). */
  checksum = 0;
  /** Coalesced frames put together, and fragments thrown away. */
  completed = 0;
  dropped = 0;

  /** Adds one packet's data; `flags` are its RNDIS_PKTINFO_ID flags (0 without one). */
  add(flags: number, data: Uint8Array, checksum: number): FragmentResult {
    if ((flags & RndisPktinfoFlag.suballoc) === 0) {
      // A whole frame: a coalesced one still open is lost (Linux resets rsc.cnt too).
      if (this.fragments > 0) this.drop();
      return 'not-a-fragment';
    }
    if (flags & RndisPktinfoFlag.firstFragment) {
      if (this.fragments > 0) this.drop();
      this.checksum = checksum;
    } else if (this.fragments === 0) {
      this.dropped++;
      return 'dropped';
    }
    if (this.fragments >= MAX_FRAGMENTS || this.length + data.length > MAX_FRAME) {
      this.drop();
      return 'dropped';
    }
    this.buffer ??= new Uint8Array(MAX_FRAME);
    this.buffer.set(data, this.length);
    this.length += data.length;
    this.fragments++;
    if ((flags & RndisPktinfoFlag.lastFragment) === 0) return 'more';
    this.completed++;
    return 'done';
  }

  /** The joined frame (valid until the next `add`); resets for the next one. */
  take(): Uint8Array {
    const frame = (this.buffer ?? new Uint8Array(0)).subarray(0, this.length);
    this.length = 0;
    this.fragments = 0;
    return frame;
  }

  private drop(): void {
    this.dropped++;
    this.length = 0;
    this.fragments = 0;
  }
}
