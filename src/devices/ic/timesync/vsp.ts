/**
 * The host's time sync: after negotiation one SYNC (the guest should step
 * its clock), then a SAMPLE every interval, each carrying the host's
 * wall-clock time (and, from 4.0, the reference time it was read at). The
 * host does not wait for the guest's answers; it drains and counts them.
 */
import { DeviceClass } from '../../../vmbus/protocol.ts';
import type { NegotiatedVersions } from '../negotiate.ts';
import {
  HOST_IC_VERSIONS,
  IcMessageType,
  ictimesyncData,
  ictimesyncRefData,
  TimesyncFlags,
  version,
} from '../protocol.ts';
import { hostOptions, type IcServiceOptions, IcVsp } from '../vsp.ts';
import { referenceTime, wallTime } from './clock.ts';

export interface TimesyncOptions extends IcServiceOptions {
  readonly intervalMs: number;
}

export class TimesyncVsp extends IcVsp {
  syncs = 0;
  samples = 0;
  private timer: ReturnType<typeof setInterval> | undefined;

  constructor(private readonly timesync: TimesyncOptions) {
    super(
      hostOptions(
        {
          name: 'timesync',
          classId: DeviceClass.timesync,
          messageType: IcMessageType.Timesync,
          frameworkVersions: HOST_IC_VERSIONS.framework,
          serviceVersions: HOST_IC_VERSIONS.timesync,
        },
        timesync,
      ),
    );
  }

  protected override ready(_versions: NegotiatedVersions): void {
    this.dispose();
    this.sendSample(TimesyncFlags.Sync);
    this.timer = setInterval(() => this.sendSample(TimesyncFlags.Sample), this.timesync.intervalMs);
    this.timer.unref();
  }

  protected override closed(): void {
    this.dispose();
  }

  /** Stops sending samples. */
  dispose(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Sends one sample now (SYNC, SAMPLE or PROBE). */
  sendSample(flags: TimesyncFlags): void {
    if (this.state !== 'ready' || !this.versions) return;
    const v4 = this.versions.service > version(3, 0);
    const size = v4 ? ictimesyncRefData.size : ictimesyncData.size;
    const message = this.message(size);
    const at = message.length - size;
    // Read the clocks last, together, right before the message leaves.
    const now = wallTime();
    const reference = referenceTime();
    if (v4) {
      ictimesyncRefData.writeInto(message, at, {
        parenttime: now,
        vmreferencetime: reference,
        flags,
        leapflags: 0,
        stratum: 0,
      });
    } else {
      ictimesyncData.writeInto(message, at, {
        parenttime: now,
        childtime: 0n,
        roundtriptime: 0n,
        flags,
      });
    }
    if (flags === TimesyncFlags.Sync) this.syncs++;
    else this.samples++;
    this.post(message).catch((error: Error) => this.log(`timesync: ${error.message}`));
  }

  override describe(): Record<string, unknown> {
    return {
      ...super.describe(),
      intervalMs: this.timesync.intervalMs,
      syncsSent: this.syncs,
      samplesSent: this.samples,
    };
  }
}
