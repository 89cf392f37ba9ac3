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
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { callVm } from '../src/cli/control-client.ts';
import {
  fio as fioJob,
  fioOptions,
  MiB,
  option,
  randomRaw,
  type ServerProcess,
  startQemuNbd,
  startServerProcess,
  toolVersions,
  type Workload,
  warmUp,
  workloads,
} from './_fio-nbd.ts';
import { type Figure, figure, report } from './report.ts';

const root = join(import.meta.dirname, '..');

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

/** One fio job, with the CPU time the server process `pid` spent per I/O meanwhile. */
async function fio(
  uri: string,
  w: Workload,
  runtime: number,
  sizeMiB: number,
  pid: number,
): Promise<Sample> {
  const before = cpuSeconds(pid);
  const { rate, ios } = await fioJob(uri, w, runtime, sizeMiB);
  const cpu = cpuSeconds(pid) - before;
  return { rate, cpuPerIo: ios > 0 ? (cpu * 1e6) / ios : Number.NaN };
}

async function startVm(
  dir: string,
  raw: string,
  channels: number,
  nodeArgs: string[] = [],
): Promise<ServerProcess & { control: string }> {
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
  const vm = await startServerProcess(
    'hvkit run',
    process.execPath,
    [...nodeArgs, join(root, 'bin', 'hvkit.js'), 'run', config, '--control', control],
    join(dir, 'bench-scsi0-lun0.sock'),
    { env: { ...process.env, HVKIT_RUN_DIR: dir }, stopSignal: 'SIGINT' },
  );
  return { ...vm, control };
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
  const { runtime, reps, sizeMiB } = fioOptions(args);
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
    const qemu = await startQemuNbd(raw, 'raw', join(dir, 'qemu.sock'));
    try {
      await fio(vm.uri, warmUp, 1, sizeMiB, vm.pid);
      await fio(qemu.uri, warmUp, 1, sizeMiB, qemu.pid);
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
  const versions = await toolVersions();
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
    fio: versions.fio,
    qemuNbd: versions.qemuNbd,
    ...(profiles ? { profiles } : {}),
    totalSeconds: Math.round((Date.now() - started) / 1000),
  });
}
