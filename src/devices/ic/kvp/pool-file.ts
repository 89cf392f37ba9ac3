/**
 * The guest's KVP pools on disk, in the record format of Linux's
 * hv_kvp_daemon (tools/hv/hv_kvp_daemon.c): one file per pool named
 * `.kvp_pool_N`, a plain array of records, each a 512-byte key and a
 * 2048-byte value, both UTF-8 C strings (NUL-terminated, zero-filled here).
 * Like the daemon, every operation reads the file first (another program
 * may have changed it) and every change rewrites it; the rewrite goes to a
 * temporary file that replaces the pool atomically.
 */
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import {
  HV_KVP_EXCHANGE_MAX_KEY_SIZE,
  HV_KVP_EXCHANGE_MAX_VALUE_SIZE,
  KVP_POOL_COUNT,
} from '../protocol.ts';

export const KVP_RECORD_BYTES = HV_KVP_EXCHANGE_MAX_KEY_SIZE + HV_KVP_EXCHANGE_MAX_VALUE_SIZE;

export interface KvpRecord {
  readonly key: string;
  readonly value: string;
}

export class KvpPoolError extends Error {
  override readonly name = 'KvpPoolError';
}

export function poolFileName(pool: number): string {
  return `.kvp_pool_${pool}`;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8');

function cString(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return decoder.decode(end < 0 ? bytes : bytes.subarray(0, end));
}

/** Parses a pool file; a trailing partial record is ignored (as fread does) and counted. */
export function parsePoolFile(bytes: Uint8Array): { records: KvpRecord[]; trailingBytes: number } {
  const count = Math.floor(bytes.length / KVP_RECORD_BYTES);
  const records: KvpRecord[] = [];
  for (let i = 0; i < count; i++) {
    const at = i * KVP_RECORD_BYTES;
    records.push({
      key: cString(bytes.subarray(at, at + HV_KVP_EXCHANGE_MAX_KEY_SIZE)),
      value: cString(bytes.subarray(at + HV_KVP_EXCHANGE_MAX_KEY_SIZE, at + KVP_RECORD_BYTES)),
    });
  }
  return { records, trailingBytes: bytes.length - count * KVP_RECORD_BYTES };
}

/** Why a key or value cannot be stored (its UTF-8 form and NUL must fit the field), or undefined. */
export function recordProblem(key: string, value: string): string | undefined {
  const k = encoder.encode(key).length;
  const v = encoder.encode(value).length;
  if (k + 1 > HV_KVP_EXCHANGE_MAX_KEY_SIZE) {
    return `key of ${k} UTF-8 bytes does not fit (at most ${HV_KVP_EXCHANGE_MAX_KEY_SIZE - 1})`;
  }
  if (v + 1 > HV_KVP_EXCHANGE_MAX_VALUE_SIZE) {
    return `value of ${v} UTF-8 bytes does not fit (at most ${HV_KVP_EXCHANGE_MAX_VALUE_SIZE - 1})`;
  }
  if (key.includes('\0') || value.includes('\0')) return 'keys and values cannot contain NUL';
  return undefined;
}

export function encodePoolFile(records: readonly KvpRecord[]): Uint8Array {
  const out = new Uint8Array(records.length * KVP_RECORD_BYTES);
  records.forEach((record, i) => {
    const problem = recordProblem(record.key, record.value);
    if (problem) throw new KvpPoolError(`record ${i}: ${problem}`);
    const at = i * KVP_RECORD_BYTES;
    out.set(encoder.encode(record.key), at);
    out.set(encoder.encode(record.value), at + HV_KVP_EXCHANGE_MAX_KEY_SIZE);
  });
  return out;
}

/** The five pools of one guest, in one directory. */
export class KvpPools {
  constructor(readonly directory: string) {
    mkdirSync(directory, { recursive: true, mode: 0o755 });
    for (let pool = 0; pool < KVP_POOL_COUNT; pool++) {
      const path = this.path(pool);
      if (!existsSync(path)) closeSync(openSync(path, 'a', 0o644));
    }
  }

  path(pool: number): string {
    if (!Number.isInteger(pool) || pool < 0 || pool >= KVP_POOL_COUNT) {
      throw new KvpPoolError(`pool ${pool} does not exist (0..${KVP_POOL_COUNT - 1})`);
    }
    return join(this.directory, poolFileName(pool));
  }

  read(pool: number): KvpRecord[] {
    return parsePoolFile(readFileSync(this.path(pool))).records;
  }

  write(pool: number, records: readonly KvpRecord[]): void {
    const path = this.path(pool);
    const bytes = encodePoolFile(records);
    const temporary = `${path}.${process.pid}.tmp`;
    const fd = openSync(temporary, 'w', 0o644);
    try {
      let done = 0;
      while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, path);
  }

  get(pool: number, key: string): string | undefined {
    return this.read(pool).find((r) => r.key === key)?.value;
  }

  /** Adds or replaces a record; returns why it cannot be stored, or undefined. */
  set(pool: number, key: string, value: string): string | undefined {
    const problem = recordProblem(key, value);
    if (problem) return problem;
    const records = this.read(pool);
    const i = records.findIndex((r) => r.key === key);
    if (i >= 0) records[i] = { key, value };
    else records.push({ key, value });
    this.write(pool, records);
    return undefined;
  }

  /** Removes a record; false when there was none. */
  delete(pool: number, key: string): boolean {
    const records = this.read(pool);
    const i = records.findIndex((r) => r.key === key);
    if (i < 0) return false;
    records.splice(i, 1);
    this.write(pool, records);
    return true;
  }

  /** The record at `index` in file order, as ENUMERATE walks them. */
  at(pool: number, index: number): KvpRecord | undefined {
    return this.read(pool)[index];
  }

  /** Makes sure every pool file is on disk (at shutdown). */
  flush(): number {
    let flushed = 0;
    for (let pool = 0; pool < KVP_POOL_COUNT; pool++) {
      const fd = openSync(this.path(pool), 'r');
      try {
        fsyncSync(fd);
        flushed++;
      } finally {
        closeSync(fd);
      }
    }
    return flushed;
  }
}
