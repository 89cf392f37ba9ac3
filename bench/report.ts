import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';

/**
 * One measured figure beside the baseline measured in the same run. Speed
 * claims are ratios to a baseline on the same noisy machine, never absolute
 * numbers on their own.
 */
export interface Figure {
  readonly name: string;
  readonly unit: string;
  /** Median of the repetitions. */
  readonly value: number;
  readonly baselineName: string;
  readonly baseline: number;
  /** value / baseline (higher is better when the unit is a rate). */
  readonly ratio: number;
  readonly samples?: readonly number[];
  readonly baselineSamples?: readonly number[];
  readonly target?: string;
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function figure(
  name: string,
  unit: string,
  samples: readonly number[],
  baselineName: string,
  baselineSamples: readonly number[],
  target?: string,
): Figure {
  const value = median(samples);
  const baseline = median(baselineSamples);
  return {
    name,
    unit,
    value,
    baselineName,
    baseline,
    ratio: baseline === 0 ? Number.NaN : value / baseline,
    samples,
    baselineSamples,
    ...(target ? { target } : {}),
  };
}

function formatNumber(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  if (Math.abs(n) >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (Math.abs(n) >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return n.toFixed(2);
}

/** Prints the figures as a table and writes them to bench/results/<suite>-<time>.json. */
export function report(
  suite: string,
  figures: readonly Figure[],
  notes: Record<string, unknown> = {},
): string {
  console.log(`\n${suite}: median of repetitions, beside a baseline from the same run`);
  for (const f of figures) {
    console.log(
      `  ${f.name.padEnd(44)} ${formatNumber(f.value).padStart(9)} ${f.unit.padEnd(8)} | ${f.baselineName.padEnd(34)} ${formatNumber(f.baseline).padStart(9)} | ratio ${f.ratio.toFixed(3)}${f.target ? `  (target ${f.target})` : ''}`,
    );
  }
  const dir = join(import.meta.dirname, 'results');
  mkdirSync(dir, { recursive: true });
  const stamp = new Date().toISOString().replaceAll(':', '-');
  const file = join(dir, `${suite}-${stamp}.json`);
  writeFileSync(
    file,
    `${JSON.stringify(
      {
        suite,
        date: new Date().toISOString(),
        node: process.version,
        cpus: cpus().length,
        cpuModel: cpus()[0]?.model,
        figures,
        notes,
      },
      null,
      2,
    )}\n`,
  );
  console.log(`  written to ${file}`);
  return file;
}
