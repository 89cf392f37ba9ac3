/**
 * `npm run bench -- disk [--runtime=S] [--reps=N] [--size=MiB]`
 *
 * Disk backends served over NBD, measured with fio's nbd engine: 4 KiB
 * random read and write at queue depth 32, and 1 MiB sequential read and
 * write at queue depth 8. Each figure is hvkit's NBD server (`hvkit disk
 * serve` in-process: openDisk + NbdServer) beside qemu-nbd serving a
 * byte-identical copy of the same image (-f raw | vhdx | vpc), measured in
 * the same run, interleaved repetition by repetition. The image is filled
 * with random data first (so dynamic formats have every block allocated)
 * and is small enough to sit in the page cache: the figures compare the
 * servers and backends, not the storage device.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { copyFile, mkdtemp, open, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BlockDevice } from '../src/storage/disk/block-device.ts';
import { type DiskFormat, openDisk } from '../src/storage/disk/open.ts';
import { NbdServer } from '../src/storage/nbd/server.ts';
import { type Figure, figure, report } from './report.ts';

const MiB = 1024 * 1024;
const PATH = `/usr/bin:/usr/sbin:${process.env.PATH ?? ''}`;

interface Workload {
  readonly name: string;
  readonly rw: 'randread' | 'randwrite' | 'read' | 'write';
  readonly bs: string;
  readonly iodepth: number;
  readonly unit: 'IOPS' | 'MiB/s';
}

const workloads: readonly Workload[] = [
  { name: '4k randread qd32', rw: 'randread', bs: '4k', iodepth: 32, unit: 'IOPS' },
  { name: '4k randwrite qd32', rw: 'randwrite', bs: '4k', iodepth: 32, unit: 'IOPS' },
  { name: '1M seq read qd8', rw: 'read', bs: '1M', iodepth: 8, unit: 'MiB/s' },
  { name: '1M seq write qd8', rw: 'write', bs: '1M', iodepth: 8, unit: 'MiB/s' },
];

/** Our format name, and qemu's name and creation options for the same format. */
const backends: readonly { format: DiskFormat; qemu: string; options: string[] }[] = [
  { format: 'raw', qemu: 'raw', options: [] },
  { format: 'vhdx', qemu: 'vhdx', options: ['-o', 'subformat=dynamic'] },
  { format: 'vhd', qemu: 'vpc', options: ['-o', 'subformat=dynamic,force_size=on'] },
];

function option(args: readonly string[], name: string, fallback: number): number {
  const arg = args.find((a) => a.startsWith(`--${name}=`));
  if (!arg) return fallback;
  const value = Number(arg.slice(name.length + 3));
  if (!Number.isFinite(value) || value <= 0) {
    throw new Error(`--${name} must be a positive number, got ${arg}`);
  }
  return value;
}

function exec(cmd: string, args: readonly string[], timeoutMs = 120_000): Promise<string> {
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

async function waitForSocket(path: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ path });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${path}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Writes `size` bytes of random data to a new raw file. */
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

/** Runs one fio job against `uri`; returns IOPS or MiB/s as the workload asks. */
async function fio(uri: string, w: Workload, runtime: number, sizeMiB: number): Promise<number> {
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
    (runtime + 60) * 1000,
  );
  const job = JSON.parse(out.slice(out.indexOf('{'))).jobs[0];
  const side = w.rw.includes('read') ? job.read : job.write;
  if (job.error) throw new Error(`fio ${w.name} on ${uri}: error ${job.error}`);
  return w.unit === 'IOPS' ? side.iops : side.bw_bytes / MiB;
}

interface Served {
  readonly uri: string;
  stop(): Promise<void>;
}

async function serveHvkit(path: string, format: DiskFormat, socket: string): Promise<Served> {
  const device: BlockDevice = await openDisk(path, { format });
  const server = new NbdServer({ exports: [{ name: '', device }] });
  const where = await server.listen({ socket });
  return {
    uri: where.uri,
    async stop() {
      await server.close();
      await device.close();
    },
  };
}

async function serveQemu(path: string, qemuFormat: string, socket: string): Promise<Served> {
  const child: ChildProcess = spawn(
    'qemu-nbd',
    ['-k', socket, '-f', qemuFormat, '--persistent', '--shared=8', path],
    { env: { ...process.env, PATH }, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  try {
    await Promise.race([
      waitForSocket(socket),
      exited.then(() => {
        throw new Error(`qemu-nbd exited: ${stderr}`);
      }),
    ]);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  return {
    uri: `nbd+unix:///?socket=${socket}`,
    async stop() {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

export async function run(args: string[]): Promise<void> {
  const runtime = option(args, 'runtime', 3);
  const reps = option(args, 'reps', 3);
  const sizeMiB = option(args, 'size', 128);
  const dir = await mkdtemp(join(tmpdir(), 'hvkit-bench-disk-'));
  const figures: Figure[] = [];
  const missing: string[] = [];
  const started = Date.now();
  try {
    const source = join(dir, 'source.raw');
    await randomRaw(source, sizeMiB * MiB);
    for (const backend of backends) {
      const ours = join(dir, `ours.${backend.format}`);
      const theirs = join(dir, `theirs.${backend.format}`);
      if (backend.format === 'raw') await copyFile(source, ours);
      else {
        await exec('qemu-img', [
          'convert',
          '-f',
          'raw',
          '-O',
          backend.qemu,
          ...backend.options,
          source,
          ours,
        ]);
      }
      await copyFile(ours, theirs);
      let hvkit: Served;
      try {
        hvkit = await serveHvkit(ours, backend.format, join(dir, `ours-${backend.format}.sock`));
      } catch (err) {
        missing.push(`${backend.format}: ${(err as Error).message}`);
        console.log(`  ${backend.format}: skipped (${(err as Error).message})`);
        continue;
      }
      const qemu = await serveQemu(
        theirs,
        backend.qemu,
        join(dir, `theirs-${backend.format}.sock`),
      );
      try {
        // Warm both servers and the page cache once.
        await fio(hvkit.uri, workloads[2]!, 1, sizeMiB);
        await fio(qemu.uri, workloads[2]!, 1, sizeMiB);
        for (const w of workloads) {
          const ourSamples: number[] = [];
          const qemuSamples: number[] = [];
          for (let r = 0; r < reps; r++) {
            ourSamples.push(await fio(hvkit.uri, w, runtime, sizeMiB));
            qemuSamples.push(await fio(qemu.uri, w, runtime, sizeMiB));
          }
          const f = figure(
            `${backend.format} ${w.name} (hvkit nbd)`,
            w.unit,
            ourSamples,
            `qemu-nbd -f ${backend.qemu}`,
            qemuSamples,
          );
          figures.push(f);
          console.log(
            `  ${f.name}: ${f.value.toFixed(0)} ${w.unit} vs ${f.baseline.toFixed(0)} (ratio ${f.ratio.toFixed(2)})`,
          );
        }
      } finally {
        await hvkit.stop();
        await qemu.stop();
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  const fioVersion = (await exec('fio', ['--version'])).trim();
  const qemuVersion = (await exec('qemu-nbd', ['--version'])).split('\n')[0]?.trim();
  report('disk', figures, {
    command: `npm run bench -- disk --runtime=${runtime} --reps=${reps} --size=${sizeMiB}`,
    method:
      'fio --ioengine=nbd over a Unix socket; hvkit NbdServer (in-process) vs qemu-nbd --shared=8 (default cache=writeback, aio=threads) on byte-identical copies of a random-filled image; repetitions interleaved; image in the page cache',
    runtimeSeconds: runtime,
    repetitions: reps,
    imageMiB: sizeMiB,
    fio: fioVersion,
    qemuNbd: qemuVersion,
    missingBackends: missing,
    totalSeconds: Math.round((Date.now() - started) / 1000),
  });
}
