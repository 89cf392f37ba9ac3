/** Sizes and durations as people write them in configs and on the command line. */
import { z } from 'zod';

export class UnitError extends Error {
  override readonly name = 'UnitError';
}

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tib: 1024 ** 4,
};

/** Parses "64M", "1.5G", "4096" (bytes, binary units) into bytes. */
export function parseSize(text: string | number): number {
  if (typeof text === 'number') {
    if (!Number.isSafeInteger(text) || text < 0)
      throw new UnitError(`size ${text} is not a whole number of bytes`);
    return text;
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) {
    throw new UnitError(
      `size ${JSON.stringify(text)}: expected a number with an optional unit (K, M, G, T)`,
    );
  }
  const bytes = Math.round(Number(m[1]) * unit);
  if (!Number.isSafeInteger(bytes))
    throw new UnitError(`size ${JSON.stringify(text)} is too large`);
  return bytes;
}

/** Parses "5s", "500ms", "2m", "1h" or a number of seconds into milliseconds. */
export function parseDuration(text: string | number): number {
  if (typeof text === 'number') return text * 1000;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(text);
  if (!m) throw new UnitError(`duration ${JSON.stringify(text)}: expected e.g. 500ms, 5s, 2m`);
  const factor = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? 's'] ?? 1000;
  return Math.round(Number(m[1]) * factor);
}

/** A zod schema for a size field (number of bytes or text with a unit). */
export const sizeSchema = z.union([z.string(), z.number()]).transform((value, ctx) => {
  try {
    return parseSize(value);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: (error as Error).message });
    return z.NEVER;
  }
});

/** A zod schema for a duration field, in milliseconds. */
export const durationSchema = z.union([z.string(), z.number()]).transform((value, ctx) => {
  try {
    return parseDuration(value);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: (error as Error).message });
    return z.NEVER;
  }
});

/**
 * Bytes as qemu-img prints sizes: three significant digits and a binary
 * unit ("512 B", "64 MiB", "1.5 GiB"). The one formatter hvkit uses.
 */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  const text = unit === 0 ? String(value) : String(Number(value.toPrecision(3)));
  return `${text} ${units[unit]}`;
}
