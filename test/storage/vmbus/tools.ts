/**
 * Plumbing for the end-to-end storage tests: real tools (fio, nbdfuse,
 * losetup, mkfs.ext4, qemu-img), temporary directories, a running VM, and
 * cleanup that runs even when a test fails.
 */
import { type ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { callVm } from '../../../src/cli/control-client.ts';
import { startVm } from '../../cli/hvkit.ts';

export const TOOL_PATH = `/usr/bin:/usr/sbin:/sbin:${process.env.PATH ?? ''}`;

/** Fails (never skips) when a tool is missing. */
export function requireTools(...names: string[]): void {
  for (const name of names) {
    const found = spawnSync('sh', ['-c', `command -v ${name}`], { env: { PATH: TOOL_PATH } });
    if (found.status !== 0) {
      throw new Error(`${name} is not installed; run scripts/ensure-tools.sh (npm test does)`);
    }
  }
}

export interface ToolResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export function run(cmd: string, args: readonly string[], timeoutMs = 60_000): Promise<ToolResult> {
  return new Promise((resolve) => {
    execFile(
      cmd,
      args,
      { env: { ...process.env, PATH: TOOL_PATH }, timeout: timeoutMs, maxBuffer: 64 << 20 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

export async function runOk(
  cmd: string,
  args: readonly string[],
  timeoutMs?: number,
): Promise<string> {
  const r = await run(cmd, args, timeoutMs);
  if (r.code !== 0)
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

export async function tempDir(t: TestContext, prefix = 'hvkit-storage-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A long-running tool, killed (SIGKILL) when the test ends. */
export function spawnTool(
  t: TestContext,
  cmd: string,
  args: readonly string[],
): ChildProcess & { output(): string } {
  const child = spawn(cmd, args, {
    env: { ...process.env, PATH: TOOL_PATH },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  child.stdout?.on('data', (d: Buffer) => {
    text += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    text += d.toString();
  });
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

export interface RunningVm {
  readonly control: string;
  readonly exit: Promise<{
    code: number | null;
    signal: NodeJS.Signals | null;
    stdout: string;
    stderr: string;
  }>;
  kill(signal?: NodeJS.Signals): void;
  output(): string;
  status(): Promise<VmStatusJson>;
}

/** What the tests read of `status` (the parts storvsp and storvsc report). */
export interface VmStatusJson {
  host: { devices: { type: string; [k: string]: unknown }[] };
  guest: { devices: { type: string; [k: string]: unknown }[] };
}

/** Boots `hvkit run [config]` with its control socket in `dir`; killed when the test ends. */
export async function bootVm(t: TestContext, dir: string, config?: object): Promise<RunningVm> {
  const control = join(dir, 'control.sock');
  const args: string[] = [];
  if (config) {
    const path = join(dir, 'vm.yaml');
    await writeFile(path, JSON.stringify(config, null, 2));
    args.push(path);
  }
  args.push('--control', control);
  const vm = await startVm(args, 120_000);
  t.after(async () => {
    vm.kill('SIGKILL');
    await vm.exit.catch(() => {});
  });
  return {
    control,
    exit: vm.exit,
    kill: vm.kill,
    output: vm.output,
    status: async () => (await callVm(control, 'status')) as VmStatusJson,
  };
}

export interface GuestDiskJson {
  lun: number;
  capacity: number;
  blockSize: number;
  readOnly: boolean;
  vendor: string;
  product: string;
  serial: string;
  identifier: string;
  uri: string | null;
}

export interface HostDiskJson {
  lun: number;
  capacity: number;
  format: string;
  source: string;
  readOnly: boolean;
  identifier: string;
}

export interface ChannelJson {
  index: number;
  requests: number;
  completions: number;
  bytesRead: number;
  bytesWritten: number;
  errors: number;
}

export function hostController(status: VmStatusJson, index = 0) {
  const c = status.host.devices.find((d) => d.type === 'scsi' && d.controller === index);
  if (!c)
    throw new Error(`no host scsi controller ${index} in ${JSON.stringify(status.host.devices)}`);
  return c as unknown as {
    disks: HostDiskJson[];
    channels: ChannelJson[];
    version: string;
    summary: string;
  };
}

export function guestController(status: VmStatusJson, index = 0) {
  const storvsc = status.guest.devices.find((d) => d.type === 'storvsc') as unknown as
    | {
        controllers: {
          controller: number;
          version: string;
          disks: GuestDiskJson[];
          channels: ChannelJson[];
        }[];
        summary: string;
      }
    | undefined;
  const c = storvsc?.controllers.find((x) => x.controller === index);
  if (!c)
    throw new Error(
      `no guest storvsc controller ${index} in ${JSON.stringify(status.guest.devices)}`,
    );
  return c;
}

/** Unmounts and detaches what a test set up, ignoring what is already gone. */
export async function cleanupMount(mountpoint: string, loop?: string): Promise<void> {
  if (existsSync(mountpoint)) await run('umount', ['-l', mountpoint]);
  if (loop) await run('losetup', ['-d', loop]);
}
