/**
 * `npm run bench -- disk [--runtime=S] [--reps=N] [--size=MiB]`
 *
 * Disk backends served over NBD, measured with fio's nbd engine: 4 KiB
 * random read and write at queue depth 32, and 1 MiB sequential read and
 * write at queue depth 8. Each figure is hvkit's NBD server (`hvkit disk
 * serve` in-process: openImage + NbdServer) beside qemu-nbd serving a
 * byte-identical copy of the same image (-f raw | vhdx | vpc), measured in
 * the same run, interleaved repetition by repetition. The image is filled
 * with random data first (so dynamic formats have every block allocated)
 * and is small enough to sit in the page cache: the figures compare the
 * servers and backends, not the storage device.
 */
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BlockDevice } from '../src/block/block-device.ts';
import { type DiskFormat, openImage } from '../src/block/image/open.ts';
import { NbdServer } from '../src/nbd/server/server.ts';
import {
  exec,
  fio,
  fioOptions,
  MiB,
  randomRaw,
  startQemuNbd,
  toolVersions,
  warmUp,
  workloads,
} from './_fio-nbd.ts';
import { type Figure, figure, report } from './report.ts';

/** Our format name, and qemu's name and creation options for the same format. */
const backends: readonly { format: DiskFormat; qemu: string; options: string[] }[] = [
  { format: 'raw', qemu: 'raw', options: [] },
  { format: 'vhdx', qemu: 'vhdx', options: ['-o', 'subformat=dynamic'] },
  { format: 'vhd', qemu: 'vpc', options: ['-o', 'subformat=dynamic,force_size=on'] },
];

interface Served {
  readonly uri: string;
  stop(): Promise<void>;
}

async function serveHvkit(path: string, format: DiskFormat, socket: string): Promise<Served> {
  const device: BlockDevice = await openImage(path, { format });
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

export async function run(args: string[]): Promise<void> {
  const { runtime, reps, sizeMiB } = fioOptions(args);
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
      const qemu = await startQemuNbd(
        theirs,
        backend.qemu,
        join(dir, `theirs-${backend.format}.sock`),
      );
      try {
        // Warm both servers and the page cache once.
        await fio(hvkit.uri, warmUp, 1, sizeMiB);
        await fio(qemu.uri, warmUp, 1, sizeMiB);
        for (const w of workloads) {
          const ourSamples: number[] = [];
          const qemuSamples: number[] = [];
          for (let r = 0; r < reps; r++) {
            ourSamples.push((await fio(hvkit.uri, w, runtime, sizeMiB)).rate);
            qemuSamples.push((await fio(qemu.uri, w, runtime, sizeMiB)).rate);
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
  const versions = await toolVersions();
  report('disk', figures, {
    command: `npm run bench -- disk --runtime=${runtime} --reps=${reps} --size=${sizeMiB}`,
    method:
      'fio --ioengine=nbd over a Unix socket; hvkit NbdServer (in-process) vs qemu-nbd --shared=8 (default cache=writeback, aio=threads) on byte-identical copies of a random-filled image; repetitions interleaved; image in the page cache',
    runtimeSeconds: runtime,
    repetitions: reps,
    imageMiB: sizeMiB,
    fio: versions.fio,
    qemuNbd: versions.qemuNbd,
    missingBackends: missing,
    totalSeconds: Math.round((Date.now() - started) / 1000),
  });
}
