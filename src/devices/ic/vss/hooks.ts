/**
 * Freeze and thaw hooks: the commands a guest runs when the host asks it to
 * quiesce for a backup (fsfreeze -f /mnt, a database's flush, ...). Each
 * runs to completion or until its time is up, when its whole process group
 * is killed; a hook that exits non-zero, dies of a signal or times out
 * fails the step.
 */
import { spawn } from 'node:child_process';

/** A shell command line, or an argument vector run without a shell. */
export type HookCommand = string | readonly string[];

export interface HookResult {
  readonly command: string;
  readonly ok: boolean;
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly timedOut: boolean;
  readonly ms: number;
  /** The end of what it wrote to stderr (for error messages). */
  readonly stderr: string;
}

export function describeCommand(command: HookCommand): string {
  return typeof command === 'string' ? command : command.join(' ');
}

/** Runs one hook with a time limit. Never rejects. */
export function runHook(command: HookCommand, timeoutMs: number): Promise<HookResult> {
  const started = Date.now();
  const text = describeCommand(command);
  const [file, args] =
    typeof command === 'string'
      ? ['/bin/sh', ['-c', command]]
      : [command[0] ?? '', command.slice(1)];
  return new Promise((resolve) => {
    let stderr = '';
    let timedOut = false;
    let settled = false;
    const finish = (exitCode: number | null, signal: string | null, error?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({
        command: text,
        ok: !timedOut && !error && exitCode === 0,
        exitCode,
        signal,
        timedOut,
        ms: Date.now() - started,
        stderr: (error ?? stderr).slice(-500),
      });
    };
    const child = spawn(file, args, { detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      stderr = (stderr + chunk).slice(-2000);
    });
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        // The hook and everything it started.
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, timeoutMs);
    child.once('error', (error) => finish(null, null, error.message));
    child.once('close', (code, signal) => finish(code, signal));
  });
}

/** Runs hooks in order, stopping at the first that fails. */
export async function runHooks(
  commands: readonly HookCommand[],
  timeoutMs: number,
): Promise<{ ok: boolean; results: HookResult[] }> {
  const results: HookResult[] = [];
  for (const command of commands) {
    const result = await runHook(command, timeoutMs);
    results.push(result);
    if (!result.ok) return { ok: false, results };
  }
  return { ok: true, results };
}

/** One line about a failed hook. */
export function hookFailure(result: HookResult): string {
  if (result.timedOut) return `${result.command}: timed out after ${result.ms} ms (killed)`;
  if (result.signal) return `${result.command}: killed by ${result.signal}`;
  const detail = result.stderr.trim() ? `: ${result.stderr.trim().split('\n').at(-1)}` : '';
  return `${result.command}: exit code ${result.exitCode}${detail}`;
}
