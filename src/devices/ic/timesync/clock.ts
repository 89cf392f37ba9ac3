/**
 * The clocks time sync works with.
 *
 * - The partition reference time: 100 ns ticks that both the host and the
 *   guest read the same way (Hyper-V's reference counter). Here it is the
 *   system's monotonic clock, which every worker thread shares.
 * - Wall-clock time in 100 ns units since 1601-01-01 UTC, the unit the host
 *   sends (parenttime). Read from the high-resolution wall clock, which
 *   agrees across worker threads to a few microseconds.
 * - The guest's clock: wall-clock time plus an offset the guest carries (an
 *   injected error, or what a step moved it by).
 */
import { WLTIMEDELTA } from '../protocol.ts';

/** The partition reference counter, in 100 ns units. */
export function referenceTime(): bigint {
  return process.hrtime.bigint() / 100n;
}

/** Milliseconds (with a fraction) to 100 ns units, without losing precision to doubles. */
function msTo100ns(ms: number): bigint {
  const whole = Math.floor(ms);
  return BigInt(whole) * 10_000n + BigInt(Math.round((ms - whole) * 10_000));
}

/** Wall-clock time in 100 ns units since 1601-01-01 UTC. */
export function wallTime(): bigint {
  return msTo100ns(performance.timeOrigin) + msTo100ns(performance.now()) + WLTIMEDELTA;
}

/** 100 ns units since 1601 to Unix milliseconds. */
export function toUnixMs(time100ns: bigint): number {
  return Number(time100ns - WLTIMEDELTA) / 10_000;
}

/** The guest's clock: wall-clock time plus its own offset. */
export class GuestClock {
  constructor(
    /** How far the guest's clock is ahead of the host's, in 100 ns units. */
    public offset: bigint = 0n,
  ) {}

  now(): bigint {
    return wallTime() + this.offset;
  }

  /** Steps the clock by `delta` (100 ns units), as settimeofday would. */
  step(delta: bigint): void {
    this.offset += delta;
  }
}
