/**
 * The VM configuration file (YAML), validated with zod. Errors name the
 * field path and what was wrong, e.g. "devices.0.type: expected 'echo'".
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import {
  ALL_VERSIONS,
  FREEBSD_VERSION_ORDER,
  LINUX_VERSION_ORDER,
  parseVersion,
  versionString,
} from '../vmbus/protocol.ts';
import { deviceKinds } from './device-kinds.ts';
import { defaultIcEntry } from './devices/ic.ts';
import { defaultNicEntry } from './devices/nic-config.ts';
import { defaultScsiDevice } from './devices/scsi.ts';
import { parseDuration, parseSize, sizeSchema, UnitError } from './units.ts';

export { parseDuration, parseSize };

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

export { UnitError };

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

/**
 * One `devices:` entry: validated by the schema of the kind its `type`
 * names, so each kind's problems are reported with that kind's fields.
 */
const deviceSchema = z
  .object({ type: z.string() })
  .passthrough()
  .transform((entry, ctx) => {
    const kind = deviceKinds.find((k) => k.type === entry.type);
    if (!kind) {
      ctx.addIssue({
        code: 'custom',
        path: ['type'],
        message: `unknown device type ${JSON.stringify(entry.type)}; known: ${deviceKinds.map((k) => k.type).join(', ')}`,
      });
      return z.NEVER;
    }
    const result = kind.schema.safeParse(entry);
    if (!result.success) {
      for (const issue of result.error.issues)
        ctx.addIssue({ ...issue, code: 'custom', path: issue.path } as never);
      return z.NEVER;
    }
    return result.data as { type: string } & Record<string, unknown>;
  });

export const vmConfigSchema = z
  .object({
    name: z.string().min(1).max(64).default('hvkit-vm'),
    /** Where relative paths in the config point from; loadConfig sets it to the file's directory. */
    base_dir: z.string().min(1).optional(),
    memory: sizeSchema.default(64 * 1024 * 1024),
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
      .default([
        { type: 'echo', rate: 200, payload: 256, ring: 64 * 1024 },
        defaultScsiDevice(),
        defaultNicEntry(),
        defaultIcEntry(),
      ]),
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
  const config = validateConfig(raw, path);
  return { ...config, base_dir: resolve(dirname(path), config.base_dir ?? '.') };
}

/** The built-in VM `hvkit run` boots without a config file. */
export function defaultConfig(): VmConfig {
  return validateConfig({}, 'built-in default');
}
