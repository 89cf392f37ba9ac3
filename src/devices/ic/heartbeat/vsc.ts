/**
 * The guest's heartbeat service: answers each heartbeat with the host's
 * sequence number plus one (drivers/hv/hv_util.c), and from heartbeat 3.0
 * with the guest's application state in the following four bytes.
 */
import { DeviceClass } from '../../../vmbus/protocol.ts';
import {
  HEARTBEAT_APPLICATION_STATE_OFFSET,
  HEARTBEAT_MIN_BODY,
  HeartbeatApplicationState,
  IcMessageType,
  LINUX_IC_VERSIONS,
  version,
} from '../protocol.ts';
import type { IcAnswer, IcGuestService, IcRequest } from '../vsc.ts';

/** Linux reads util messages into one 4 KiB page. */
export const UTIL_MESSAGE_BYTES = 4096;

export class HeartbeatService implements IcGuestService {
  readonly name = 'heartbeat';
  readonly classId = DeviceClass.heartbeat;
  readonly messageType = IcMessageType.Heartbeat;
  readonly frameworkVersions = LINUX_IC_VERSIONS.framework;
  readonly serviceVersions = LINUX_IC_VERSIONS.heartbeat;
  readonly maxMessageBytes = UTIL_MESSAGE_BYTES;
  answered = 0;
  lastSequence = 0n;
  applicationState = HeartbeatApplicationState.Healthy;

  handle({ header, body, versions }: IcRequest): IcAnswer {
    if (body.length < HEARTBEAT_MIN_BODY) return 'drop';
    const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
    const next = (view.getBigUint64(0, true) + 1n) & 0xffff_ffff_ffff_ffffn;
    view.setBigUint64(0, next, true);
    if (
      versions.service >= version(3, 0) &&
      body.length >= HEARTBEAT_APPLICATION_STATE_OFFSET + 4
    ) {
      view.setUint32(HEARTBEAT_APPLICATION_STATE_OFFSET, this.applicationState, true);
    }
    this.answered++;
    this.lastSequence = next;
    // Linux leaves the status as the host sent it.
    return header.status;
  }

  summary(): string {
    return `heartbeats answered ${this.answered}`;
  }

  describe(): Record<string, unknown> {
    return { answered: this.answered, lastSequence: this.lastSequence.toString() };
  }
}
