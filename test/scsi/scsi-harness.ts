import {
  type BlockDevice,
  type DiskErrorCode,
  DiskIoError,
  type WriteOptions,
  type WriteZeroesOptions,
} from '../../src/block/block-device.ts';
import { MemoryDisk } from '../../src/block/memory-disk.ts';
import type { DataDirection, ScsiCommand, ScsiResult } from '../../src/scsi/target/command.ts';

/**
 * Test support for the SCSI tests: hex helpers, a command runner with guard
 * bytes around every buffer, sense decoding done by hand (independent of the
 * parser under test), and a BlockDevice double that records calls and fails
 * with DiskIoError where told.
 */

export function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

export function fromHex(text: string): Uint8Array {
  const clean = text.replace(/[\s:_]/g, '');
  if (clean.length % 2 !== 0 || /[^0-9a-fA-F]/.test(clean)) throw new Error(`bad hex: ${text}`);
  return Uint8Array.from(Buffer.from(clean, 'hex'));
}

export interface Executor {
  execute(cmd: ScsiCommand): Promise<ScsiResult>;
}

export interface RunOptions {
  readonly direction?: DataDirection;
  /** Total buffer length (default 0 for 'none'/'out' without data, 512 for 'in'). */
  readonly length?: number;
  /** Data-out content (hex or bytes); sets direction 'out' and the length. */
  readonly out?: string | Uint8Array;
  /** Split the buffer into views of these sizes (the rest in one last view). */
  readonly split?: readonly number[];
}

export interface RunOutcome {
  readonly result: ScsiResult;
  /** The buffer contents after the command (all views concatenated). */
  readonly data: Uint8Array;
  readonly views: readonly Uint8Array[];
}

export const GUARD = 16;
const GUARD_BYTE = 0xa5;

/**
 * Views over one backing array with GUARD bytes of 0xa5 before, between and
 * after them; `guardsIntact` says whether anything wrote outside the views.
 */
export function guardedViews(
  sizes: readonly number[],
  fill = 0,
): {
  views: Uint8Array[];
  guardsIntact: () => boolean;
} {
  let total = GUARD;
  for (const s of sizes) total += s + GUARD;
  const backing = new Uint8Array(total).fill(GUARD_BYTE);
  const views: Uint8Array[] = [];
  const guards: Array<[number, number]> = [[0, GUARD]];
  let at = GUARD;
  for (const s of sizes) {
    const v = backing.subarray(at, at + s);
    v.fill(fill);
    views.push(v);
    at += s;
    guards.push([at, at + GUARD]);
    at += GUARD;
  }
  return {
    views,
    guardsIntact: () =>
      guards.every(([a, b]) => backing.subarray(a, b).every((x) => x === GUARD_BYTE)),
  };
}

function splitSizes(total: number, split: readonly number[] | undefined): number[] {
  if (!split) return [total];
  const sizes: number[] = [];
  let left = total;
  for (const s of split) {
    const n = Math.min(s, left);
    sizes.push(n);
    left -= n;
  }
  if (left > 0) sizes.push(left);
  return sizes;
}

export async function run(
  target: Executor,
  cdbHex: string,
  options: RunOptions = {},
): Promise<RunOutcome> {
  const out = typeof options.out === 'string' ? fromHex(options.out) : options.out;
  const direction = options.direction ?? (out ? 'out' : options.length ? 'in' : 'none');
  const length = options.length ?? out?.length ?? 0;
  const { views, guardsIntact } = guardedViews(splitSizes(length, options.split));
  if (out) {
    let at = 0;
    for (const v of views) {
      v.set(out.subarray(at, at + v.length));
      at += v.length;
    }
  }
  const result = await target.execute({ cdb: fromHex(cdbHex), direction, buffers: views });
  if (!guardsIntact()) throw new Error(`command ${cdbHex} wrote outside its buffers`);
  const data = new Uint8Array(length);
  let at = 0;
  for (const v of views) {
    data.set(v, at);
    at += v.length;
  }
  return { result, data, views };
}

/** Sense key / ASC / ASCQ read straight from fixed-format bytes. */
export function senseTriple(result: ScsiResult): [number, number, number] | undefined {
  const s = result.sense;
  if (!s) return undefined;
  return [(s[2] ?? 0) & 0x0f, s[12] ?? 0, s[13] ?? 0];
}

export interface Fault {
  readonly op: 'read' | 'write' | 'flush' | 'discard' | 'writeZeroes';
  /** Fails a request whose byte range contains this offset (ignored for flush). */
  readonly offset?: number;
  readonly code: DiskErrorCode;
}

export interface Call {
  readonly op: string;
  readonly offset?: number;
  readonly length?: number;
  readonly fua?: boolean;
  readonly mayUnmap?: boolean;
  /** The views handed to readv/writev. */
  readonly views?: readonly Uint8Array[];
}

/** A MemoryDisk wrapper that records every call and injects faults. */
export class RecordingDisk implements BlockDevice {
  readonly inner: MemoryDisk;
  readonly calls: Call[] = [];
  faults: Fault[] = [];
  /** When set, reported instead of the real size (capacity-change tests). */
  sizeOverride: number | undefined;
  canDiscard = true;
  canWriteZeroes = true;
  canFlush = true;
  /** When set, every I/O waits for this promise first (in-flight tests). */
  gate: Promise<void> | undefined;

  constructor(
    size: number,
    options: {
      readOnly?: boolean;
      identifier?: Uint8Array;
      logicalSectorSize?: number;
      physicalSectorSize?: number;
      contents?: Uint8Array;
    } = {},
  ) {
    this.inner = new MemoryDisk(size, options);
  }

  get format(): string {
    return 'recording';
  }
  get size(): number {
    return this.sizeOverride ?? this.inner.size;
  }
  get logicalSectorSize(): number {
    return this.inner.logicalSectorSize;
  }
  get physicalSectorSize(): number {
    return this.inner.physicalSectorSize;
  }
  get readOnly(): boolean {
    return this.inner.readOnly;
  }
  get identifier(): Uint8Array {
    return this.inner.identifier;
  }
  get data(): Uint8Array {
    return this.inner.data;
  }

  private async enter(op: Fault['op'], offset?: number, length?: number): Promise<void> {
    if (this.gate) await this.gate;
    for (const f of this.faults) {
      if (f.op !== op) continue;
      const hit =
        f.offset === undefined ||
        (offset !== undefined &&
          length !== undefined &&
          f.offset >= offset &&
          f.offset < offset + length);
      if (hit) throw new DiskIoError(f.code, `injected ${f.code} on ${op}`, f.offset ?? offset);
    }
  }

  async read(offset: number, target: Uint8Array): Promise<void> {
    this.calls.push({ op: 'read', offset, length: target.length });
    await this.enter('read', offset, target.length);
    await this.inner.read(offset, target);
  }
  async readv(offset: number, targets: readonly Uint8Array[]): Promise<void> {
    const length = targets.reduce((n, t) => n + t.length, 0);
    this.calls.push({ op: 'readv', offset, length, views: targets });
    await this.enter('read', offset, length);
    await this.inner.readv(offset, targets);
  }
  async write(offset: number, source: Uint8Array, options?: WriteOptions): Promise<void> {
    this.calls.push({ op: 'write', offset, length: source.length, fua: options?.fua ?? false });
    await this.enter('write', offset, source.length);
    await this.inner.write(offset, source, options);
  }
  async writev(
    offset: number,
    sources: readonly Uint8Array[],
    options?: WriteOptions,
  ): Promise<void> {
    const length = sources.reduce((n, t) => n + t.length, 0);
    this.calls.push({ op: 'writev', offset, length, fua: options?.fua ?? false, views: sources });
    await this.enter('write', offset, length);
    await this.inner.writev(offset, sources, options);
  }
  async flush(): Promise<void> {
    this.calls.push({ op: 'flush' });
    await this.enter('flush');
    await this.inner.flush();
  }
  async discard(offset: number, length: number): Promise<void> {
    this.calls.push({ op: 'discard', offset, length });
    await this.enter('discard', offset, length);
    await this.inner.discard(offset, length);
  }
  async writeZeroes(offset: number, length: number, options?: WriteZeroesOptions): Promise<void> {
    this.calls.push({
      op: 'writeZeroes',
      offset,
      length,
      fua: options?.fua ?? false,
      mayUnmap: options?.mayUnmap ?? false,
    });
    await this.enter('writeZeroes', offset, length);
    await this.inner.writeZeroes(offset, length, options);
  }
  async close(): Promise<void> {
    await this.inner.close();
  }
}

/** Deterministic non-zero contents: byte i of the disk is (i * 7 + 3) & 0xff, never all zero per block. */
export function patterned(size: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[i] = (i * 7 + 3) & 0xff;
  return out;
}
