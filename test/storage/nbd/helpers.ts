import { type ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { type BlockDevice, DiskIoError } from '../../../src/storage/disk/block-device.ts';
import { MemoryDisk } from '../../../src/storage/disk/memory-disk.ts';
import { NbdServer, type NbdServerOptions } from '../../../src/storage/nbd/server.ts';

/** Test plumbing for the NBD tests: temp dirs, child processes, sockets, a raw peer. */

export const TOOL_PATH = `/usr/bin:/usr/sbin:${process.env.PATH ?? ''}`;

/** Fails (never skips) when a tool the test drives is not installed. */
export function requireTool(name: string): void {
  const found = spawnSync('sh', ['-c', `command -v ${name}`], { env: { PATH: TOOL_PATH } });
  if (found.status !== 0) {
    throw new Error(`${name} is not installed; run scripts/ensure-tools.sh (npm test does)`);
  }
}

export async function tempDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'hvkit-nbd-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export interface ToolResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a tool to completion (killed after `timeoutMs`). */
export function run(cmd: string, args: readonly string[], timeoutMs = 60_000): Promise<ToolResult> {
  return new Promise((resolve) => {
    execFile(
      cmd,
      args,
      { env: { ...process.env, PATH: TOOL_PATH }, timeout: timeoutMs, maxBuffer: 16 << 20 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** Runs a tool and fails the test with its output when it exits non-zero. */
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

/** Starts a long-running process, killed when the test ends. */
export function startProcess(t: TestContext, cmd: string, args: readonly string[]): ChildProcess {
  const child = spawn(cmd, args, {
    env: { ...process.env, PATH: TOOL_PATH },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  child.on('error', () => {});
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await gone;
    }
  });
  Object.defineProperty(child, 'stderrText', { get: () => stderr });
  return child;
}

/** Waits until something accepts connections on a Unix socket. */
export async function waitForSocket(path: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
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
    if (Date.now() > deadline) throw new Error(`nothing listens on ${path} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Deterministic pseudo-random bytes (xorshift32). */
export function patternBytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/**
 * A MemoryDisk whose operations can be delayed, made to fail, and observed:
 * used to prove concurrency (replies in completion order), error mapping and
 * what reached the device.
 */
export class ScriptedDisk extends MemoryDisk {
  /** Milliseconds each read/write waits, chosen per call. */
  delay: (offset: number) => number = () => 0;
  /** Byte ranges whose reads fail with EIO at their first byte. */
  readonly badRanges: [number, number][] = [];
  flushes = 0;
  writes = 0;

  private async wait(offset: number): Promise<void> {
    const ms = this.delay(offset);
    if (ms > 0) await new Promise((r) => setTimeout(r, ms));
  }

  override async read(offset: number, target: Uint8Array): Promise<void> {
    await this.wait(offset);
    for (const [start, end] of this.badRanges) {
      if (offset < end && offset + target.length > start) {
        const at = Math.max(start, offset);
        throw new DiskIoError('EIO', `unreadable sector at ${at}`, at);
      }
    }
    await super.read(offset, target);
  }

  override async write(offset: number, source: Uint8Array): Promise<void> {
    await this.wait(offset);
    await super.write(offset, source);
    this.writes++;
  }

  override async flush(): Promise<void> {
    this.flushes++;
    await super.flush();
  }
}

export function memoryDisk(size: number, options: { readOnly?: boolean } = {}): BlockDevice {
  return new MemoryDisk(size, options);
}

/**
 * A raw NBD peer over a socket, for driving the server byte by byte. Its
 * encoders are written here from the spec, independently of src/.
 */
export class RawPeer {
  private buffered = Buffer.alloc(0);
  private waiter: (() => void) | undefined;
  ended = false;

  private constructor(readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, d]);
      this.waiter?.();
    });
    const end = (): void => {
      this.ended = true;
      this.waiter?.();
    };
    socket.on('end', end);
    socket.on('close', end);
    socket.on('error', end);
  }

  static async connect(path: string): Promise<RawPeer> {
    const socket = connect({ path });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new RawPeer(socket);
  }

  /** Reads exactly n bytes; rejects if the server closes first or nothing comes within 10 s. */
  async read(n: number): Promise<Buffer> {
    const deadline = Date.now() + 10_000;
    while (this.buffered.length < n) {
      if (this.ended) throw new Error(`connection closed with ${this.buffered.length}/${n} bytes`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waiter = undefined;
      if (Date.now() >= deadline && this.buffered.length < n) {
        throw new Error(`timed out waiting for ${n} bytes (have ${this.buffered.length})`);
      }
    }
    const out = this.buffered.subarray(0, n);
    this.buffered = this.buffered.subarray(n);
    return out;
  }

  /** Resolves true when the server closes the connection within `ms`. */
  async closedWithin(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!this.ended && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    return this.ended;
  }

  write(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Reads the 18-byte greeting and answers with client flags. */
  async greet(clientFlags = 3): Promise<{ magic: bigint; opts: bigint; flags: number }> {
    const g = await this.read(18);
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(clientFlags);
    this.write(flags);
    return { magic: g.readBigUInt64BE(0), opts: g.readBigUInt64BE(8), flags: g.readUInt16BE(16) };
  }

  sendOption(option: number, data: Uint8Array = new Uint8Array(0), length = data.length): void {
    const h = Buffer.alloc(16);
    h.write('IHAVEOPT', 0, 'latin1');
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(length, 12);
    this.write(Buffer.concat([h, data]));
  }

  async optionReply(): Promise<{ magic: bigint; option: number; type: number; data: Buffer }> {
    const h = await this.read(20);
    const length = h.readUInt32BE(16);
    const data = length > 0 ? Buffer.from(await this.read(length)) : Buffer.alloc(0);
    return {
      magic: h.readBigUInt64BE(0),
      option: h.readUInt32BE(8),
      type: h.readUInt32BE(12),
      data,
    };
  }

  /** Runs NBD_OPT_GO for `name` and reads its replies up to the final one. */
  async go(name: string, structured: boolean): Promise<{ size: bigint; flags: number }> {
    if (structured) {
      this.sendOption(8);
      const r = await this.optionReply();
      if (r.type !== 1) throw new Error(`STRUCTURED_REPLY answered ${r.type}`);
    }
    this.sendOption(7, goData(name, [0, 3]));
    let size = -1n;
    let flags = 0;
    for (;;) {
      const r = await this.optionReply();
      if (r.type === 3 && r.data.readUInt16BE(0) === 0) {
        size = r.data.readBigUInt64BE(2);
        flags = r.data.readUInt16BE(10);
      } else if (r.type === 1) {
        return { size, flags };
      } else if (r.type !== 3) {
        throw new Error(`GO answered ${r.type.toString(16)}: ${r.data.toString()}`);
      }
    }
  }

  sendRequest(
    type: number,
    cookie: bigint,
    offset: bigint | number,
    length: number,
    flags = 0,
    payload?: Uint8Array,
    magic = 0x25609513,
  ): void {
    const h = Buffer.alloc(28);
    h.writeUInt32BE(magic, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(cookie, 8);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length, 24);
    this.write(payload ? Buffer.concat([h, payload]) : h);
  }

  /** Reads one simple reply (with `dataLength` bytes of data when error is 0). */
  async simpleReply(
    dataLength = 0,
  ): Promise<{ magic: number; error: number; cookie: bigint; data: Buffer }> {
    const h = await this.read(16);
    const error = h.readUInt32BE(4);
    const data =
      error === 0 && dataLength > 0 ? Buffer.from(await this.read(dataLength)) : Buffer.alloc(0);
    return { magic: h.readUInt32BE(0), error, cookie: h.readBigUInt64BE(8), data };
  }

  /** Reads one structured reply chunk. */
  async chunk(): Promise<{
    magic: number;
    flags: number;
    type: number;
    cookie: bigint;
    payload: Buffer;
  }> {
    const h = await this.read(20);
    const length = h.readUInt32BE(16);
    const payload = length > 0 ? Buffer.from(await this.read(length)) : Buffer.alloc(0);
    return {
      magic: h.readUInt32BE(0),
      flags: h.readUInt16BE(4),
      type: h.readUInt16BE(6),
      cookie: h.readBigUInt64BE(8),
      payload,
    };
  }
}

/** NBD_OPT_INFO / NBD_OPT_GO data for `name` and the listed information requests. */
export function goData(name: string, infos: readonly number[]): Buffer {
  const n = Buffer.from(name, 'utf8');
  const out = Buffer.alloc(4 + n.length + 2 + 2 * infos.length);
  out.writeUInt32BE(n.length, 0);
  n.copy(out, 4);
  out.writeUInt16BE(infos.length, 4 + n.length);
  infos.forEach((info, i) => {
    out.writeUInt16BE(info, 6 + n.length + 2 * i);
  });
  return out;
}

/** Starts an NbdServer on a Unix socket in a temp dir; closed when the test ends. */
export async function startServer(
  t: TestContext,
  options: NbdServerOptions,
): Promise<{ server: NbdServer; socket: string; uri: string }> {
  const dir = await tempDir(t);
  const socket = join(dir, 'nbd.sock');
  const server = new NbdServer(options);
  const where = await server.listen({ socket });
  t.after(() => server.close().catch(() => {}));
  return { server, socket, uri: where.uri };
}
