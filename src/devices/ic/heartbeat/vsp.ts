/**
 * The host's heartbeat: sends a sequence number every interval and judges
 * the guest by its answers. An answer to the latest heartbeat makes the
 * guest healthy; one unanswered heartbeat when the next is due makes it
 * late, two make it lost (so a stalled guest is lost within three
 * intervals); any valid answer makes it healthy again.
 */
import { DeviceClass } from '../../../vmbus/protocol.ts';
import type { NegotiatedVersions } from '../negotiate.ts';
import {
  HEARTBEAT_APPLICATION_STATE_OFFSET,
  HeartbeatApplicationState,
  HOST_IC_VERSIONS,
  heartbeatMsgData,
  IcMessageType,
  version,
} from '../protocol.ts';
import { hostOptions, type IcReply, type IcServiceOptions, IcVsp } from '../vsp.ts';

export type HeartbeatHealth = 'waiting' | 'healthy' | 'late' | 'lost' | 'unavailable';

export interface HeartbeatOptions extends IcServiceOptions {
  readonly intervalMs: number;
}

export class HeartbeatVsp extends IcVsp {
  health: HeartbeatHealth = 'waiting';
  /** Consecutive heartbeats the guest did not answer before the next was due. */
  missed = 0;
  sent = 0;
  answered = 0;
  /** Answers whose sequence number was not ours + 1. */
  wrongSequence = 0;
  lastAnswerAt = 0;
  applicationState: string | undefined;
  /** Heartbeats sent when the last valid answer arrived. */
  sentAtLastAnswer = 0;
  /** Health changes with their time and the heartbeats sent by then, newest last (bounded). */
  readonly history: { at: number; health: HeartbeatHealth; sent: number }[] = [];
  private sequence = 0n;
  private latestAnswered = true;
  private timer: ReturnType<typeof setInterval> | undefined;

  constructor(private readonly heartbeat: HeartbeatOptions) {
    super(
      hostOptions(
        {
          name: 'heartbeat',
          classId: DeviceClass.heartbeat,
          messageType: IcMessageType.Heartbeat,
          frameworkVersions: HOST_IC_VERSIONS.framework,
          serviceVersions: HOST_IC_VERSIONS.heartbeat,
        },
        heartbeat,
      ),
    );
  }

  get intervalMs(): number {
    return this.heartbeat.intervalMs;
  }

  private setHealth(health: HeartbeatHealth): void {
    if (health === this.health) return;
    this.health = health;
    this.history.push({ at: Date.now(), health, sent: this.sent });
    if (this.history.length > 32) this.history.shift();
    if (health === 'late' || health === 'lost') this.log(`heartbeat: guest is ${health}`);
  }

  protected override ready(_versions: NegotiatedVersions): void {
    this.stopTimer();
    this.latestAnswered = true;
    this.missed = 0;
    this.timer = setInterval(() => this.tick(), this.heartbeat.intervalMs);
    this.timer.unref();
    this.tick();
  }

  protected override closed(): void {
    this.stopTimer();
    this.setHealth('waiting');
  }

  /** Stops sending heartbeats (the VM is shutting down). */
  dispose(): void {
    this.stopTimer();
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private tick(): void {
    if (this.state === 'failed') {
      this.setHealth('unavailable');
      this.stopTimer();
      return;
    }
    if (this.state !== 'ready') return;
    if (!this.latestAnswered) {
      this.missed++;
      this.setHealth(this.missed >= 2 ? 'lost' : 'late');
    }
    this.sequence = (this.sequence + 1n) & 0xffff_ffff_ffff_ffffn;
    const seq = this.sequence;
    const message = this.message(heartbeatMsgData.size);
    heartbeatMsgData.writeInto(message, message.length - heartbeatMsgData.size, {
      seq_num: seq,
      reserved: {},
    });
    this.latestAnswered = false;
    this.sent++;
    this.post(message, seq).catch((error: Error) => this.log(`heartbeat: ${error.message}`));
  }

  /** The answer to heartbeat `sent` (the sequence number it carried). */
  protected override postedAnswer(reply: IcReply, sent: unknown): void {
    if (typeof sent !== 'bigint' || reply.body.length < 8) {
      this.wrongSequence++;
      return;
    }
    const view = new DataView(reply.body.buffer, reply.body.byteOffset, reply.body.byteLength);
    const answer = view.getBigUint64(0, true);
    if (answer !== ((sent + 1n) & 0xffff_ffff_ffff_ffffn)) {
      this.wrongSequence++;
      return;
    }
    if (
      this.versions &&
      this.versions.service >= version(3, 0) &&
      reply.body.length >= HEARTBEAT_APPLICATION_STATE_OFFSET + 4
    ) {
      const state = view.getUint32(HEARTBEAT_APPLICATION_STATE_OFFSET, true);
      this.applicationState = HeartbeatApplicationState[state] ?? `0x${state.toString(16)}`;
    }
    this.answered++;
    this.lastAnswerAt = Date.now();
    this.sentAtLastAnswer = this.sent;
    if (sent === this.sequence) this.latestAnswered = true;
    this.missed = 0;
    this.setHealth('healthy');
  }

  /** The guest's health as status lines show it. */
  healthSummary(): string {
    return this.state === 'failed'
      ? `heartbeat unavailable (${this.error})`
      : `heartbeat ${this.health} (${this.answered}/${this.sent} answered, every ${this.intervalMs / 1000}s)`;
  }

  override describe(): Record<string, unknown> {
    return {
      ...super.describe(),
      health: this.health,
      intervalMs: this.heartbeat.intervalMs,
      sent: this.sent,
      answered: this.answered,
      missed: this.missed,
      wrongSequence: this.wrongSequence,
      ...(this.applicationState ? { applicationState: this.applicationState } : {}),
      lastAnswerAgoMs: this.lastAnswerAt ? Date.now() - this.lastAnswerAt : undefined,
    };
  }
}
