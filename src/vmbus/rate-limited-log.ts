/**
 * Logging for things the other side of the bus can cause at will (bad
 * messages, corrupt rings): at most `burst` lines per `windowMs`, then one
 * line saying how many were suppressed, so a hostile peer cannot flood the
 * log.
 */
export class RateLimitedLog {
  private windowStart = 0;
  private inWindow = 0;
  private suppressed = 0;

  constructor(
    private readonly sink: (line: string) => void,
    private readonly burst = 10,
    private readonly windowMs = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  log(line: string): void {
    const t = this.now();
    if (t - this.windowStart >= this.windowMs) {
      if (this.suppressed > 0) this.sink(`(${this.suppressed} similar messages suppressed)`);
      this.windowStart = t;
      this.inWindow = 0;
      this.suppressed = 0;
    }
    if (this.inWindow < this.burst) {
      this.inWindow++;
      this.sink(line);
    } else {
      this.suppressed++;
    }
  }
}
