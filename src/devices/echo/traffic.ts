import type { EchoChannel } from './vsc.ts';

export interface TrafficStats {
  sent: number;
  completed: number;
  failed: number;
  mismatched: number;
}

/**
 * Keeps an echo channel busy at a steady rate so a running VM shows traffic:
 * every tick it sends the requests due, checks each echoed payload, and
 * stops cleanly (waiting for what is in flight).
 */
export class EchoTraffic {
  readonly stats: TrafficStats = { sent: 0, completed: 0, failed: 0, mismatched: 0 };
  private timer: ReturnType<typeof setInterval> | undefined;
  private readonly inFlight = new Set<Promise<void>>();
  private started = 0;

  constructor(
    private readonly echo: EchoChannel,
    private readonly ratePerSecond: number,
    private readonly payloadBytes: number,
  ) {}

  start(): void {
    if (this.timer || this.ratePerSecond === 0) return;
    this.started = Date.now();
    const tickMs = 20;
    this.timer = setInterval(() => {
      const due =
        Math.floor(((Date.now() - this.started) / 1000) * this.ratePerSecond) - this.stats.sent;
      for (let i = 0; i < Math.min(due, 256) && this.inFlight.size < 128; i++) this.sendOne();
    }, tickMs);
  }

  private sendOne(): void {
    const n = this.stats.sent++;
    const payload = new Uint8Array(this.payloadBytes);
    for (let i = 0; i < payload.length; i++) payload[i] = (n + i * 7) & 0xff;
    const work = this.echo
      .echo(payload)
      .then((back) => {
        const same = back.length >= payload.length && payload.every((b, i) => back[i] === b);
        if (same) this.stats.completed++;
        else this.stats.mismatched++;
      })
      .catch(() => {
        this.stats.failed++;
      });
    this.inFlight.add(work);
    void work.finally(() => this.inFlight.delete(work));
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await Promise.allSettled([...this.inFlight]);
  }
}
