/**
 * Loads the oracle copied into test/fixtures/oracle (facts measured by a C
 * compiler from the Linux sources) and every module that declares wire
 * structs, so tests can compare the two.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

export interface OracleField {
  name: string;
  offset: number;
  size?: number;
  bitfield?: boolean;
  bit_offset?: number;
  bit_width?: number;
  flexible_array?: boolean;
  elem_size?: number;
}
export interface OracleStruct {
  kind: 'struct' | 'union';
  sizeof: number;
  fields: OracleField[];
}
export interface OracleSection {
  structs?: Record<string, OracleStruct>;
  constants?: Record<string, number | string>;
  [key: string]: unknown;
}

const root = join(import.meta.dirname, '..', '..');
export const oracleDir = join(root, 'test', 'fixtures', 'oracle');

export const oracle = JSON.parse(
  readFileSync(join(oracleDir, 'linux-hv-facts.json'), 'utf8'),
) as Record<string, OracleSection>;

export function oracleSection(name: string): OracleSection {
  const section = oracle[name];
  if (!section) throw new Error(`oracle has no section ${name}`);
  return section;
}

/** Every struct the oracle knows, by name, with its section. */
export function oracleStructs(): Map<string, { section: string; struct: OracleStruct }> {
  const out = new Map<string, { section: string; struct: OracleStruct }>();
  for (const [section, body] of Object.entries(oracle)) {
    for (const [name, struct] of Object.entries(body.structs ?? {})) {
      out.set(name, { section, struct });
    }
  }
  return out;
}

/** A constant from the oracle as a bigint (hex strings allowed). */
export function oracleConstant(section: string, name: string): bigint {
  const value = oracleSection(section).constants?.[name];
  if (value === undefined) throw new Error(`oracle ${section} has no constant ${name}`);
  return BigInt(value);
}

function walk(dir: string, out: string[]): string[] {
  for (const entry of readdirSync(dir)) {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) walk(path, out);
    else if (entry === 'protocol.ts' || entry.endsWith('-protocol.ts')) out.push(path);
  }
  return out;
}

/** Imports every src/**\/protocol.ts and *-protocol.ts so that all wire declarations are registered. */
export async function loadAllProtocols(): Promise<string[]> {
  const files = walk(join(root, 'src'), []).sort();
  for (const file of files) await import(pathToFileURL(file).href);
  return files;
}
