/**
 * `npm run bench -- storage [--runtime=S] [--reps=N] [--size=MiB] [--channels=N] [--profile]`
 *
 * The whole synthetic SCSI path beside a direct NBD server of the same file:
 *
 *   fio --ioengine=nbd → guest NBD export → storvsc → VMBus rings → storvsp → raw file
 *   fio --ioengine=nbd → qemu-nbd → the same raw file
 *
 * The VM is a real `hvkit run` process (host and guest workers); qemu-nbd
 * serves the very file the VM's disk is, and the two are measured in turn,
 * repetition by repetition, in the same run. Workloads: 4 KiB random read
 * and write at queue depth 32, 1 MiB sequential read and write at queue
 * depth 8. The file is random data small enough to stay in the page cache,
 * so the figures compare the I/O paths, not the storage device. Besides the
 * rates, the CPU time each server process used per I/O is recorded (from
 * /proc), which is steadier than the rates on a shared machine.
 *
 * --profile reruns 4 KiB random reads and 1 MiB reads with the VM under
 * `node --cpu-prof` and prints where each thread's time went.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { callVm } from '../src/cli/control-client.ts';
import { type Figure, figure, report } from './report.ts';

const MiB = 1024 * 1024;
const PATH = `/usr/bin:/usr/sbin:${process.env.PATH ?? ''}`;
const root = join(import.meta.dirname, '..');

interface Workload {
  readonly name: string;
  readonly rw: 'randread' | 'randwrite' | 'read' | 'write';
  readonly bs: string;
  readonly iodepth: number;
  readonly unit: 'IOPS' | 'MiB/s';
  readonly target: string;
}

const workloads: readonly Workload[] = [
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

function option(args: readonly string[], name: string, fallback: number): number {
  const arg = args.find((a) => a.startsWith(`--${name}=`));
  if (!arg) return fallback;
  const value = Number(arg.slice(name.length + 3));
  if (!Number.isFinite(value) || value <= 0)
    throw new Error(`--${name} must be a positive number, got ${arg}`);
  return value;
}

function exec(cmd: string, args: readonly string[], timeoutMs = 180_000): Promise<string> {
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

async function waitFor(path: string, child: ChildProcess, what: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (!existsSync(path)) {
    if (child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode}`);
    if (Date.now() > deadline) throw new Error(`${what} did not create ${path}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** CPU seconds (user + system, all threads) a process has used. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

interface Sample {
  readonly rate: number;
  /** CPU time of the server process per I/O, in microseconds. */
  readonly cpuPerIo: number;
}

async function fio(
  uri: string,
  w: Workload,
  runtime: number,
  sizeMiB: number,
  pid: number,
): Promise<Sample> {
  const before = cpuSeconds(pid);
  const out = await exec('fio', [
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
  ]);
  const cpu = cpuSeconds(pid) - before;
  const job = JSON.parse(out.slice(out.indexOf('{'))).jobs[0];
  if (job.error) throw new Error(`fio ${w.name} on ${uri}: error ${job.error}`);
  const side = w.rw.includes('read') ? job.read : job.write;
  const ios = side.total_ios as number;
  return {
    rate: w.unit === 'IOPS' ? side.iops : side.bw_bytes / MiB,
    cpuPerIo: ios > 0 ? (cpu * 1e6) / ios : Number.NaN,
  };
}

async function randomRaw(path: string, size: number): Promise<void> {
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

interface Running {
  readonly pid: number;
  readonly uri: string;
  stop(): Promise<void>;
}

async function startVm(
  dir: string,
  raw: string,
  channels: number,
  nodeArgs: string[] = [],
): Promise<Running & { control: string }> {
  const config = join(dir, 'vm.json');
  const control = join(dir, 'control.sock');
  writeFileSync(
    config,
    JSON.stringify({
      name: 'bench',
      memory: '128M',
      devices: [
        { type: 'scsi', channels, disks: [{ path: raw, lun: 0 }], export: { socket_dir: dir } },
      ],
    }),
  );
  const socket = join(dir, 'bench-scsi0-lun0.sock');
  const child = spawn(
    process.execPath,
    [...nodeArgs, join(root, 'bin', 'hvkit.js'), 'run', config, '--control', control],
    {
      env: { ...process.env, HVKIT_RUN_DIR: dir },
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  const exited = new Promise((resolve) => child.once('exit', resolve));
  try {
    await waitFor(socket, child, 'hvkit run');
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
  return {
    pid: child.pid!,
    uri: `nbd+unix:///?socket=${socket}`,
    control,
    async stop() {
      child.kill('SIGINT');
      await exited;
    },
  };
}

async function startQemu(dir: string, raw: string): Promise<Running> {
  const socket = join(dir, 'qemu.sock');
  const child = spawn('qemu-nbd', ['-k', socket, '-f', 'raw', '--persistent', '--shared=8', raw], {
    env: { ...process.env, PATH },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  try {
    await waitFor(socket, child, 'qemu-nbd');
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
  return {
    pid: child.pid!,
    uri: `nbd+unix:///?socket=${socket}`,
    async stop() {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
  samples: number[];
  timeDeltas: number[];
}

/** Frames that only run while fio drives I/O (the boot scan runs none of them). */
const DATA_PATH = /^(readPiece|writePiece|readWrite) /;

/**
 * The top self-time functions of each profiled thread that did storage
 * work, counting from the thread's first data-path sample (so start-up and
 * the boot-time LUN scan are left out).
 */
function summarizeProfiles(dir: string): { thread: string; busyMs: number; top: string[] }[] {
  const out: { thread: string; busyMs: number; top: string[] }[] = [];
  for (const file of readdirSync(dir)
    .filter((f) => f.endsWith('.cpuprofile'))
    .sort()) {
    const profile = JSON.parse(readFileSync(join(dir, file), 'utf8')) as CpuProfile;
    const byId = new Map(profile.nodes.map((n) => [n.id, n.callFrame]));
    const key = (id: number): string => {
      const frame = byId.get(id)!;
      return `${frame.functionName || '(anonymous)'} ${basename(frame.url) || '(native)'}`;
    };
    const first = profile.samples.findIndex((id) => DATA_PATH.test(key(id)));
    if (first < 0) continue;
    const self = new Map<string, number>();
    let busy = 0;
    let guest = false;
    for (let i = first; i < profile.samples.length; i++) {
      const k = key(profile.samples[i]!);
      if (k.startsWith('(idle)')) continue;
      if (k.includes('vsc-channel') || k.includes('guest-disk')) guest = true;
      const dt = profile.timeDeltas[i] ?? 0;
      self.set(k, (self.get(k) ?? 0) + dt);
      busy += dt;
    }
    const top = [...self.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 14)
      .map(([k, v]) => `${((100 * v) / busy).toFixed(1).padStart(5)}%  ${k}`);
    out.push({
      thread: guest ? 'guest worker' : 'host worker',
      busyMs: Math.round(busy / 1000),
      top,
    });
  }
  return out;
}

async function profile(
  dir: string,
  raw: string,
  channels: number,
  runtime: number,
  sizeMiB: number,
) {
  const results: Record<string, { thread: string; busyMs: number; top: string[] }[]> = {};
  for (const w of [workloads[0]!, workloads[2]!]) {
    const profDir = join(dir, `prof-${w.rw}`);
    const vm = await startVm(dir, raw, channels, [`--cpu-prof`, `--cpu-prof-dir=${profDir}`]);
    try {
      await fio(vm.uri, w, runtime, sizeMiB, vm.pid);
    } finally {
      await vm.stop();
    }
    results[w.name] = summarizeProfiles(profDir);
    console.log(`\nprofile, ${w.name} (self time of the busy samples):`);
    for (const t of results[w.name]!) {
      console.log(`  ${t.thread}, ${t.busyMs} ms busy:`);
      for (const line of t.top) console.log(`    ${line}`);
    }
  }
  return results;
}

export async function run(args: string[]): Promise<void> {
  const runtime = option(args, 'runtime', 3);
  const reps = option(args, 'reps', 3);
  const sizeMiB = option(args, 'size', 128);
  const channels = option(args, 'channels', 2);
  const dir = await mkdtemp(join(tmpdir(), 'hvkit-bench-storage-'));
  const figures: Figure[] = [];
  const cpu: Record<string, { hvkitUsPerIo: number; qemuUsPerIo: number }> = {};
  const started = Date.now();
  const loadBefore = loadavg();
  let channelCounters: unknown;
  let profiles: unknown;
  try {
    const raw = join(dir, 'disk.raw');
    await randomRaw(raw, sizeMiB * MiB);
    const vm = await startVm(dir, raw, channels);
    const qemu = await startQemu(dir, raw);
    try {
      await fio(vm.uri, workloads[2]!, 1, sizeMiB, vm.pid);
      await fio(qemu.uri, workloads[2]!, 1, sizeMiB, qemu.pid);
      for (const w of workloads) {
        const ours: Sample[] = [];
        const theirs: Sample[] = [];
        for (let r = 0; r < reps; r++) {
          ours.push(await fio(vm.uri, w, runtime, sizeMiB, vm.pid));
          theirs.push(await fio(qemu.uri, w, runtime, sizeMiB, qemu.pid));
        }
        const f = figure(
          `${w.name} (guest export → storvsc → storvsp → raw)`,
          w.unit,
          ours.map((s) => s.rate),
          'qemu-nbd of the same raw file',
          theirs.map((s) => s.rate),
          w.target,
        );
        figures.push(f);
        const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
        cpu[w.name] = {
          hvkitUsPerIo: Math.round(median(ours.map((s) => s.cpuPerIo))),
          qemuUsPerIo: Math.round(median(theirs.map((s) => s.cpuPerIo))),
        };
        console.log(
          `  ${w.name}: ${f.value.toFixed(0)} vs ${f.baseline.toFixed(0)} ${w.unit} (ratio ${f.ratio.toFixed(2)}); CPU per I/O ${cpu[w.name]!.hvkitUsPerIo} vs ${cpu[w.name]!.qemuUsPerIo} µs`,
        );
      }
      const status = (await callVm(vm.control, 'status')) as {
        host: { devices: { type: string; channels?: unknown }[] };
        guest: { devices: { type: string; controllers?: { channels: unknown }[] }[] };
      };
      channelCounters = {
        host: status.host.devices.find((d) => d.type === 'scsi')?.channels,
        guest: status.guest.devices.find((d) => d.type === 'storvsc')?.controllers?.[0]?.channels,
      };
    } finally {
      await vm.stop();
      await qemu.stop();
    }
    if (args.includes('--profile')) profiles = await profile(dir, raw, channels, runtime, sizeMiB);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  const fioVersion = (await exec('fio', ['--version'])).trim();
  const qemuVersion = (await exec('qemu-nbd', ['--version'])).split('\n')[0]?.trim();
  report('storage', figures, {
    command: `npm run bench -- storage --runtime=${runtime} --reps=${reps} --size=${sizeMiB} --channels=${channels}${args.includes('--profile') ? ' --profile' : ''}`,
    method:
      'fio --ioengine=nbd over Unix sockets; the VM is a separate `hvkit run` process (host and guest worker threads), its guest exporting the storvsc disk over NBD; qemu-nbd --shared=8 (cache=writeback, aio=threads) serves the same raw file; repetitions interleaved; file in the page cache',
    cpuMicrosecondsPerIo: cpu,
    channelCounters,
    loadAverageBefore: loadBefore,
    loadAverageAfter: loadavg(),
    runtimeSeconds: runtime,
    repetitions: reps,
    imageMiB: sizeMiB,
    channels,
    fio: fioVersion,
    qemuNbd: qemuVersion,
    ...(profiles ? { profiles } : {}),
    totalSeconds: Math.round((Date.now() - started) / 1000),
  });
}
