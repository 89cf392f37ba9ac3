/**
 * The guest's time sync service. Like Linux (drivers/hv/hv_util.c,
 * adj_guesttime) it reads the sample in the format the negotiated version
 * uses (ictimesync_ref_data above 3.0, ictimesync_data otherwise), corrects
 * a 4.0 sample by the reference time that passed since the host took it,
 * answers in place without changing it, and steps its clock only on SYNC
 * (when allowed to adjust). It also keeps what it measured: its clock minus
 * the host's time, over the recent samples.
 */
import { DeviceClass } from '../../../vmbus/protocol.ts';
import { UTIL_MESSAGE_BYTES } from '../heartbeat/vsc.ts';
import {
  IcMessageType,
  ictimesyncData,
  ictimesyncRefData,
  LINUX_IC_VERSIONS,
  TimesyncFlags,
  version,
} from '../protocol.ts';
import type { IcAnswer, IcGuestService, IcRequest } from '../vsc.ts';
import { type GuestClock, referenceTime } from './clock.ts';

const PARENT = ictimesyncRefData.bigint('parenttime');
const REFERENCE = ictimesyncRefData.bigint('vmreferencetime');
const REF_FLAGS = ictimesyncRefData.uint('flags');
const OLD_PARENT = ictimesyncData.bigint('parenttime');
const OLD_FLAGS = ictimesyncData.uint('flags');

/** How many recent samples the offset estimate uses. */
const WINDOW = 9;

export interface TimesyncServiceOptions {
  readonly clock: GuestClock;
  /** Step the clock on SYNC (as Linux does); otherwise only measure. */
  readonly adjust?: boolean;
}

export class TimesyncService implements IcGuestService {
  readonly name = 'timesync';
  readonly classId = DeviceClass.timesync;
  readonly messageType = IcMessageType.Timesync;
  readonly frameworkVersions = LINUX_IC_VERSIONS.framework;
  readonly serviceVersions = LINUX_IC_VERSIONS.timesync;
  readonly maxMessageBytes = UTIL_MESSAGE_BYTES;
  samples = 0;
  syncs = 0;
  steps = 0;
  /** Format of the last sample: 'v4' (reference time) or 'v1' (host time only). */
  format: 'v4' | 'v1' | undefined;
  private readonly recent: bigint[] = [];

  constructor(private readonly options: TimesyncServiceOptions) {
    // Warm the clock paths up so the first sample is not measured through a compile.
    referenceTime();
    options.clock.now();
  }

  handle({ header, body, versions }: IcRequest): IcAnswer {
    // Both clocks read together, first, so nothing that happens while the
    // message is parsed counts as offset.
    const referenceNow = referenceTime();
    const guestNow = this.options.clock.now();
    const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
    let hostTime: bigint;
    let flags: number;
    if (versions.service > version(3, 0)) {
      if (body.length < ictimesyncRefData.size) return 'drop';
      // The host read its clock at vmreferencetime; add what has passed since.
      hostTime = PARENT.get(view, 0) + (referenceNow - REFERENCE.get(view, 0));
      flags = REF_FLAGS.get(view, 0);
      this.format = 'v4';
    } else {
      if (body.length < ictimesyncData.size) return 'drop';
      // No reference time: the sample is taken as current (Linux does the same).
      hostTime = OLD_PARENT.get(view, 0);
      flags = OLD_FLAGS.get(view, 0);
      this.format = 'v1';
    }
    const measured = guestNow - hostTime;
    this.samples++;
    this.recent.push(measured);
    if (this.recent.length > WINDOW) this.recent.shift();
    if (flags & TimesyncFlags.Sync) {
      this.syncs++;
      if (this.options.adjust) {
        this.options.clock.step(-measured);
        this.steps++;
        // Samples from before the step no longer describe the clock.
        this.recent.length = 0;
        this.recent.push(0n);
      }
    }
    return header.status;
  }

  /** The guest clock minus the host's time, in ns (median of recent samples), or undefined. */
  offsetNs(): number | undefined {
    if (this.recent.length === 0) return undefined;
    const sorted = [...this.recent].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    return Number(sorted[sorted.length >> 1]!) * 100;
  }

  summary(): string {
    const offset = this.offsetNs();
    if (offset === undefined) return 'time offset not measured yet';
    return (
      `time offset ${offset >= 0 ? '+' : ''}${(offset / 1e6).toFixed(3)} ms ` +
      `(${this.samples} samples, ${this.format === 'v4' ? '4.0' : 'pre-4.0'} format)`
    );
  }

  describe(): Record<string, unknown> {
    const offset = this.offsetNs();
    return {
      samples: this.samples,
      syncs: this.syncs,
      steps: this.steps,
      format: this.format,
      offsetMs: offset === undefined ? undefined : offset / 1e6,
    };
  }
}
