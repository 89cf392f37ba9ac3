/**
 * The guest's retry policy for SCSI commands, after the Linux SCSI midlayer
 * (drivers/scsi/scsi_error.c): a unit attention is retried at once; BUSY,
 * TASK SET FULL, an SRB BUSY and ABORTED COMMAND are retried after a short,
 * growing pause; INVALID_LUN means the disk is gone; anything else fails.
 * A command gets MAX_ATTEMPTS tries in all.
 */

import { ScsiStatus, SenseKey } from '../../../scsi/codes.ts';
import { SrbStatus, srbStatusCode } from '../protocol.ts';
import { senseOf } from './scsi-errors.ts';
import type { SrbResult } from './storvsc-channel.ts';

/** What to do with a result: use it, retry now, retry after a pause, drop the disk, or fail. */
export type Verdict = 'ok' | 'retry' | 'wait' | 'gone' | 'fail';

export const MAX_ATTEMPTS = 8;

export function judge(result: SrbResult): Verdict {
  const code = srbStatusCode(result.srbStatus);
  if (code === SrbStatus.InvalidLun) return 'gone';
  const scsi = result.scsiStatus;
  if ((code === SrbStatus.Success || code === SrbStatus.DataOverrun) && scsi === ScsiStatus.GOOD) {
    return 'ok';
  }
  if (scsi === ScsiStatus.BUSY || scsi === ScsiStatus.TASK_SET_FULL || code === SrbStatus.Busy) {
    return 'wait';
  }
  if (scsi === ScsiStatus.CHECK_CONDITION) {
    const sense = senseOf(result);
    if (sense?.key === SenseKey.UNIT_ATTENTION) return 'retry';
    if (sense?.key === SenseKey.ABORTED_COMMAND) return 'wait';
  }
  return 'fail';
}

function pause(attempt: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.min(200, 5 * 2 ** attempt)));
}

/**
 * Runs `attempt` until its result is final ('ok', 'gone' or 'fail') or the
 * attempts run out; returns the last result and its verdict ('retry' or
 * 'wait' when the attempts ran out).
 */
export async function withRetries(
  attempt: () => Promise<SrbResult>,
): Promise<{ verdict: Verdict; result: SrbResult }> {
  let result!: SrbResult;
  let verdict: Verdict = 'fail';
  for (let n = 0; n < MAX_ATTEMPTS; n++) {
    result = await attempt();
    verdict = judge(result);
    if (verdict === 'retry') continue;
    if (verdict === 'wait') {
      await pause(n);
      continue;
    }
    break;
  }
  return { verdict, result };
}
