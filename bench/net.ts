/**
 * `npm run bench -- net [--runtime=S] [--reps=N] [--channels=N]`
 *
 * The synthetic NIC beside two baselines, measured in turn in the same run:
 *
 *   hvkit:  iperf3 in the guest namespace → eth0 (TAP) → netvsc → VMBus → netvsp → TAP → iperf3 in the host namespace
 *   veth:   iperf3 across a veth pair between two namespaces (the kernel alone)
 *   socat:  iperf3 across two TAPs joined by a user-space relay (socat, one datagram per frame)
 *
 * Workloads: TCP single stream both ways (Gbit/s), and 64-byte UDP packets
 * (received packets per second). Each figure is the median of the
 * repetitions; the CPU time the hvkit process spent per gigabyte moved shows
 * where the time goes beside the rate. Needs root (namespaces, TAPs); every
 * namespace and process it makes is removed at the end.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { callVm } from '../src/cli/control-client.ts';
import { option } from './_fio-nbd.ts';
import { type Figure, figure, report } from './report.ts';

const execFileAsync = promisify(execFile);
const root = join(import.meta.dirname, '..');
const tag = process.pid % 100000;

async function sh(cmd: string, args: readonly string[]): Promise<string> {
  return (
    await execFileAsync(cmd, args, { encoding: 'utf8', timeout: 300_000, maxBuffer: 64 << 20 })
  ).stdout;
}
const ip = (...args: string[]) => sh('ip', args);
const inNs = (ns: string, cmd: string, args: readonly string[]) =>
  sh('ip', ['netns', 'exec', ns, cmd, ...args]);

function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

interface Pair {
  readonly name: string;
  /** Namespace of the iperf3 client and server, and the server's address. */
  readonly client: string;
  readonly server: string;
  readonly address: string;
  /** A process whose CPU time is recorded per run (the hvkit VM), if any. */
  readonly pid?: number;
}

async function waitForServer(pair: Pair): Promise<void> {
  for (let i = 0; i < 100; i++) {
    try {
      await inNs(pair.client, 'bash', ['-c', `exec 3<>/dev/tcp/${pair.address}/5201`]);
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`${pair.name}: iperf3 server at ${pair.address} did not come up`);
}

interface Run {
  readonly rate: number;
  readonly cpuPerGB?: number;
}

/** One iperf3 run; rate is bit/s (TCP) or received packets/s (UDP). */
async function iperf(
  pair: Pair,
  runtime: number,
  mode: 'tcp' | 'tcp-reverse' | 'udp64',
): Promise<Run> {
  const server = spawn(
    'ip',
    ['netns', 'exec', pair.server, 'iperf3', '-s', '-1', '-B', pair.address],
    {
      stdio: 'ignore',
    },
  );
  try {
    await new Promise((r) => setTimeout(r, 200));
    const args = ['-c', pair.address, '-t', String(runtime), '-J', '--connect-timeout', '5000'];
    if (mode === 'tcp-reverse') args.push('-R');
    if (mode === 'udp64') args.push('-u', '-l', '64', '-b', '0');
    const before = pair.pid ? cpuSeconds(pair.pid) : 0;
    const out = JSON.parse(await inNs(pair.client, 'iperf3', args)) as {
      error?: string;
      end?: {
        sum_received?: { bits_per_second: number; bytes: number };
        sum?: { packets: number; lost_packets: number; seconds: number; bytes: number };
      };
    };
    const cpu = pair.pid ? cpuSeconds(pair.pid) - before : 0;
    if (out.error) throw new Error(`${pair.name}: iperf3: ${out.error}`);
    if (mode === 'udp64') {
      const s = out.end?.sum;
      if (!s) throw new Error(`${pair.name}: iperf3 reported no UDP sum`);
      const received = s.packets - s.lost_packets;
      return {
        rate: received / s.seconds,
        ...(pair.pid ? { cpuPerGB: cpu / ((received * 64) / 1e9) } : {}),
      };
    }
    const r = out.end?.sum_received;
    if (!r) throw new Error(`${pair.name}: iperf3 reported no TCP sum`);
    return { rate: r.bits_per_second, ...(pair.pid ? { cpuPerGB: cpu / (r.bytes / 1e9) } : {}) };
  } finally {
    server.kill('SIGKILL');
  }
}

class Namespaces {
  private readonly made: string[] = [];
  private readonly children: ChildProcess[] = [];

  async add(name: string): Promise<string> {
    await ip('netns', 'delete', name).catch(() => {});
    await ip('netns', 'add', name);
    await ip('-n', name, 'link', 'set', 'lo', 'up');
    this.made.push(name);
    return name;
  }

  spawn(cmd: string, args: readonly string[]): ChildProcess {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    this.children.push(child);
    return child;
  }

  async close(): Promise<void> {
    for (const c of this.children) c.kill('SIGKILL');
    for (const n of this.made.reverse()) await ip('netns', 'delete', n).catch(() => {});
  }
}

async function vethPair(spaces: Namespaces): Promise<Pair> {
  const a = await spaces.add(`hvkb-va-${tag}`);
  const b = await spaces.add(`hvkb-vb-${tag}`);
  await ip(
    'link',
    'add',
    `hvkbva${tag}`,
    'netns',
    a,
    'type',
    'veth',
    'peer',
    'name',
    `hvkbvb${tag}`,
    'netns',
    b,
  );
  await ip('-n', a, 'address', 'add', '198.51.100.1/24', 'dev', `hvkbva${tag}`);
  await ip('-n', b, 'address', 'add', '198.51.100.2/24', 'dev', `hvkbvb${tag}`);
  await ip('-n', a, 'link', 'set', `hvkbva${tag}`, 'up');
  await ip('-n', b, 'link', 'set', `hvkbvb${tag}`, 'up');
  return { name: 'veth pair', client: a, server: b, address: '198.51.100.2' };
}

async function socatRelay(spaces: Namespaces, dir: string): Promise<Pair> {
  const a = await spaces.add(`hvkb-sa-${tag}`);
  const b = await spaces.add(`hvkb-sb-${tag}`);
  const sa = join(dir, 'relay-a.sock');
  const sb = join(dir, 'relay-b.sock');
  // One socat per namespace, each a TAP on one side and a Unix datagram socket on the
  // other: every frame crosses user space as one datagram.
  spaces.spawn('ip', [
    'netns',
    'exec',
    a,
    'socat',
    `TUN:203.0.113.1/24,tun-type=tap,tun-name=hvkbsa${tag},iff-up`,
    `UNIX-SENDTO:${sb},bind=${sa}`,
  ]);
  spaces.spawn('ip', [
    'netns',
    'exec',
    b,
    'socat',
    `TUN:203.0.113.2/24,tun-type=tap,tun-name=hvkbsb${tag},iff-up`,
    `UNIX-SENDTO:${sa},bind=${sb}`,
  ]);
  for (let i = 0; i < 50; i++) {
    try {
      await inNs(a, 'ping', ['-c', '1', '-W', '1', '203.0.113.2']);
      return { name: 'socat TAP relay', client: a, server: b, address: '203.0.113.2' };
    } catch {
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  throw new Error('the socat relay did not pass a ping');
}

async function hvkitVm(
  spaces: Namespaces,
  dir: string,
  channels: number,
): Promise<{ pair: Pair; stop(): Promise<void>; describe(): Promise<unknown> }> {
  const hostNs = `hvkb-hh-${tag}`;
  const guestNs = `hvkb-hg-${tag}`;
  const config = join(dir, 'vm.json');
  const control = join(dir, 'control.sock');
  writeFileSync(
    config,
    JSON.stringify({
      name: `bench-${tag}`,
      memory: '128M',
      devices: [
        {
          type: 'nic',
          channels,
          host: { netns: hostNs, address: '192.0.2.1/24' },
          guest: { netns: guestNs, address: '192.0.2.2/24' },
        },
      ],
    }),
  );
  const child = spawn(
    process.execPath,
    [join(root, 'bin', 'hvkit.js'), 'run', config, '--control', control],
    {
      env: { ...process.env, HVKIT_RUN_DIR: dir },
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      const views = (await callVm(control, 'nic-guest-sides', {}, 5000)) as { state: string }[];
      if (views.some((v) => v.state === 'ready')) break;
    } catch {
      // Not listening yet.
    }
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`hvkit run did not bring its NIC up: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  void spaces;
  return {
    pair: {
      name: 'hvkit NIC',
      client: guestNs,
      server: hostNs,
      address: '192.0.2.1',
      pid: child.pid!,
    },
    async describe() {
      const status = (await callVm(control, 'status')) as {
        host: { devices: { type: string }[] };
        guest: { devices: { type: string }[] };
      };
      return {
        host: status.host.devices.find((d) => d.type === 'nic'),
        guest: status.guest.devices.find((d) => d.type === 'netvsc'),
      };
    },
    async stop() {
      child.kill('SIGINT');
      await exited;
    },
  };
}

export async function run(args: string[]): Promise<void> {
  if (process.getuid?.() !== 0)
    throw new Error('the net bench needs root (namespaces and TAP devices)');
  const runtime = option(args, 'runtime', 10);
  const reps = option(args, 'reps', 5);
  const channels = option(args, 'channels', 2);
  const dir = await mkdtemp(join(tmpdir(), 'hvkit-bench-net-'));
  const spaces = new Namespaces();
  const figures: Figure[] = [];
  const cpu: Record<string, number> = {};
  const loadBefore = loadavg();
  const started = Date.now();
  let vm: Awaited<ReturnType<typeof hvkitVm>> | undefined;
  let nic: unknown;
  try {
    const veth = await vethPair(spaces);
    const relay = await socatRelay(spaces, dir);
    vm = await hvkitVm(spaces, dir, channels);
    const pairs = [vm.pair, veth, relay];
    for (const p of pairs) await waitForServerOnce(p);
    const modes = [
      { mode: 'tcp' as const, label: 'TCP guest to host', unit: 'bit/s' },
      { mode: 'tcp-reverse' as const, label: 'TCP host to guest', unit: 'bit/s' },
      { mode: 'udp64' as const, label: 'UDP 64-byte packets', unit: 'pkt/s' },
    ];
    for (const m of modes) {
      const samples = new Map<string, Run[]>(pairs.map((p) => [p.name, []]));
      for (let r = 0; r < reps; r++) {
        for (const p of pairs) {
          if (m.mode === 'udp64' && p === relay) continue;
          samples.get(p.name)!.push(await iperf(p, runtime, m.mode));
        }
      }
      const ours = samples.get(vm.pair.name)!;
      const rates = (name: string) => samples.get(name)!.map((s) => s.rate);
      figures.push(
        figure(
          `${m.label}, hvkit`,
          m.unit,
          rates(vm.pair.name),
          `${m.label}, veth pair`,
          rates(veth.name),
          m.mode === 'udp64' ? undefined : '>= 0.5',
        ),
      );
      if (m.mode !== 'udp64') {
        figures.push(
          figure(
            `${m.label}, hvkit`,
            m.unit,
            rates(vm.pair.name),
            `${m.label}, socat relay`,
            rates(relay.name),
            '>= 10',
          ),
        );
      }
      const perGB = ours.map((s) => s.cpuPerGB ?? Number.NaN).sort((a, b) => a - b);
      cpu[m.label] = perGB[perGB.length >> 1]!;
    }
    nic = await vm.describe();
  } finally {
    await vm?.stop().catch(() => {});
    await spaces.close();
    await rm(dir, { recursive: true, force: true });
  }
  report('net', figures, {
    runtime,
    reps,
    channels,
    hvkitCpuSecondsPerGB: cpu,
    iperf3: (await sh('iperf3', ['--version']).catch(() => '')).split('\n')[0],
    socat: (await sh('socat', ['-V']).catch(() => ''))
      .split('\n')
      .find((l) => l.includes('version')),
    loadBefore,
    loadAfter: loadavg(),
    seconds: Math.round((Date.now() - started) / 1000),
    nic,
  });
}

/** Makes sure an iperf3 server in the pair's server namespace is reachable once (then each run starts its own). */
async function waitForServerOnce(pair: Pair): Promise<void> {
  const server = spawn('ip', ['netns', 'exec', pair.server, 'iperf3', '-s', '-B', pair.address], {
    stdio: 'ignore',
  });
  try {
    await waitForServer(pair);
  } finally {
    server.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 200));
  }
}
