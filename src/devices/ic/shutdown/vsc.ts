/**
 * The guest's shutdown service (drivers/hv/hv_util.c): flags 0/1 shut down,
 * 2/3 restart (bit 0, force, changes nothing: the guest always shuts down
 * cleanly), 4/5 hibernate, which this guest cannot do (HV_E_FAIL, as Linux
 * answers without hibernation support), anything else HV_E_FAIL. The answer
 * goes back first; the shutdown itself starts after it.
 */
import { DeviceClass } from '../../../vmbus/protocol.ts';
import { UTIL_MESSAGE_BYTES } from '../heartbeat/vsc.ts';
import {
  IcMessageType,
  IcStatus,
  LINUX_IC_VERSIONS,
  ShutdownFlags,
  shutdownMsgData,
} from '../protocol.ts';
import { decodeUtf16z } from '../utf16.ts';
import type { IcAnswer, IcGuestService, IcRequest } from '../vsc.ts';

export interface ShutdownRequest {
  readonly restart: boolean;
  readonly force: boolean;
  readonly reasonCode: number;
  readonly timeoutSeconds: number;
  readonly message: string;
}

export interface ShutdownServiceOptions {
  /** Answer every request with HV_E_FAIL (a guest that will not shut down). */
  readonly refuse?: boolean;
  /** Starts the shutdown (called after the answer went out). */
  readonly onShutdown: (request: ShutdownRequest) => void;
}

export class ShutdownService implements IcGuestService {
  readonly name = 'shutdown';
  readonly classId = DeviceClass.shutdown;
  readonly messageType = IcMessageType.Shutdown;
  readonly frameworkVersions = LINUX_IC_VERSIONS.framework;
  readonly serviceVersions = LINUX_IC_VERSIONS.shutdown;
  readonly maxMessageBytes = UTIL_MESSAGE_BYTES;
  last: (ShutdownRequest & { flags: number; status: number }) | undefined;

  constructor(private readonly options: ShutdownServiceOptions) {}

  handle({ body }: IcRequest): IcAnswer {
    if (body.length < shutdownMsgData.size) return 'drop';
    const data = shutdownMsgData.read(body);
    const action = data.flags & ~ShutdownFlags.Force;
    const request: ShutdownRequest = {
      restart: action === ShutdownFlags.Restart,
      force: (data.flags & ShutdownFlags.Force) !== 0,
      reasonCode: data.reason_code,
      timeoutSeconds: data.timeout_seconds,
      message: decodeUtf16z(data.display_message, data.display_message.length),
    };
    // Shut down or restart (forced or not); hibernation and unknown flags fail.
    const known = action === ShutdownFlags.Shutdown || action === ShutdownFlags.Restart;
    const status = known && !this.options.refuse ? IcStatus.S_OK : IcStatus.E_FAIL;
    this.last = { ...request, flags: data.flags, status };
    if (status === IcStatus.S_OK) setImmediate(() => this.options.onShutdown(request));
    return status;
  }
}
