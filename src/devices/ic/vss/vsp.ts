/**
 * The host's backup (VSS) service: asks which features the guest supports
 * (HOT_BACKUP), freezes it, takes the backup (a callback), and thaws it. A
 * guest that does not answer in time gets a clean timeout; after a freeze
 * that timed out the host still sends THAW so the guest is not left frozen.
 */
import { DeviceClass } from '../../../vmbus/protocol.ts';
import {
  HOST_IC_VERSIONS,
  hvVssMsg,
  ICMSG_HDR,
  IcMessageType,
  IcStatus,
  statusName,
  VssOperation,
} from '../protocol.ts';
import { hostOptions, IcError, type IcServiceOptions, IcVsp } from '../vsp.ts';

const FLAGS = hvVssMsg.offsetOf('vss_cf.flags');

export interface BackupOptions {
  /** How long the guest has to answer each step. */
  readonly timeoutMs: number;
  /** Runs while the guest is frozen (the snapshot). */
  readonly whileFrozen?: () => Promise<void>;
}

export interface BackupResult {
  readonly features: number;
  readonly freezeMs: number;
  readonly frozenMs: number;
  readonly thawMs: number;
}

export class VssVsp extends IcVsp {
  backups = 0;
  failures = 0;
  lastResult = '';

  constructor(options: IcServiceOptions = {}) {
    super(
      hostOptions(
        {
          name: 'vss',
          classId: DeviceClass.vss_backup,
          messageType: IcMessageType.Vss,
          frameworkVersions: HOST_IC_VERSIONS.framework,
          serviceVersions: HOST_IC_VERSIONS.vss,
        },
        options,
      ),
    );
  }

  /** Sends one VSS operation; resolves with the status and the answer's flags. */
  async operation(op: VssOperation, timeoutMs: number): Promise<{ status: number; flags: number }> {
    const message = this.message(hvVssMsg.size);
    message[ICMSG_HDR] = op;
    const reply = await this.requestMessage(message, timeoutMs);
    const body = reply.body;
    const flags =
      body.length >= hvVssMsg.size
        ? new DataView(body.buffer, body.byteOffset, body.byteLength).getUint32(FLAGS, true)
        : 0;
    return { status: reply.status, flags };
  }

  async backup(options: BackupOptions): Promise<BackupResult> {
    try {
      const result = await this.run(options);
      this.backups++;
      this.lastResult = `ok (frozen ${result.frozenMs} ms)`;
      return result;
    } catch (error) {
      this.failures++;
      this.lastResult = `failed: ${(error as Error).message}`;
      throw error;
    }
  }

  private async run(options: BackupOptions): Promise<BackupResult> {
    const check = await this.operation(VssOperation.HotBackup, options.timeoutMs);
    if (check.status !== IcStatus.S_OK) {
      throw new IcError(
        `the guest does not support backup: it answered ${statusName(check.status)}`,
      );
    }
    let started = Date.now();
    let freeze: { status: number };
    try {
      freeze = await this.operation(VssOperation.Freeze, options.timeoutMs);
    } catch (error) {
      // The guest may still freeze later: make sure it thaws.
      await this.operation(VssOperation.Thaw, options.timeoutMs).catch(() => {});
      throw new IcError(`freeze: ${(error as Error).message}; thaw sent`);
    }
    const freezeMs = Date.now() - started;
    if (freeze.status !== IcStatus.S_OK) {
      throw new IcError(
        `the guest could not freeze (it thawed again): it answered ${statusName(freeze.status)}`,
      );
    }
    started = Date.now();
    let snapshotError: Error | undefined;
    try {
      await options.whileFrozen?.();
    } catch (error) {
      snapshotError = error as Error;
    }
    const frozenMs = Date.now() - started;
    started = Date.now();
    const thaw = await this.operation(VssOperation.Thaw, options.timeoutMs);
    const thawMs = Date.now() - started;
    if (snapshotError)
      throw new IcError(`the backup failed while the guest was frozen: ${snapshotError.message}`);
    if (thaw.status !== IcStatus.S_OK) {
      throw new IcError(`the guest could not thaw: it answered ${statusName(thaw.status)}`);
    }
    return { features: check.flags, freezeMs, frozenMs, thawMs };
  }

  /** The last backup's outcome, or undefined before the first. */
  backupSummary(): string | undefined {
    return this.backups || this.failures ? `backup ${this.lastResult}` : undefined;
  }

  override describe(): Record<string, unknown> {
    return {
      ...super.describe(),
      backups: this.backups,
      failures: this.failures,
      last: this.lastResult,
    };
  }
}
