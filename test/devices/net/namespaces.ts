/**
 * Network namespaces a test makes for itself, removed afterwards (also when
 * the test fails): names carry the process id so parallel test files never
 * meet, and addresses stay inside them (192.0.2.0/24, TEST-NET-1).
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { addNetns, deleteNetns, netnsExists } from '../../../src/vm/network/ip.ts';

const exec = promisify(execFile);

export class TestNamespaces {
  private readonly made: string[] = [];

  /** A fresh namespace named `<prefix>-<pid>`. */
  async add(prefix: string): Promise<string> {
    const name = `${prefix}-${process.pid}`;
    if (await netnsExists(name)) await deleteNetns(name);
    await addNetns(name);
    this.made.push(name);
    return name;
  }

  /** Runs a command inside a namespace; resolves with its output (rejects on failure). */
  async exec(netns: string, command: string, args: readonly string[], timeoutMs = 30_000) {
    return exec('ip', ['netns', 'exec', netns, command, ...args], {
      timeout: timeoutMs,
      maxBuffer: 64 * 1024 * 1024,
      encoding: 'utf8',
    });
  }

  /** Starts a long-running command inside a namespace (the caller kills it). */
  spawn(netns: string, command: string, args: readonly string[]): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', netns, command, ...args], { stdio: 'ignore' });
    this.children.push(child);
    return child;
  }

  private readonly children: ChildProcess[] = [];

  async removeAll(): Promise<void> {
    for (const child of this.children.splice(0)) child.kill('SIGKILL');
    for (const name of this.made.splice(0).reverse()) {
      await deleteNetns(name).catch(() => {});
    }
  }
}

/** Fails (never skips) when the test cannot configure the network. */
export function requireRoot(): void {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    throw new Error('this test needs root (network namespaces and TAP devices); run it as root');
  }
}

/** Resolves once something listens on address:port, as seen from `netns` (polls with bash's /dev/tcp). */
export async function waitForPort(
  spaces: TestNamespaces,
  netns: string,
  address: string,
  port: number,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await spaces.exec(netns, 'bash', ['-c', `exec 3<>/dev/tcp/${address}/${port}`], 2000);
      return;
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`nothing listens on ${address}:${port}: ${error}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/**
 * Serves `bytes` of random data at http://address:port/file from a node
 * process inside `netns`; resolves with the data's sha256.
 */
export async function serveFile(
  spaces: TestNamespaces,
  netns: string,
  address: string,
  port: number,
  bytes: number,
): Promise<{ sha256: string; close(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'hvkit-http-'));
  const file = join(dir, 'file');
  const data = randomBytes(bytes);
  await writeFile(file, data);
  const sha256 = createHash('sha256').update(data).digest('hex');
  const script = `require('http').createServer((q,s)=>{s.writeHead(200,{'content-length':${bytes}});require('fs').createReadStream(${JSON.stringify(file)}).pipe(s)}).listen(${port},${JSON.stringify(address)})`;
  const child = spaces.spawn(netns, process.execPath, ['-e', script]);
  return {
    sha256,
    async close() {
      child.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    },
  };
}
