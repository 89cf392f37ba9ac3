/**
 * The integration services as a VM device kind: one `type: ic` entry turns
 * on the services it lists. The host offers a device per service and
 * answers the control commands (shutdown, kvp, copy-file, backup,
 * heartbeat); the guest binds a driver per service.
 */
import { Buffer } from 'node:buffer';
import { join, posix } from 'node:path';
import { z } from 'zod';
import { FcopyService } from '../../devices/ic/fcopy/vsc.ts';
import { FcopyVsp } from '../../devices/ic/fcopy/vsp.ts';
import { HeartbeatService } from '../../devices/ic/heartbeat/vsc.ts';
import { HeartbeatVsp } from '../../devices/ic/heartbeat/vsp.ts';
import { KvpPools } from '../../devices/ic/kvp/pool-file.ts';
import { KvpService } from '../../devices/ic/kvp/vsc.ts';
import { type KvpValue, KvpVsp } from '../../devices/ic/kvp/vsp.ts';
import { DATA_FRAGMENT, HOST_IC_VERSIONS, parseVersionText } from '../../devices/ic/protocol.ts';
import { ShutdownService } from '../../devices/ic/shutdown/vsc.ts';
import { ShutdownVsp } from '../../devices/ic/shutdown/vsp.ts';
import { GuestClock } from '../../devices/ic/timesync/clock.ts';
import { TimesyncService } from '../../devices/ic/timesync/vsc.ts';
import { TimesyncVsp } from '../../devices/ic/timesync/vsp.ts';
import { IcDriver } from '../../devices/ic/vsc.ts';
import type { IcVsp } from '../../devices/ic/vsp.ts';
import { VssService } from '../../devices/ic/vss/vsc.ts';
import { VssVsp } from '../../devices/ic/vss/vsp.ts';
import { controlDirectory } from '../control-path.ts';
import type { CommandHandler, DeviceKind } from '../device-kind.ts';
import { durationSchema, parseDuration } from '../units.ts';

export const IC_SERVICES = ['heartbeat', 'shutdown', 'timesync', 'kvp', 'fcopy', 'vss'] as const;
export type IcServiceName = (typeof IC_SERVICES)[number];

/** "1.5s" or "-250ms": a duration that may be negative, in ms. */
const signedDuration = z.union([z.string(), z.number()]).transform((value, ctx) => {
  try {
    if (typeof value === 'string' && value.trim().startsWith('-')) {
      return -parseDuration(value.trim().slice(1));
    }
    return typeof value === 'number' ? value * 1000 : parseDuration(value);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: (error as Error).message });
    return z.NEVER;
  }
});

const atLeast = (ms: number) => (value: number) => value >= ms;

const versionList = z
  .array(
    z.union([z.string(), z.number()]).transform((value, ctx) => {
      const parsed = parseVersionText(String(value));
      if (parsed === undefined) {
        ctx.addIssue({
          code: 'custom',
          message: `${JSON.stringify(value)} is not a version like "3.0"`,
        });
        return z.NEVER;
      }
      return parsed;
    }),
  )
  .min(1)
  .max(100);

const hookCommand = z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]);

export const icSchema = z
  .object({
    type: z.literal('ic'),
    services: z
      .array(z.enum(IC_SERVICES))
      .min(1)
      .default([...IC_SERVICES]),
    heartbeat_interval: durationSchema
      .refine(atLeast(10), 'heartbeat_interval must be at least 10ms')
      .default(2000),
    shutdown: z
      .object({ refuse: z.boolean().default(false) })
      .strict()
      .prefault({}),
    timesync: z
      .object({
        /** How far the guest's clock is off (ahead if positive); what time sync measures. */
        guest_clock_offset: signedDuration.default(0),
        interval: durationSchema
          .refine(atLeast(10), 'interval must be at least 10ms')
          .default(5000),
        /** Step the guest's clock on SYNC, as Linux does (default: only measure). */
        adjust: z.boolean().default(false),
      })
      .strict()
      .prefault({}),
    kvp: z
      .object({
        /** Where the guest keeps .kvp_pool_0..4 (default: <run dir>/<vm name>/kvp). */
        pool_dir: z.string().min(1).optional(),
        /** How often the host re-reads the guest's auto pool (0: only at boot). */
        refresh: durationSchema.default(10_000),
      })
      .strict()
      .prefault({}),
    fcopy: z
      .object({
        /** The directory that stands for the guest's / (default: <run dir>/<vm name>/guest-files). */
        root: z.string().min(1).optional(),
      })
      .strict()
      .prefault({}),
    vss: z
      .object({
        /** Commands run in order when the host freezes the guest (a string runs in /bin/sh). */
        freeze: z.array(hookCommand).default([]),
        thaw: z.array(hookCommand).default([]),
        /** Time limit of each hook. */
        timeout: durationSchema.refine(atLeast(1), 'timeout must be positive').default(10_000),
        /** How long the host waits for each answer of the guest. */
        host_timeout: durationSchema
          .refine(atLeast(1), 'host_timeout must be positive')
          .default(60_000),
      })
      .strict()
      .prefault({}),
    /** Versions the host offers instead of its defaults (e.g. an older host). */
    host_versions: z
      .object({
        framework: versionList.optional(),
        heartbeat: versionList.optional(),
        shutdown: versionList.optional(),
        timesync: versionList.optional(),
        kvp: versionList.optional(),
        fcopy: versionList.optional(),
        vss: versionList.optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

export type IcConfig = z.output<typeof icSchema>;

/** The entry the built-in VM uses: every service with its defaults. */
export function defaultIcEntry(): IcConfig {
  return icSchema.parse({ type: 'ic' });
}

export function defaultPoolDir(vmName: string): string {
  return join(controlDirectory(), vmName, 'kvp');
}

export function defaultGuestRoot(vmName: string): string {
  return join(controlDirectory(), vmName, 'guest-files');
}

// --- control command arguments -----------------------------------------------

function text(args: Record<string, unknown>, name: string): string {
  const value = args[name];
  if (typeof value !== 'string') throw new Error(`${name} must be a string`);
  return value;
}

function integer(args: Record<string, unknown>, name: string, min: number, max: number): number {
  const value = args[name];
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new Error(
      `${name} must be a whole number from ${min} to ${max}, got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

function flag(args: Record<string, unknown>, name: string): boolean {
  const value = args[name];
  if (value === undefined) return false;
  if (typeof value !== 'boolean') throw new Error(`${name} must be true or false`);
  return value;
}

function kvpValue(args: Record<string, unknown>): KvpValue {
  const type = args.type ?? 'string';
  const value = text(args, 'value');
  if (type === 'string') return value;
  if (type === 'u32' || type === 'u64') {
    if (!/^\d+$/.test(value))
      throw new Error(`a ${type} value must be a decimal number, got ${JSON.stringify(value)}`);
    const n = BigInt(value);
    if (type === 'u32') {
      if (n > 0xffffffffn) throw new Error(`${value} does not fit in 32 bits`);
      return { u32: Number(n) };
    }
    if (n > 0xffff_ffff_ffff_ffffn) throw new Error(`${value} does not fit in 64 bits`);
    return { u64: n };
  }
  throw new Error(`type must be string, u32 or u64, got ${JSON.stringify(type)}`);
}

// --- host --------------------------------------------------------------------

interface CopySession {
  readonly id: string;
  readonly dest: string;
  readonly size: number;
  received: number;
  timer: ReturnType<typeof setTimeout>;
}

/** An abandoned copy (the CLI went away) is cancelled after this long without a chunk. */
const COPY_IDLE_MS = 60_000;

function hostParts(config: IcConfig, log: (message: string) => void) {
  const on = new Set(config.services);
  const hv = config.host_versions ?? {};
  const framework = hv.framework ?? HOST_IC_VERSIONS.framework;
  const versions = (service: Exclude<keyof typeof HOST_IC_VERSIONS, 'framework'>) => ({
    frameworkVersions: framework,
    serviceVersions: hv[service] ?? HOST_IC_VERSIONS[service],
    log: (message: string) => log(`ic: ${message}`),
  });
  return {
    heartbeat: on.has('heartbeat')
      ? new HeartbeatVsp({ intervalMs: config.heartbeat_interval, ...versions('heartbeat') })
      : undefined,
    shutdown: on.has('shutdown') ? new ShutdownVsp(versions('shutdown')) : undefined,
    timesync: on.has('timesync')
      ? new TimesyncVsp({ intervalMs: config.timesync.interval, ...versions('timesync') })
      : undefined,
    kvp: on.has('kvp')
      ? new KvpVsp({ refreshMs: config.kvp.refresh, ...versions('kvp') })
      : undefined,
    fcopy: on.has('fcopy') ? new FcopyVsp(versions('fcopy')) : undefined,
    vss: on.has('vss') ? new VssVsp(versions('vss')) : undefined,
  };
}

function need<T>(vsp: T | undefined, service: IcServiceName): T {
  if (!vsp) throw new Error(`this VM's ic device does not include the ${service} service`);
  return vsp;
}

function hostSummary(parts: ReturnType<typeof hostParts>): string {
  const pieces: string[] = [];
  const { heartbeat, kvp, vss } = parts;
  if (heartbeat) {
    pieces.push(
      heartbeat.state === 'failed'
        ? `heartbeat unavailable (${heartbeat.error})`
        : `heartbeat ${heartbeat.health} (${heartbeat.answered}/${heartbeat.sent} answered, every ${heartbeat.intervalMs / 1000}s)`,
    );
  }
  if (kvp) {
    const a = kvp.auto;
    if (a.OSName !== undefined) {
      const ips = [a.NetworkAddressIPv4, a.NetworkAddressIPv6].filter((s) => s).join(';');
      pieces.push(
        `guest ${a.OSName}${a.OSMajorVersion ? ` ${a.OSMajorVersion}` : ''}, kernel ${a.OSBuildNumber}, ${a.ProcessorArchitecture}, ${a.FullyQualifiedDomainName}, IPs ${ips || 'none'}`,
      );
    } else {
      pieces.push(`kvp ${kvp.state}`);
    }
  }
  const negotiated = (Object.entries(parts) as [string, IcVsp | undefined][])
    .filter(([, v]) => v)
    .map(([name, v]) => {
      const d = v!.describe();
      return `${name} ${v!.state === 'ready' ? String(d.versions) : v!.state}`;
    });
  pieces.push(negotiated.join(', '));
  if (vss && (vss.backups || vss.failures)) pieces.push(`backup ${vss.lastResult}`);
  return `ic: ${pieces.join(' | ')}`;
}

// --- guest -------------------------------------------------------------------

function guestSummary(services: {
  timesync?: TimesyncService;
  kvp?: KvpService;
  fcopy?: FcopyService;
  vss?: VssService;
  heartbeat?: HeartbeatService;
}): string {
  const pieces: string[] = [];
  if (services.heartbeat) pieces.push(`heartbeats answered ${services.heartbeat.answered}`);
  const ts = services.timesync;
  if (ts) {
    const offset = ts.offsetNs();
    pieces.push(
      offset === undefined
        ? 'time offset not measured yet'
        : `time offset ${offset >= 0 ? '+' : ''}${(offset / 1e6).toFixed(3)} ms (${ts.samples} samples, ${ts.format === 'v4' ? '4.0' : 'pre-4.0'} format)`,
    );
  }
  if (services.kvp) pieces.push(`kvp pools in ${services.kvp.pools.directory}`);
  if (services.fcopy) {
    const s = services.fcopy.stats;
    pieces.push(`${s.completed} files copied in (${(s.bytes / 1024 / 1024).toFixed(1)} MiB)`);
  }
  if (services.vss) pieces.push(services.vss.frozen ? 'FROZEN' : 'not frozen');
  return `ic: ${pieces.join(' | ')}`;
}

export const icKind: DeviceKind<IcConfig> = {
  type: 'ic',
  schema: icSchema,

  async createHost(config, { log }) {
    const parts = hostParts(config, log);
    const devices = Object.values(parts).filter((v): v is NonNullable<typeof v> => v !== undefined);
    let copy: CopySession | undefined;
    const endCopy = (): void => {
      if (copy) clearTimeout(copy.timer);
      copy = undefined;
    };
    const touch = (session: CopySession): void => {
      clearTimeout(session.timer);
      session.timer = setTimeout(() => {
        if (copy !== session) return;
        log(
          `ic: copy to ${session.dest} abandoned (no data for ${COPY_IDLE_MS / 1000}s); cancelled`,
        );
        endCopy();
        void parts.fcopy?.cancel().catch(() => {});
      }, COPY_IDLE_MS);
      session.timer.unref();
    };
    const sessionOf = (args: Record<string, unknown>): CopySession => {
      const id = text(args, 'session');
      if (!copy || copy.id !== id)
        throw new Error(`no copy session ${id} (it finished, failed or timed out)`);
      return copy;
    };

    const commands: Record<string, CommandHandler> = {
      shutdown: async (args) => {
        const vsp = need(parts.shutdown, 'shutdown');
        const result = await vsp.shutdown({
          force: flag(args, 'force'),
          restart: flag(args, 'restart'),
          hibernate: flag(args, 'hibernate'),
          ...(typeof args.message === 'string' ? { message: args.message } : {}),
        });
        if (!result.accepted) {
          throw new Error(`the guest refused to shut down: it answered ${result.statusName}`);
        }
        return {
          ...result,
          action: flag(args, 'restart')
            ? 'restart'
            : flag(args, 'hibernate')
              ? 'hibernation'
              : 'shutdown',
        };
      },

      kvp: async (args) => {
        const vsp = need(parts.kvp, 'kvp');
        const op = text(args, 'op');
        const pool = integer(args, 'pool', 0, 4);
        switch (op) {
          case 'get': {
            const key = text(args, 'key');
            const value = await vsp.get(pool, key);
            if (value === undefined)
              throw new Error(`pool ${pool} has no key ${JSON.stringify(key)}`);
            return { key, value };
          }
          case 'set':
            await vsp.set(pool, text(args, 'key'), kvpValue(args));
            return { ok: true };
          case 'delete': {
            const key = text(args, 'key');
            if (!(await vsp.delete(pool, key))) {
              throw new Error(`pool ${pool} has no key ${JSON.stringify(key)}`);
            }
            return { ok: true };
          }
          case 'list':
            return { entries: await vsp.list(pool) };
          default:
            throw new Error(`kvp op must be get, set, delete or list, got ${JSON.stringify(op)}`);
        }
      },

      'copy-file': async (args) => {
        const vsp = need(parts.fcopy, 'fcopy');
        const op = text(args, 'op');
        switch (op) {
          case 'start': {
            const dest = text(args, 'dest');
            const size = integer(args, 'size', 0, Number.MAX_SAFE_INTEGER);
            if (!dest.startsWith('/') || dest.endsWith('/')) {
              throw new Error(
                `the guest destination must be an absolute file path, got ${JSON.stringify(dest)}`,
              );
            }
            if (copy) throw new Error(`a copy to ${copy.dest} is in progress`);
            await vsp.start({
              directory: posix.dirname(dest),
              fileName: posix.basename(dest),
              size,
              overwrite: flag(args, 'overwrite'),
              createPath: flag(args, 'create_path'),
            });
            const session: CopySession = {
              id: crypto.randomUUID(),
              dest,
              size,
              received: 0,
              timer: setTimeout(() => {}, 0),
            };
            copy = session;
            touch(session);
            return { session: session.id, fragment: DATA_FRAGMENT };
          }
          case 'write': {
            const session = sessionOf(args);
            const offset = integer(args, 'offset', 0, Number.MAX_SAFE_INTEGER);
            if (offset !== session.received) {
              throw new Error(`chunk at offset ${offset}, expected ${session.received}`);
            }
            const data = Buffer.from(text(args, 'data'), 'base64');
            if (session.received + data.length > session.size) {
              throw new Error(`more data than the announced ${session.size} bytes`);
            }
            touch(session);
            try {
              await vsp.write(offset, data);
            } catch (error) {
              endCopy();
              await vsp.cancel().catch(() => {});
              throw error;
            }
            session.received += data.length;
            return { received: session.received };
          }
          case 'complete': {
            const session = sessionOf(args);
            if (session.received !== session.size) {
              throw new Error(`only ${session.received} of ${session.size} bytes arrived`);
            }
            endCopy();
            await vsp.complete();
            return { dest: session.dest, bytes: session.received };
          }
          case 'cancel': {
            const session = sessionOf(args);
            endCopy();
            await vsp.cancel();
            return { cancelled: session.dest };
          }
          default:
            throw new Error(
              `copy-file op must be start, write, complete or cancel, got ${JSON.stringify(op)}`,
            );
        }
      },

      backup: async () => {
        const vsp = need(parts.vss, 'vss');
        const result = await vsp.backup({ timeoutMs: config.vss.host_timeout });
        return result;
      },

      heartbeat: () => need(parts.heartbeat, 'heartbeat').describe(),
    };

    return {
      devices,
      commands,
      status: () => ({
        type: 'ic',
        summary: hostSummary(parts),
        ...Object.fromEntries(
          Object.entries(parts)
            .filter(([, v]) => v)
            .map(([name, v]) => [name, v!.describe()]),
        ),
      }),
      close: async () => {
        endCopy();
        parts.heartbeat?.dispose();
        parts.timesync?.dispose();
        parts.kvp?.dispose();
      },
    };
  },

  async createGuest(configs, { client, vmName, log, requestStop }) {
    if (configs.length > 1) {
      throw new Error(
        `a VM has one ic device entry (it lists the services), this config has ${configs.length}`,
      );
    }
    const config = configs[0]!;
    const on = new Set(config.services);
    const services = {
      heartbeat: on.has('heartbeat') ? new HeartbeatService() : undefined,
      shutdown: on.has('shutdown')
        ? new ShutdownService({
            refuse: config.shutdown.refuse,
            onShutdown: (request) => {
              log(
                `ic: the host asked to ${request.restart ? 'restart' : 'shut down'}` +
                  `${request.message ? ` ("${request.message}")` : ''}; stopping cleanly`,
              );
              requestStop({ restart: request.restart, exitCode: 0 });
            },
          })
        : undefined,
      timesync: on.has('timesync')
        ? new TimesyncService({
            clock: new GuestClock(BigInt(Math.round(config.timesync.guest_clock_offset * 10_000))),
            adjust: config.timesync.adjust,
          })
        : undefined,
      kvp: on.has('kvp')
        ? new KvpService(new KvpPools(config.kvp.pool_dir ?? defaultPoolDir(vmName)), (m) =>
            log(`ic: ${m}`),
          )
        : undefined,
      fcopy: on.has('fcopy')
        ? new FcopyService(config.fcopy.root ?? defaultGuestRoot(vmName), (m) => log(`ic: ${m}`))
        : undefined,
      vss: on.has('vss')
        ? new VssService({
            freeze: config.vss.freeze,
            thaw: config.vss.thaw,
            hookTimeoutMs: config.vss.timeout,
            log: (m) => log(`ic: ${m}`),
          })
        : undefined,
    };
    const drivers: IcDriver[] = [];
    for (const service of Object.values(services)) {
      if (!service) continue;
      const driver = new IcDriver(service, (m) => log(`ic: ${m}`));
      client.registerDriver(driver);
      drivers.push(driver);
    }
    return {
      status: () => ({
        type: 'ic',
        summary: guestSummary(services),
        ...Object.fromEntries(
          drivers.map((d) => {
            const own = (d.service as { describe?: () => Record<string, unknown> }).describe?.();
            return [d.service.name, { ...d.describe(), ...own }];
          }),
        ),
      }),
      stop: async () => {
        // What a clean guest shutdown does before the bus goes away: thaw
        // anything frozen, drop unfinished copies, flush the KVP pools.
        await services.vss?.closed();
        services.fcopy?.closed();
        const flushed = services.kvp?.pools.flush();
        if (flushed !== undefined) log(`ic: flushed ${flushed} KVP pool files`);
      },
    };
  },
};
