/**
 * The guest's backup (VSS) service (drivers/hv/hv_snapshot.c with
 * tools/hv/hv_vss_daemon.c): HOT_BACKUP answers the feature flags (no
 * auto-recovery), GET_DM_INFO answers flags 0, FREEZE runs the freeze hooks
 * in order (if one fails or times out, the thaw hooks run and the answer is
 * HV_E_FAIL, as the daemon thaws when a freeze fails), THAW runs the thaw
 * hooks. Other operations are acknowledged. One operation at a time: the
 * channel is not read while hooks run.
 */
import { DeviceClass } from '../../../vmbus/protocol.ts';
import {
  hvVssMsg,
  IcMessageType,
  IcStatus,
  LINUX_IC_VERSIONS,
  VSS_HBU_NO_AUTO_RECOVERY,
  VssOperation,
} from '../protocol.ts';
import type { IcAnswer, IcGuestService, IcRequest } from '../vsc.ts';
import { type HookCommand, type HookResult, hookFailure, runHooks } from './hooks.ts';

/** Linux reads VSS messages into two pages (VSS_MAX_PKT_SIZE). */
export const VSS_MESSAGE_BYTES = 2 * 4096;

const FLAGS = hvVssMsg.offsetOf('vss_cf.flags');

export interface VssServiceOptions {
  readonly freeze: readonly HookCommand[];
  readonly thaw: readonly HookCommand[];
  /** Time limit of each hook. */
  readonly hookTimeoutMs: number;
  readonly log?: (message: string) => void;
}

export interface VssEvent {
  readonly operation: string;
  readonly ok: boolean;
  readonly hooks: readonly HookResult[];
  readonly error?: string;
}

export class VssService implements IcGuestService {
  readonly name = 'vss';
  readonly classId = DeviceClass.vss_backup;
  readonly messageType = IcMessageType.Vss;
  readonly frameworkVersions = LINUX_IC_VERSIONS.vssFramework;
  readonly serviceVersions = LINUX_IC_VERSIONS.vss;
  readonly maxMessageBytes = VSS_MESSAGE_BYTES;
  frozen = false;
  /** What happened, newest last (bounded). */
  readonly events: VssEvent[] = [];

  constructor(private readonly options: VssServiceOptions) {}

  private record(event: VssEvent): void {
    this.events.push(event);
    if (this.events.length > 20) this.events.shift();
    if (!event.ok) this.options.log?.(`vss: ${event.operation} failed: ${event.error}`);
  }

  handle({ body }: IcRequest): IcAnswer {
    // Linux drops VSS messages too short for hv_vss_msg.
    if (body.length < hvVssMsg.size) return 'drop';
    const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
    switch (body[0]) {
      case VssOperation.HotBackup:
        view.setUint32(FLAGS, VSS_HBU_NO_AUTO_RECOVERY, true);
        this.record({ operation: 'hot-backup', ok: true, hooks: [] });
        return IcStatus.S_OK;
      case VssOperation.GetDmInfo:
        view.setUint32(FLAGS, 0, true);
        return IcStatus.S_OK;
      case VssOperation.Freeze:
        return this.freeze();
      case VssOperation.Thaw:
        return this.thaw('thaw');
      default:
        return IcStatus.S_OK;
    }
  }

  private async freeze(): Promise<number> {
    const { ok, results } = await runHooks(this.options.freeze, this.options.hookTimeoutMs);
    if (ok) {
      this.frozen = true;
      this.record({ operation: 'freeze', ok: true, hooks: results });
      return IcStatus.S_OK;
    }
    const failed = results.at(-1)!;
    this.record({ operation: 'freeze', ok: false, hooks: results, error: hookFailure(failed) });
    // Undo what was frozen: a failed freeze leaves the guest thawed.
    await this.thaw('thaw after failed freeze');
    return IcStatus.E_FAIL;
  }

  private async thaw(operation: string): Promise<number> {
    const { ok, results } = await runHooks(this.options.thaw, this.options.hookTimeoutMs);
    this.frozen = false;
    this.record({
      operation,
      ok,
      hooks: results,
      ...(ok ? {} : { error: hookFailure(results.at(-1)!) }),
    });
    return ok ? IcStatus.S_OK : IcStatus.E_FAIL;
  }

  /** The guest stops: never leave file systems frozen. */
  async closed(): Promise<void> {
    if (this.frozen) await this.thaw('thaw at shutdown');
  }

  summary(): string {
    return this.frozen ? 'FROZEN' : 'not frozen';
  }

  describe(): Record<string, unknown> {
    const last = this.events.at(-1);
    return {
      frozen: this.frozen,
      events: this.events.length,
      ...(last ? { last: `${last.operation} ${last.ok ? 'ok' : `failed: ${last.error}`}` } : {}),
    };
  }
}
