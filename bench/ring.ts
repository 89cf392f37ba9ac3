/**
 * `npm run bench -- ring`: packets through a VMBus ring between two worker
 * threads (ChannelEndpoint on both ends: packet encoding, batching,
 * interrupt suppression, copy-out on read), beside MessagePort.postMessage of
 * the same payloads between two workers and a single-thread TypedArray.set
 * copy, all measured in this run.
 */
import { MessageChannel, type MessagePort, type Worker } from 'node:worker_threads';
import { startTsWorker } from '../src/vm/worker-launch.ts';
import { Ring } from '../src/vmbus/ring.ts';
import { type Figure, figure, report } from './report.ts';

const REPEATS = 5;

interface Side {
  start: number;
  end: number;
  checksum: number;
}

async function pairRun(
  jobs: [Record<string, unknown>, Record<string, unknown>],
  transfer: unknown[][],
): Promise<number> {
  const workers: Worker[] = jobs.map((job, i) =>
    startTsWorker(
      new URL('./_ring-worker.ts', import.meta.url),
      job,
      transfer[i] as (ArrayBuffer | MessagePort)[],
    ),
  );
  await Promise.all(workers.map((w) => new Promise((resolve) => w.once('message', resolve))));
  const results = workers.map((w) => new Promise<Side>((resolve) => w.once('message', resolve)));
  for (const w of workers) w.postMessage('go');
  const [a, b] = await Promise.all(results);
  await Promise.all(workers.map((w) => w.terminate()));
  if (a!.checksum !== 0 && b!.checksum !== 0 && a!.checksum !== b!.checksum)
    throw new Error('checksum mismatch');
  return (Math.max(a!.end, b!.end) - Math.min(a!.start, b!.start)) / 1000;
}

async function ringRun(payload: number, count: number, inPlaceAbove?: number): Promise<number> {
  const dataBytes = payload >= 16 * 1024 ? 8 * 1024 * 1024 : 1024 * 1024;
  const make = (): SharedArrayBuffer => {
    const sab = new SharedArrayBuffer(4096 + dataBytes);
    Ring.fromBytes(new Uint8Array(sab)).initialize();
    return sab;
  };
  const ringAtoB = make();
  const ringBtoA = make();
  const bells = new SharedArrayBuffer(8);
  return pairRun(
    [
      { role: 'ring-writer', ringAtoB, ringBtoA, bells, count, payload },
      { role: 'ring-reader', ringAtoB, ringBtoA, bells, count, payload, inPlaceAbove },
    ],
    [[], []],
  );
}

async function portRun(payload: number, count: number): Promise<number> {
  const { port1, port2 } = new MessageChannel();
  const start = (role: string, port: unknown): Worker =>
    startTsWorkerWithTransfer({ role, port, count, payload }, [port]);
  const workers = [start('port-sender', port1), start('port-receiver', port2)];
  await Promise.all(workers.map((w) => new Promise((resolve) => w.once('message', resolve))));
  const results = workers.map((w) => new Promise<Side>((resolve) => w.once('message', resolve)));
  for (const w of workers) w.postMessage('go');
  const [a, b] = await Promise.all(results);
  await Promise.all(workers.map((w) => w.terminate()));
  return (Math.max(a!.end, b!.end) - Math.min(a!.start, b!.start)) / 1000;
}

function startTsWorkerWithTransfer(job: Record<string, unknown>, transferList: unknown[]): Worker {
  return startTsWorker(
    new URL('./_ring-worker.ts', import.meta.url),
    job,
    transferList as (ArrayBuffer | MessagePort)[],
  );
}

/** Bytes per second of a plain TypedArray.set copy of `payload`-sized chunks in one thread. */
function copyRun(payload: number, totalBytes: number): number {
  const source = new Uint8Array(payload).map((_, i) => i & 0xff);
  const target = new Uint8Array(Math.max(payload, 8 * 1024 * 1024));
  const chunks = Math.floor(target.length / payload);
  const iterations = Math.ceil(totalBytes / payload);
  const start = performance.now();
  for (let i = 0; i < iterations; i++) target.set(source, (i % chunks) * payload);
  const seconds = (performance.now() - start) / 1000;
  if (target[payload - 1] !== ((payload - 1) & 0xff)) throw new Error('copy check');
  return totalBytes / seconds;
}

export async function run(): Promise<void> {
  const cases = [
    { payload: 64, ringCount: 1_000_000, portCount: 100_000 },
    { payload: 1024, ringCount: 400_000, portCount: 60_000 },
    { payload: 64 * 1024, ringCount: 20_000, portCount: 4_000 },
  ];
  const figures: Figure[] = [];
  for (const c of cases) {
    const ringRate: number[] = [];
    const inPlaceRate: number[] = [];
    const portRate: number[] = [];
    const copyRate: number[] = [];
    const large = c.payload >= 64 * 1024;
    for (let r = 0; r < REPEATS; r++) {
      ringRate.push(c.ringCount / (await ringRun(c.payload, c.ringCount)));
      if (large) inPlaceRate.push(c.ringCount / (await ringRun(c.payload, c.ringCount, 4096)));
      portRate.push(c.portCount / (await portRun(c.payload, c.portCount)));
      copyRate.push(copyRun(c.payload, c.ringCount * c.payload));
    }
    const label = c.payload >= 1024 ? `${c.payload / 1024} KiB` : `${c.payload} B`;
    figures.push(
      figure(
        `ring ${label}: messages/s`,
        'msg/s',
        ringRate,
        'MessagePort.postMessage messages/s',
        portRate,
        c.payload === 64 ? '>= 10x MessagePort' : undefined,
      ),
    );
    figures.push(
      figure(
        `ring ${label}: MB/s`,
        'MB/s',
        ringRate.map((m) => (m * c.payload) / 1e6),
        'TypedArray.set copy MB/s (one thread)',
        copyRate.map((b) => b / 1e6),
        large ? '>= 0.5x copy bandwidth' : undefined,
      ),
    );
    if (large) {
      figures.push(
        figure(
          `ring ${label}, payload read in place: MB/s`,
          'MB/s',
          inPlaceRate.map((m) => (m * c.payload) / 1e6),
          'TypedArray.set copy MB/s (one thread)',
          copyRate.map((b) => b / 1e6),
          '>= 0.5x copy bandwidth',
        ),
      );
    }
  }
  report('ring', figures, { repeats: REPEATS, cases });
}
