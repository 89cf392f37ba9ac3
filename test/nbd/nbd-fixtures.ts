import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { type BlockDevice, DiskIoError } from '../../src/block/block-device.ts';
import { MemoryDisk } from '../../src/block/memory-disk.ts';
import { NbdServer, type NbdServerOptions } from '../../src/nbd/server/server.ts';
import { tempDir } from '../real-tools.ts';

/** What the NBD tests serve: test data, in-memory disks, and an in-process server. */

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
