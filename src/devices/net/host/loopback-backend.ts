/**
 * The loopback backend: every frame the guest sends comes back to it, as
 * sent (the host filled in checksums and segmented large sends first, since
 * this backend does neither). For tests and for a NIC without root. Frames
 * the NIC cannot take at once wait, in order, up to a bound; more are
 * dropped and counted.
 */
import { type FrameOffload, type FramePort, type FrameSink, noOffload } from '../frame-port.ts';

const MAX_WAITING = 4096;

export class LoopbackBackend implements FramePort {
  readonly name = 'loopback';
  readonly offloads = { checksum: false, segmentation: false } as const;
  readonly link = true;
  private sink: FrameSink | undefined;
  private readonly waiting: Uint8Array[] = [];
  private readonly offload = noOffload();
  private readonly counts = { echoed: 0, dropped: 0 };

  start(sink: FrameSink): void {
    this.sink = sink;
  }

  resume(): void {
    const sink = this.sink;
    if (!sink) return;
    while (this.waiting.length > 0) {
      if (!sink(this.waiting[0]!, this.offload)) return;
      this.waiting.shift();
      this.counts.echoed++;
    }
  }

  send(frame: Uint8Array, _offload: FrameOffload): void {
    if (this.waiting.length === 0 && this.sink?.(frame, this.offload)) {
      this.counts.echoed++;
      return;
    }
    if (this.waiting.length >= MAX_WAITING) {
      this.counts.dropped++;
      return;
    }
    this.waiting.push(frame.slice());
  }

  stats(): Record<string, number> {
    return { ...this.counts, waiting: this.waiting.length };
  }

  async close(): Promise<void> {
    this.sink = undefined;
    this.waiting.length = 0;
  }
}
