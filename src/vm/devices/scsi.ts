/**
 * The synthetic SCSI controller as a VM device kind. Each `type: scsi` entry
 * is one controller: the host offers a storvsp with the entry's disks, the
 * guest's storvsc binds to it, scans its LUNs and exports each disk over
 * NBD. Several entries make several controllers.
 *
 * ```yaml
 * devices:
 *   - type: scsi
 *     channels: 2              # primary + sub-channels the host offers (1..8)
 *     disks:
 *       - path: disk0.vhdx     # relative paths: to the directory hvkit run starts in
 *         lun: 0               # default: the lowest free LUN
 *       - path: data.raw
 *         read_only: true
 *       - memory: 64M          # a scratch disk in host memory
 *     export:                  # where the guest serves its disks over NBD
 *       socket_dir: /tmp/vm    # <dir>/<vm>-scsi<N>-lun<L>.sock (default: the hvkit run directory)
 *       # tcp_port: 10809      # or 127.0.0.1:<tcp_port + LUN> (0: any free port)
 * ```
 *
 * Disks can also be attached and detached while the VM runs (control
 * commands scsi-attach / scsi-detach; `hvkit disk attach|detach`).
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { DISK_FORMATS, type DiskFormat } from '../../block/image/open.ts';
import { GuestExports } from '../../devices/storvsc/guest/export.ts';
import { type StorvscController, StorvscDriver } from '../../devices/storvsc/guest/storvsc.ts';
import { MAX_LUN, maxTransferProblem, StorvspDevice } from '../../devices/storvsc/host/storvsp.ts';
import {
  DEFAULT_HOST_STORVSC_VERSIONS,
  LINUX_STORVSC_VERSION_ORDER,
  STORVSC_RING_BYTES,
  STORVSP_MAX_TRANSFER_BYTES,
  VmstorVersion,
  vmstorVersionString,
} from '../../devices/storvsc/protocol.ts';
import { openDiskSource } from '../../nbd/open-disk.ts';
import { controlDirectory } from '../control-path.ts';
import { command, count, type DeviceKind, type HostPart } from '../device-kind.ts';
import { formatBytes, sizeSchema } from '../units.ts';

const KNOWN_VERSIONS = [
  VmstorVersion.Win10,
  VmstorVersion.Win8_1,
  VmstorVersion.Win8,
  VmstorVersion.Win7,
  VmstorVersion.Win6,
];

/** A storage protocol version: "6.2" (major.minor) or its number (0x602). */
const storageVersion = z.union([z.string(), z.number()]).transform((value, ctx) => {
  let n: number | undefined;
  if (typeof value === 'number') n = value;
  else {
    const m = /^(\d+)\.(\d+)$/.exec(value.trim());
    if (m) n = (Number(m[1]) << 8) | Number(m[2]);
  }
  if (n === undefined || !KNOWN_VERSIONS.includes(n)) {
    ctx.addIssue({
      code: 'custom',
      message: `unknown storage protocol version ${JSON.stringify(value)}; known: ${KNOWN_VERSIONS.map(vmstorVersionString).join(', ')}`,
    });
    return z.NEVER;
  }
  return n;
});

const diskSchema = z
  .object({
    /** An image file (raw, VHDX, VHD; detected) or an nbd:// URI. */
    path: z.string().min(1).optional(),
    /** A scratch disk of this size in host memory (instead of a path). */
    memory: sizeSchema.optional(),
    lun: z.number().int().min(0).max(MAX_LUN).optional(),
    read_only: z.boolean().default(false),
    format: z.enum(DISK_FORMATS as unknown as [DiskFormat, ...DiskFormat[]]).optional(),
  })
  .strict()
  .superRefine((disk, ctx) => {
    if ((disk.path === undefined) === (disk.memory === undefined)) {
      ctx.addIssue({ code: 'custom', message: 'a disk needs exactly one of path or memory' });
    }
    if (disk.memory !== undefined && (disk.memory <= 0 || disk.memory % 512 !== 0)) {
      ctx.addIssue({
        code: 'custom',
        path: ['memory'],
        message: `a memory disk's size must be a positive multiple of 512, got ${disk.memory}`,
      });
    }
  });

export const scsiSchema = z
  .object({
    type: z.literal('scsi'),
    /** Channels the controller offers: the primary plus channels - 1 sub-channels. */
    channels: z.number().int().min(1).max(8).default(2),
    disks: z.array(diskSchema).max(255).default([]),
    /** Protocol versions the host accepts (default 6.2, 6.0, 5.1). */
    versions: z.array(storageVersion).min(1).optional(),
    /** The order the guest proposes versions in (default Linux's: 6.2, 6.0, 5.1). */
    guest_versions: z.array(storageVersion).min(1).optional(),
    /** Largest transfer of one request. */
    max_transfer: sizeSchema.default(STORVSP_MAX_TRANSFER_BYTES),
    /** Ring size of each direction, including its 4 KiB header page. */
    ring: sizeSchema.default(STORVSC_RING_BYTES),
    /** Guest memory the guest sets aside for I/O buffers. */
    buffers: sizeSchema.default(8 * 1024 * 1024),
    export: z
      .object({
        socket_dir: z.string().min(1).optional(),
        tcp_port: z.number().int().min(0).max(65535).optional(),
      })
      .strict()
      .optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    const luns = new Set<number>();
    c.disks.forEach((d, i) => {
      if (d.lun === undefined) return;
      if (luns.has(d.lun)) {
        ctx.addIssue({
          code: 'custom',
          path: ['disks', i, 'lun'],
          message: `LUN ${d.lun} is used twice`,
        });
      }
      luns.add(d.lun);
    });
    const max = c.max_transfer;
    const problem = maxTransferProblem(max);
    if (problem) ctx.addIssue({ code: 'custom', path: ['max_transfer'], message: problem });
    if (c.ring < 8192 || c.ring % 4096 !== 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['ring'],
        message: `must be a multiple of 4096, at least 8192, got ${c.ring}`,
      });
    }
    if (c.buffers < max) {
      ctx.addIssue({
        code: 'custom',
        path: ['buffers'],
        message: `must hold at least one maximum transfer (${max} bytes)`,
      });
    }
    if (c.export?.socket_dir !== undefined && c.export.tcp_port !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['export'],
        message: 'give socket_dir or tcp_port, not both',
      });
    }
  });

export type ScsiConfig = z.output<typeof scsiSchema>;

/** The controller the built-in default VM has: one 64 MiB scratch disk in host memory. */
export function defaultScsiDevice(): ScsiConfig {
  return scsiSchema.parse({ type: 'scsi', disks: [{ memory: '64M', lun: 0 }] });
}

/**
 * The instance GUID of a VM's controller N: stable for a VM name, so the
 * guest can tell which config entry an offer belongs to.
 */
export function controllerInstanceId(vmName: string, index: number): string {
  const h = createHash('sha256').update(`hvkit scsi\0${vmName}\0${index}`).digest('hex');
  const variant = ((Number.parseInt(h[16]!, 16) & 0x3) | 0x8).toString(16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

// --- host ----------------------------------------------------------------------

/** The host part of one controller: the storvsp and its place in the config. */
interface ScsiHostPart extends HostPart {
  readonly index: number;
  readonly vsp: StorvspDevice;
}

function controllerSummary(index: number, vsp: StorvspDevice): string {
  const disks = vsp.diskViews();
  const list =
    disks.length === 0
      ? 'no disks'
      : disks
          .map(
            (d) =>
              `LUN ${d.lun} ${formatBytes(d.capacity)} ${d.format}${d.source === d.format ? '' : ` ${d.source}`}${d.readOnly ? ' (read-only)' : ''}`,
          )
          .join(', ');
  const totals = vsp.totals();
  const channels = vsp.channelCounters().map((c) => c.requests);
  return (
    `scsi${index}: protocol ${vsp.versionString()}, ${list}; ` +
    `${totals.requests} requests on channels [${channels.join(', ')}], ${totals.errors} errors`
  );
}

const attachArgs = z.object({
  controller: count.default(0),
  /** An image path (already absolute: the CLI resolves it) or an nbd:// URI. */
  path: z.string().min(1, 'path must name an image file or an nbd:// URI'),
  lun: count.optional(),
  readOnly: z.boolean().default(false),
  format: z.enum(DISK_FORMATS as unknown as [DiskFormat, ...DiskFormat[]]).optional(),
});

const detachArgs = z.object({ controller: count.default(0), lun: count });

const hostCommands: NonNullable<DeviceKind<ScsiConfig, ScsiHostPart>['hostCommands']> = (
  context,
  parts,
) => {
  const find = (index: number): ScsiHostPart => {
    const part = parts.find((p) => p.index === index);
    if (part) return part;
    throw new Error(
      parts.length === 0
        ? 'this VM has no SCSI controller (add a `type: scsi` device to its config)'
        : `no SCSI controller ${index}; this VM has ${parts.map((p) => p.index).join(', ')}`,
    );
  };
  return {
    'scsi-attach': command(attachArgs, async (args) => {
      const { index, vsp } = find(args.controller);
      // Refuse a taken or invalid LUN before opening anything.
      try {
        vsp.freeLun(args.lun);
      } catch (error) {
        throw new Error(`controller ${index}: ${(error as Error).message}`);
      }
      const { device, source } = await openDiskSource({
        path: args.path,
        readOnly: args.readOnly,
        format: args.format,
      });
      let lun: number;
      try {
        lun = vsp.attachDisk(args.lun, device, source).lun;
      } catch (error) {
        await device.close();
        throw new Error(`controller ${index}: ${(error as Error).message}`);
      }
      context.log(`scsi${index}: attached ${source} as LUN ${lun}`);
      return {
        controller: index,
        lun,
        source,
        capacity: device.size,
        format: device.format,
        readOnly: device.readOnly,
      };
    }),
    'scsi-detach': command(detachArgs, async (args) => {
      const { index, vsp } = find(args.controller);
      const detached = await vsp.detachDisk(args.lun);
      await detached.device.close();
      context.log(`scsi${index}: detached LUN ${args.lun} (${detached.source})`);
      return { controller: index, lun: args.lun, source: detached.source };
    }),
  };
};

// --- guest ---------------------------------------------------------------------

interface GuestController {
  readonly index: number;
  readonly exports: GuestExports;
}

function guestDiskStatus(controller: StorvscController, exports: GuestExports | undefined) {
  return [...controller.disks.values()]
    .sort((a, b) => a.lun - b.lun)
    .map((d) => ({
      lun: d.lun,
      capacity: d.size,
      blockSize: d.logicalSectorSize,
      readOnly: d.readOnly,
      vendor: d.info.vendor,
      product: d.info.product,
      serial: d.info.serial,
      identifier: Buffer.from(d.identifier).toString('hex'),
      uri: exports?.uri(d.lun) ?? null,
    }));
}

export const scsiKind: DeviceKind<ScsiConfig, ScsiHostPart> = {
  type: 'scsi',
  schema: scsiSchema,

  async createHost(config, context, index) {
    const vsp = new StorvspDevice({
      instanceId: controllerInstanceId(context.vmName, index),
      maxSubchannels: config.channels - 1,
      versions: config.versions ?? DEFAULT_HOST_STORVSC_VERSIONS,
      maxTransferBytes: config.max_transfer,
      ringBytes: config.ring,
      log: context.log,
    });
    // Disks with a LUN of their own first, so the others take the lowest LUNs left.
    const order = [...config.disks.entries()].sort(
      ([, a], [, b]) => Number(a.lun === undefined) - Number(b.lun === undefined),
    );
    try {
      for (const [i, disk] of order) {
        let opened: Awaited<ReturnType<typeof openDiskSource>>;
        try {
          opened = await openDiskSource(
            { path: disk.path, memory: disk.memory, readOnly: disk.read_only, format: disk.format },
            context.baseDir,
          );
        } catch (error) {
          throw new Error(
            `scsi controller ${index}, disk ${i} (${disk.path ?? 'memory'}): ${(error as Error).message}`,
          );
        }
        vsp.attachDisk(disk.lun, opened.device, opened.source);
      }
    } catch (error) {
      for (const d of vsp.attachedDisks()) await d.device.close().catch(() => {});
      throw error;
    }
    return {
      index,
      vsp,
      devices: [vsp],
      status: () => ({
        type: 'scsi',
        summary: controllerSummary(index, vsp),
        controller: index,
        instanceId: vsp.offer.instanceId,
        version: vsp.versionString(),
        phase: vsp.phase,
        disks: vsp.diskViews(),
        channels: vsp.channelCounters(),
        totals: vsp.totals(),
      }),
      close: async () => {
        for (const d of vsp.attachedDisks()) {
          await d.device
            .close()
            .catch((error: Error) => context.log(`closing ${d.source}: ${error.message}`));
        }
      },
    };
  },

  hostCommands,

  async createGuest(configs, { client, vmName, log }) {
    const ids = configs.map((_, i) => controllerInstanceId(vmName, i));
    const byInstance = new Map<string, GuestController>();
    const exportsOf = (index: number, config: ScsiConfig | undefined): GuestExports => {
      const placement =
        config?.export?.tcp_port !== undefined
          ? { tcpPortBase: config.export.tcp_port }
          : { socketDir: config?.export?.socket_dir ?? controlDirectory() };
      return new GuestExports(`${vmName}-scsi${index}`, placement, log);
    };
    const driver = new StorvscDriver((device) => {
      let index = ids.indexOf(device.offer.instanceId);
      if (index < 0) index = configs.length + byInstance.size;
      const config = configs[index];
      let entry = byInstance.get(device.offer.instanceId);
      if (!entry) {
        entry = { index, exports: exportsOf(index, config) };
        byInstance.set(device.offer.instanceId, entry);
      }
      const exports = entry.exports;
      return {
        versionOrder: config?.guest_versions ?? LINUX_STORVSC_VERSION_ORDER,
        ringBytes: config?.ring ?? STORVSC_RING_BYTES,
        bufferBytes: config?.buffers ?? 8 * 1024 * 1024,
        log,
        onDiskAdded: async (_controller, disk) => {
          const uri = await exports.add(
            disk.lun,
            disk,
            `scsi${index} LUN ${disk.lun}: ${disk.info.vendor} ${disk.info.product}`,
          );
          log(
            `storvsc: scsi${index} LUN ${disk.lun} (${formatBytes(disk.size)}) exported at ${uri}`,
          );
        },
        onDiskRemoved: async (_controller, disk) => {
          await exports.remove(disk.lun);
          log(`storvsc: scsi${index} LUN ${disk.lun} removed`);
        },
      };
    });
    client.registerDriver(driver);

    const controllers = () =>
      [...driver.controllers.values()].map((c) => {
        const entry = byInstance.get(c.offerInstance);
        return {
          controller: entry?.index ?? -1,
          instanceId: c.offerInstance,
          state: c.state,
          version: c.versionString(),
          channels: c.channelCounters(),
          disks: guestDiskStatus(c, entry?.exports),
        };
      });
    return {
      commands: {
        'scsi-exports': () => controllers(),
      },
      status: () => {
        const list = controllers().sort((a, b) => a.controller - b.controller);
        const failures = [...driver.failures.entries()].map(([instanceId, error]) => ({
          instanceId,
          error,
        }));
        const text = list
          .map((c) => {
            const disks =
              c.disks.length === 0
                ? 'no disks'
                : c.disks
                    .map(
                      (d) => `LUN ${d.lun} ${formatBytes(d.capacity)} ${d.uri ?? '(not exported)'}`,
                    )
                    .join(', ');
            const n = c.channels.length;
            return `scsi${c.controller} protocol ${c.version}, ${n} channel${n === 1 ? '' : 's'}: ${disks}`;
          })
          .concat(failures.map((f) => `probe failed: ${f.error}`))
          .join('; ');
        return {
          type: 'storvsc',
          summary: `storvsc: ${text || 'no controllers'}`,
          controllers: list,
          failures,
        };
      },
      stop: async () => {
        // Closing an export answers what is in flight and flushes; flush every
        // disk once more so nothing acknowledged is left in a write cache.
        for (const entry of byInstance.values()) await entry.exports.closeAll();
        for (const controller of driver.controllers.values()) {
          for (const [lun, disk] of controller.disks) {
            await disk
              .flush()
              .catch((error: Error) => log(`storvsc: flushing LUN ${lun}: ${error.message}`));
          }
        }
      },
    };
  },
};
