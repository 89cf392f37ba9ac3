/**
 * Running the real Debian tools (qemu-img, qemu-nbd, nbdkit, fio, nbdfuse,
 * mount, losetup, ...) from tests: the PATH they are found on, a check that
 * fails (never skips) when one is missing, one-shot runs that give the exit
 * code and output, long-running processes killed when the test ends,
 * temporary directories and tmpfs/loop mounts that are removed even when the
 * test fails.
 */
import { type ChildProcess, execFile, execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';

/** Where the tools live (the sbin directories are not on every user's PATH). */
export const TOOL_PATH = `/usr/bin:/usr/sbin:/sbin:${process.env.PATH ?? ''}`;

const toolEnv = (): NodeJS.ProcessEnv => ({ ...process.env, PATH: TOOL_PATH });

/** Fails (never skips) when a tool the test drives is not installed. */
export function requireTools(...names: string[]): void {
  for (const name of names) {
    const found = spawnSync('sh', ['-c', `command -v ${name}`], { env: { PATH: TOOL_PATH } });
    if (found.status !== 0) {
      throw new Error(`${name} is not installed; run scripts/ensure-tools.sh (npm test does)`);
    }
  }
}

/** A temporary directory removed when the test ends. */
export async function tempDir(t: TestContext, prefix = 'hvkit-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export interface ToolResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs a tool to completion and resolves with its exit code and output (a
 * non-zero exit is a result, not an error). Rejects when the tool cannot be
 * started or is still running after `timeoutMs` (then it is killed).
 */
export function run(cmd: string, args: readonly string[], timeoutMs = 60_000): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      { env: toolEnv(), timeout: timeoutMs, maxBuffer: 64 << 20 },
      (error, stdout, stderr) => {
        if (!error) resolve({ code: 0, stdout, stderr });
        else if (typeof error.code === 'number') resolve({ code: error.code, stdout, stderr });
        else if (error.killed) {
          reject(
            new Error(`${cmd} ${args.join(' ')} ran over ${timeoutMs} ms\n${stdout}\n${stderr}`),
          );
        } else reject(new Error(`cannot run ${cmd}: ${error.message}`));
      },
    );
  });
}

/** Runs a tool and fails the test with its output when it exits non-zero; resolves with stdout. */
export async function runOk(
  cmd: string,
  args: readonly string[],
  timeoutMs?: number,
): Promise<string> {
  const r = await run(cmd, args, timeoutMs);
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}\n${r.stdout}\n${r.stderr}`);
  }
  return r.stdout;
}

/** A long-running process; `output()` is what it printed so far (stdout and stderr). */
export type SpawnedTool = ChildProcess & { output(): string };

/** Starts a long-running tool, killed (SIGKILL) when the test ends unless it has exited. */
export function spawnTool(
  t: TestContext,
  cmd: string,
  args: readonly string[],
  options: { cwd?: string } = {},
): SpawnedTool {
  const child = spawn(cmd, args, { env: toolEnv(), stdio: ['ignore', 'pipe', 'pipe'], ...options });
  let text = '';
  const collect = (d: Buffer): void => {
    text += d.toString();
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  child.on('error', () => {});
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await gone;
    }
  });
  return Object.assign(child, { output: () => text });
}

/** Polls `condition` every 50 ms until it holds; fails naming `what` after `ms`. */
export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  what: string,
  ms = 15_000,
): Promise<void> {
  const start = Date.now();
  while (!(await condition())) {
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Whether something accepts a connection on the Unix socket `path` now. */
function accepts(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ path });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Waits until something accepts connections on a Unix socket. */
export function waitForSocket(path: string, timeoutMs = 15_000): Promise<void> {
  return waitFor(() => accepts(path), `a listener on ${path}`, timeoutMs);
}

/** Mounts a tmpfs of `size` (e.g. '1m') on `path`; returns the (lazy) unmount. */
export function mountTmpfs(path: string, size: string): () => void {
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', path], { env: toolEnv() });
  return () => execFileSync('umount', ['-l', path], { env: toolEnv() });
}

/** Unmounts and detaches what a test set up, ignoring what is already gone. */
export async function cleanupMount(mountpoint: string, loop?: string): Promise<void> {
  if (existsSync(mountpoint)) await run('umount', ['-l', mountpoint]);
  if (loop) await run('losetup', ['-d', loop]);
}
