/** The host's shutdown service: asks the guest to shut down, restart or hibernate. */
import { DeviceClass } from '../../../vmbus/protocol.ts';
import {
  HOST_IC_VERSIONS,
  IcMessageType,
  IcStatus,
  SHTDN_REASON_FLAG_PLANNED,
  ShutdownFlags,
  shutdownMsgData,
  statusName,
} from '../protocol.ts';
import { encodeUtf16z } from '../utf16.ts';
import { hostOptions, IcError, type IcServiceOptions, IcVsp } from '../vsp.ts';

/** Size of shutdown_msg_data.display_message. */
const DISPLAY_MESSAGE_BYTES = shutdownMsgData.size - shutdownMsgData.offsetOf('display_message');

export interface ShutdownOptions {
  readonly force?: boolean;
  readonly restart?: boolean;
  readonly hibernate?: boolean;
  /** Windows shutdown reason code; default SHTDN_REASON_FLAG_PLANNED. */
  readonly reasonCode?: number;
  readonly timeoutSeconds?: number;
  /** Text for the guest's users (up to 1023 UTF-16 units). */
  readonly message?: string;
  /** How long to wait for the guest's answer. */
  readonly answerTimeoutMs?: number;
}

export interface ShutdownResult {
  readonly status: number;
  readonly statusName: string;
  readonly accepted: boolean;
  readonly flags: number;
}

export class ShutdownVsp extends IcVsp {
  constructor(options: IcServiceOptions = {}) {
    super(
      hostOptions(
        {
          name: 'shutdown',
          classId: DeviceClass.shutdown,
          messageType: IcMessageType.Shutdown,
          frameworkVersions: HOST_IC_VERSIONS.framework,
          serviceVersions: HOST_IC_VERSIONS.shutdown,
        },
        options,
      ),
    );
  }

  /** Sends the request; resolves with the guest's answer (S_OK: it is shutting down). */
  async shutdown(options: ShutdownOptions = {}): Promise<ShutdownResult> {
    if (options.restart && options.hibernate) {
      throw new IcError('a shutdown request cannot both restart and hibernate');
    }
    const text = encodeUtf16z(options.message ?? '');
    if (text.length > DISPLAY_MESSAGE_BYTES) {
      throw new IcError(
        `shutdown message of ${text.length / 2 - 1} characters is too long (at most 1023)`,
      );
    }
    const flags =
      (options.force ? ShutdownFlags.Force : 0) |
      (options.restart ? ShutdownFlags.Restart : 0) |
      (options.hibernate ? ShutdownFlags.Hibernate : 0);
    const body = shutdownMsgData.write({
      reason_code: options.reasonCode ?? SHTDN_REASON_FLAG_PLANNED,
      timeout_seconds: options.timeoutSeconds ?? 0,
      flags,
      display_message: text,
    });
    const reply = await this.request(body, options.answerTimeoutMs ?? 30_000);
    return {
      status: reply.status,
      statusName: statusName(reply.status),
      accepted: reply.status === IcStatus.S_OK,
      flags,
    };
  }
}
