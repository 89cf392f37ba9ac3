/**
 * The integration services as a VM device kind: one `type: ic` entry turns
 * on the services it lists. The host offers a device per service and
 * answers the control commands (shutdown, kvp, copy-file, backup,
 * heartbeat); the guest binds a driver per service.
 */
import { Buffer } from 'node:buffer';
import { join } from 'node:path';
import { z } from 'zod';
import { FcopyUploads } from '../../devices/ic/fcopy/upload.ts';
import { FcopyService } from '../../devices/ic/fcopy/vsc.ts';
import { FcopyVsp } from '../../devices/ic/fcopy/vsp.ts';
import { HeartbeatService } from '../../devices/ic/heartbeat/vsc.ts';
import { HeartbeatVsp } from '../../devices/ic/heartbeat/vsp.ts';
import { KvpPools } from '../../devices/ic/kvp/pool-file.ts';
import { KvpService } from '../../devices/ic/kvp/vsc.ts';
import { type KvpValue, KvpVsp } from '../../devices/ic/kvp/vsp.ts';
import { HOST_IC_VERSIONS, parseVersionText } from '../../devices/ic/protocol.ts';
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
import { type CommandHandler, command, count, type DeviceKind } from '../device-kind.ts';
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

const flag = z.boolean().default(false);

const shutdownArgs = z.object({
  force: flag,
  restart: flag,
  hibernate: flag,
  message: z.string().max(2048).optional(),
});

const pool = z.number().int().min(0).max(4);
const key = z.string();

/** A KVP value as the CLI sends it: text, or a decimal number for u32 / u64. */
const kvpValue = z
  .object({
    type: z.enum(['string', 'u32', 'u64']).default('string'),
    value: z.string(),
  })
  .transform((v, ctx): KvpValue => {
    if (v.type === 'string') return v.value;
    if (!/^\d+$/.test(v.value)) {
      ctx.addIssue({
        code: 'custom',
        path: ['value'],
        message: `a ${v.type} value must be a decimal number, got ${JSON.stringify(v.value)}`,
      });
      return z.NEVER;
    }
    const n = BigInt(v.value);
    const limit = v.type === 'u32' ? 0xffff_ffffn : 0xffff_ffff_ffff_ffffn;
    if (n > limit) {
      ctx.addIssue({
        code: 'custom',
        path: ['value'],
        message: `${v.value} does not fit in ${v.type === 'u32' ? 32 : 64} bits`,
      });
      return z.NEVER;
    }
    return v.type === 'u32' ? { u32: Number(n) } : { u64: n };
  });

/** The typed value of a kvp set, or an error naming what is wrong with it. */
function typedValue(args: {
  type?: 'string' | 'u32' | 'u64' | undefined;
  value: string;
}): KvpValue {
  const parsed = kvpValue.safeParse(args);
  if (parsed.success) return parsed.data;
  throw new Error(`invalid arguments: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
}

const kvpArgs = z.discriminatedUnion('op', [
  z.object({ op: z.literal('get'), pool, key }),
  z.object({ op: z.literal('delete'), pool, key }),
  z.object({ op: z.literal('list'), pool }),
  z.object({ op: z.literal('ip-get'), mac: z.string().min(1) }),
  z.object({
    op: z.literal('ip-set'),
    mac: z.string().min(1),
    /** Addresses with their prefix, "192.0.2.5/24" or "fd00::5/64". */
    addresses: z
      .array(
        z
          .string()
          .regex(/^[0-9a-fA-F.:]+\/\d{1,3}$/, 'an address with its prefix, like 192.0.2.5/24'),
      )
      .min(1),
    gateway: z.string().optional(),
    dns: z.array(z.string()).default([]),
  }),
  z.object({
    op: z.literal('set'),
    pool,
    key,
    type: z.enum(['string', 'u32', 'u64']).optional(),
    value: z.string(),
  }),
]);

const session = z.string().min(1);
const copyArgs = z.discriminatedUnion('op', [
  z.object({
    op: z.literal('start'),
    dest: z.string().min(1),
    size: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
    overwrite: flag,
    create_path: flag,
  }),
  z.object({ op: z.literal('write'), session, offset: count, data: z.string() }),
  z.object({ op: z.literal('complete'), session }),
  z.object({ op: z.literal('cancel'), session }),
]);

const noArgs = z.object({});

// --- host --------------------------------------------------------------------

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
  if (parts.heartbeat) pieces.push(parts.heartbeat.healthSummary());
  if (parts.kvp) pieces.push(parts.kvp.guestSummary());
  const services: (IcVsp | undefined)[] = Object.values(parts);
  pieces.push(
    services
      .filter((v): v is IcVsp => v !== undefined)
      .map((v) => v.summary())
      .join(', '),
  );
  const backup = parts.vss?.backupSummary();
  if (backup) pieces.push(backup);
  return `ic: ${pieces.join(' | ')}`;
}

// --- guest -------------------------------------------------------------------

export const icKind: DeviceKind<IcConfig> = {
  type: 'ic',
  schema: icSchema,

  async createHost(config, { log }) {
    const parts = hostParts(config, log);
    const devices = Object.values(parts).filter((v): v is NonNullable<typeof v> => v !== undefined);
    const uploads = parts.fcopy ? new FcopyUploads(parts.fcopy, (m) => log(`ic: ${m}`)) : undefined;

    const commands: Record<string, CommandHandler> = {
      shutdown: command(shutdownArgs, async (args) => {
        const result = await need(parts.shutdown, 'shutdown').shutdown(args);
        if (!result.accepted) {
          throw new Error(`the guest refused to shut down: it answered ${result.statusName}`);
        }
        const action = args.restart ? 'restart' : args.hibernate ? 'hibernation' : 'shutdown';
        return { ...result, action };
      }),

      kvp: command(kvpArgs, async (args) => {
        const vsp = need(parts.kvp, 'kvp');
        switch (args.op) {
          case 'get': {
            const value = await vsp.get(args.pool, args.key);
            if (value === undefined)
              throw new Error(`pool ${args.pool} has no key ${JSON.stringify(args.key)}`);
            return { key: args.key, value };
          }
          case 'set':
            await vsp.set(args.pool, args.key, typedValue(args));
            return { ok: true };
          case 'delete':
            if (!(await vsp.delete(args.pool, args.key))) {
              throw new Error(`pool ${args.pool} has no key ${JSON.stringify(args.key)}`);
            }
            return { ok: true };
          case 'list':
            return { entries: await vsp.list(args.pool) };
          case 'ip-get':
            return await vsp.getIpInfo(args.mac);
          case 'ip-set': {
            // The wire wants addresses and masks as separate lists (IPv4 masks dotted, IPv6 "/n").
            const ips = args.addresses.map((a) => a.split('/')[0]!);
            const masks = args.addresses.map((a) => {
              const [address, prefix] = a.split('/') as [string, string];
              if (address.includes(':')) return `/${prefix}`;
              const n = Number(prefix);
              const bits = n === 0 ? 0 : (0xffff_ffff << (32 - n)) >>> 0;
              return [bits >>> 24, (bits >>> 16) & 0xff, (bits >>> 8) & 0xff, bits & 0xff].join(
                '.',
              );
            });
            await vsp.setIpInfo({
              adapterId: args.mac,
              addrFamily:
                (ips.some((a) => !a.includes(':')) ? 1 : 0) |
                (ips.some((a) => a.includes(':')) ? 2 : 0),
              dhcpEnabled: false,
              ipAddr: ips.join(';'),
              subNet: masks.join(';'),
              gateway: args.gateway ?? '',
              dns: args.dns.join(';'),
            });
            return { ok: true };
          }
        }
      }),

      'copy-file': command(copyArgs, async (args) => {
        const copies = need(uploads, 'fcopy');
        switch (args.op) {
          case 'start':
            return copies.start({
              dest: args.dest,
              size: args.size,
              overwrite: args.overwrite,
              createPath: args.create_path,
            });
          case 'write':
            return {
              received: await copies.write(
                args.session,
                args.offset,
                Buffer.from(args.data, 'base64'),
              ),
            };
          case 'complete':
            return copies.complete(args.session);
          case 'cancel':
            return copies.cancel(args.session);
        }
      }),

      backup: command(noArgs, () =>
        need(parts.vss, 'vss').backup({ timeoutMs: config.vss.host_timeout }),
      ),

      heartbeat: command(noArgs, () => need(parts.heartbeat, 'heartbeat').describe()),
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
        uploads?.dispose();
        parts.heartbeat?.dispose();
        parts.timesync?.dispose();
        parts.kvp?.dispose();
      },
    };
  },

  async createGuest(configs, { client, vmName, log, requestStop, network }) {
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
        ? new KvpService(
            new KvpPools(config.kvp.pool_dir ?? defaultPoolDir(vmName)),
            (m) => log(`ic: ${m}`),
            network,
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
        summary: `ic: ${drivers
          .map((d) => d.service.summary?.())
          .filter((s) => s)
          .join(' | ')}`,
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
