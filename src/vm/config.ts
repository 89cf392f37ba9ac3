/**
 * The VM configuration file (YAML), validated with zod. Errors name the
 * field path and what was wrong, e.g. "devices.0.type: expected 'echo'".
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import {
  ALL_VERSIONS,
  FREEBSD_VERSION_ORDER,
  LINUX_VERSION_ORDER,
  parseVersion,
  versionString,
} from '../vmbus/protocol.ts';

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
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
      throw new ConfigError(`size ${text} is not a whole number of bytes`);
    return text;
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) {
    throw new ConfigError(
      `size ${JSON.stringify(text)}: expected a number with an optional unit (K, M, G, T)`,
    );
  }
  const bytes = Math.round(Number(m[1]) * unit);
  if (!Number.isSafeInteger(bytes))
    throw new ConfigError(`size ${JSON.stringify(text)} is too large`);
  return bytes;
}

/** Parses "5s", "500ms", "2m", "1h" or a number of seconds into milliseconds. */
export function parseDuration(text: string | number): number {
  if (typeof text === 'number') return text * 1000;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(text);
  if (!m) throw new ConfigError(`duration ${JSON.stringify(text)}: expected e.g. 500ms, 5s, 2m`);
  const factor = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? 's'] ?? 1000;
  return Math.round(Number(m[1]) * factor);
}

const size = z.union([z.string(), z.number()]).transform((value, ctx) => {
  try {
    return parseSize(value);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: (error as Error).message });
    return z.NEVER;
  }
});

const version = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const parsed = parseVersion(String(value));
  if (parsed === undefined) {
    ctx.addIssue({
      code: 'custom',
      message: `unknown VMBus version ${JSON.stringify(value)}; known: ${ALL_VERSIONS.map(versionString).join(', ')}`,
    });
    return z.NEVER;
  }
  return parsed;
});

const echoDevice = z
  .object({
    type: z.literal('echo'),
    /** Echo requests per second the guest sends (0 = none). */
    rate: z.number().int().min(0).max(1_000_000).default(200),
    /** Payload bytes per request. */
    payload: z
      .number()
      .int()
      .min(0)
      .max(16 * 1024)
      .default(256),
    ring: size.default(64 * 1024),
  })
  .strict();

export const deviceSchema = z.discriminatedUnion('type', [echoDevice]);

export const vmConfigSchema = z
  .object({
    name: z.string().min(1).max(64).default('hvkit-vm'),
    memory: size.default(64 * 1024 * 1024),
    vcpus: z.number().int().min(1).max(16).default(2),
    vmbus: z
      .object({
        /** Versions the host accepts; default all. */
        host_versions: z.array(version).min(1).optional(),
        /** Highest version the host accepts (shorthand for host_versions). */
        host_max_version: version.optional(),
        /** The guest's order: 'linux', 'freebsd', or a list newest first. */
        guest_versions: z
          .union([z.enum(['linux', 'freebsd']), z.array(version).min(1)])
          .default('linux'),
        dedicated_interrupts: z.boolean().default(true),
      })
      .strict()
      .default({ guest_versions: 'linux', dedicated_interrupts: true }),
    devices: z
      .array(deviceSchema)
      .default([{ type: 'echo', rate: 200, payload: 256, ring: 64 * 1024 }]),
  })
  .strict();

export type VmConfig = z.output<typeof vmConfigSchema>;
export type DeviceConfig = VmConfig['devices'][number];

/** The host's accepted versions and the guest's order, resolved from the config. */
export function versionPlan(config: VmConfig): { host: number[]; guest: number[] } {
  let host = config.vmbus.host_versions ?? [...ALL_VERSIONS];
  if (config.vmbus.host_max_version !== undefined) {
    const max = config.vmbus.host_max_version;
    host = host.filter((v) => v <= max);
  }
  const g = config.vmbus.guest_versions;
  const guest =
    g === 'linux' ? [...LINUX_VERSION_ORDER] : g === 'freebsd' ? [...FREEBSD_VERSION_ORDER] : g;
  return { host, guest };
}

type Issue = z.core.$ZodIssue;

/**
 * Flattens zod issues into "path: message" lines. For a value that matched
 * no branch of a union, the branch that got furthest (whose problems are not
 * just "wrong type") explains the error.
 */
function issueLines(issues: readonly Issue[], prefix: readonly PropertyKey[]): string[] {
  const lines: string[] = [];
  for (const issue of issues) {
    const path = [...prefix, ...issue.path];
    if (issue.code === 'invalid_union' && issue.errors.length > 0) {
      const branches = issue.errors;
      const best =
        branches.find((b) =>
          b.some((i) => i.code !== 'invalid_type' && i.code !== 'invalid_value'),
        ) ?? branches[0]!;
      lines.push(...issueLines(best, path));
      continue;
    }
    const where = path.length > 0 ? path.map(String).join('.') : '(top level)';
    lines.push(`  ${where}: ${issue.message}`);
  }
  return lines;
}

function describeIssues(error: z.ZodError, source: string): string {
  return `${source}: invalid configuration\n${issueLines(error.issues, []).join('\n')}`;
}

/** Validates an already-parsed config object. */
export function validateConfig(raw: unknown, source = 'config'): VmConfig {
  const result = vmConfigSchema.safeParse(raw ?? {});
  if (!result.success) throw new ConfigError(describeIssues(result.error, source));
  const config = result.data;
  if (config.memory < 4 * 1024 * 1024 || config.memory % 4096 !== 0) {
    throw new ConfigError(
      `${source}: memory must be at least 4 MiB and a multiple of 4 KiB, got ${config.memory}`,
    );
  }
  if (versionPlan(config).host.length === 0) {
    throw new ConfigError(`${source}: vmbus host versions leave nothing the host accepts`);
  }
  return config;
}

/** Reads and validates a YAML config file. */
export function loadConfig(path: string): VmConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError(
      `cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
    );
  }
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (error) {
    throw new ConfigError(`${path}: not valid YAML: ${(error as Error).message}`);
  }
  return validateConfig(raw, path);
}

/** The built-in VM `hvkit run` boots without a config file. */
export function defaultConfig(): VmConfig {
  return validateConfig({}, 'built-in default');
}
