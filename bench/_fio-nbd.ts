/**
 * What the NBD benchmarks (disk, storage) share: their numeric options, the
 * fio workloads and one fio job against an NBD URI, a random-filled raw
 * image, and server processes (qemu-nbd as the baseline, or a VM) started on
 * a Unix socket and stopped again. Not a suite itself (bench/main.ts skips
 * files whose name starts with `_`).
 */
import { execFile, spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { open } from 'node:fs/promises';
import { connect } from 'node:net';

export const MiB = 1024 * 1024;
/** Where the tools live (the sbin directories are not on every user's PATH). */
const PATH = `/usr/bin:/usr/sbin:${process.env.PATH ?? ''}`;

/** `--name=N` from the suite's arguments: a positive number, or `fallback` when absent. */
export function option(args: readonly string[], name: string, fallback: number): number {
  const arg = args.find((a) => a.startsWith(`--${name}=`));
  if (!arg) return fallback;
  const value = Number(arg.slice(name.length + 3));
  if (!Number.isFinite(value) || value <= 0) {
    throw new Error(`--${name} must be a positive number, got ${arg}`);
  }
  return value;
}

/** The options every fio suite takes: seconds per job, repetitions, and the image size in MiB. */
export function fioOptions(args: readonly string[]): {
  runtime: number;
  reps: number;
  sizeMiB: number;
} {
  return {
    runtime: option(args, 'runtime', 3),
    reps: option(args, 'reps', 3),
    sizeMiB: option(args, 'size', 128),
  };
}

/** Runs a tool to completion; resolves with its stdout, rejects (with stderr) on failure. */
export function exec(cmd: string, args: readonly string[], timeoutMs = 180_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      { env: { ...process.env, PATH }, timeout: timeoutMs, maxBuffer: 64 << 20 },
      (error, stdout, stderr) => {
        if (error) reject(new Error(`${cmd} ${args.join(' ')}: ${error.message}\n${stderr}`));
        else resolve(stdout);
      },
    );
  });
}

/** The first line of `fio --version` and of `qemu-nbd --version`, for the report. */
export async function toolVersions(): Promise<{ fio: string; qemuNbd: string | undefined }> {
  const fio = (await exec('fio', ['--version'])).trim();
  const qemuNbd = (await exec('qemu-nbd', ['--version'])).split('\n')[0]?.trim();
  return { fio, qemuNbd };
}

export interface Workload {
  readonly name: string;
  readonly rw: 'randread' | 'randwrite' | 'read' | 'write';
  readonly bs: string;
  readonly iodepth: number;
  readonly unit: 'IOPS' | 'MiB/s';
  /** The ratio to the baseline the storage path aims for. */
  readonly target: string;
}

/** 4 KiB random read and write at queue depth 32; 1 MiB sequential read and write at depth 8. */
export const workloads: readonly Workload[] = [
  {
    name: '4k randread qd32',
    rw: 'randread',
    bs: '4k',
    iodepth: 32,
    unit: 'IOPS',
    target: '>= 0.8',
  },
  {
    name: '4k randwrite qd32',
    rw: 'randwrite',
    bs: '4k',
    iodepth: 32,
    unit: 'IOPS',
    target: '>= 0.8',
  },
  { name: '1M seq read qd8', rw: 'read', bs: '1M', iodepth: 8, unit: 'MiB/s', target: '>= 0.9' },
  { name: '1M seq write qd8', rw: 'write', bs: '1M', iodepth: 8, unit: 'MiB/s', target: '>= 0.9' },
];

/** The sequential read workload, used to warm servers and the page cache. */
export const warmUp: Workload = workloads[2]!;

export interface FioResult {
  /** IOPS or MiB/s, as the workload's unit says. */
  readonly rate: number;
  /** I/Os fio completed. */
  readonly ios: number;
}

/** Runs one time-based fio job (nbd engine) against `uri` over the first `sizeMiB` of the export. */
export async function fio(
  uri: string,
  w: Workload,
  runtime: number,
  sizeMiB: number,
): Promise<FioResult> {
  const out = await exec(
    'fio',
    [
      '--name=bench',
      '--ioengine=nbd',
      `--uri=${uri}`,
      `--rw=${w.rw}`,
      `--bs=${w.bs}`,
      `--iodepth=${w.iodepth}`,
      `--size=${sizeMiB}M`,
      '--time_based',
      `--runtime=${runtime}`,
      '--randrepeat=0',
      '--output-format=json',
    ],
    (runtime + 180) * 1000,
  );
  // fio may print notices before the JSON document.
  const job = JSON.parse(out.slice(out.indexOf('{'))).jobs[0];
  if (job.error) throw new Error(`fio ${w.name} on ${uri}: error ${job.error}`);
  const side = w.rw.includes('read') ? job.read : job.write;
  return {
    rate: w.unit === 'IOPS' ? side.iops : side.bw_bytes / MiB,
    ios: side.total_ios as number,
  };
}

/** Writes `size` bytes of random data to a new raw file. */
export async function randomRaw(path: string, size: number): Promise<void> {
  const file = await open(path, 'w');
  try {
    const piece = new Uint8Array(MiB);
    for (let at = 0; at < size; at += MiB) {
      randomFillSync(piece);
      await file.write(piece, 0, Math.min(MiB, size - at), at);
    }
  } finally {
    await file.close();
  }
}

/** A server process reachable at an NBD URI. */
export interface ServerProcess {
  readonly pid: number;
  readonly uri: string;
  /** Signals the process (`stopSignal`) and waits for it to exit. */
  stop(): Promise<void>;
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

/**
 * Starts a server process and resolves once something accepts connections
 * on `socket` (the export's NBD URI is built from it). Fails, killing the
 * process, when it exits first or nothing listens within 60 s.
 */
export async function startServerProcess(
  what: string,
  cmd: string,
  args: readonly string[],
  socket: string,
  options: { env?: NodeJS.ProcessEnv; stopSignal: NodeJS.Signals },
): Promise<ServerProcess> {
  const child = spawn(cmd, args, {
    env: options.env ?? { ...process.env, PATH },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  let gone = false;
  child.once('error', (error) => {
    stderr += error.message;
    gone = true;
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  void exited.then(() => {
    gone = true;
  });
  const deadline = Date.now() + 60_000;
  try {
    while (!(await accepts(socket))) {
      if (gone) throw new Error(`${what} exited with ${child.exitCode}: ${stderr}`);
      if (Date.now() > deadline) throw new Error(`${what} did not listen on ${socket}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
  return {
    pid: child.pid!,
    uri: `nbd+unix:///?socket=${socket}`,
    async stop() {
      child.kill(options.stopSignal);
      await exited;
    },
  };
}

/** qemu-nbd serving `path` (qemu format name `format`) on `socket`, 8 clients at once. */
export function startQemuNbd(path: string, format: string, socket: string): Promise<ServerProcess> {
  return startServerProcess(
    'qemu-nbd',
    'qemu-nbd',
    ['-k', socket, '-f', format, '--persistent', '--shared=8', path],
    socket,
    { stopSignal: 'SIGTERM' },
  );
}
