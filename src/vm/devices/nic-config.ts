/**
 * The `type: nic` config entry, and how its defaults resolve for a VM:
 * the MAC (Hyper-V's 00:15:5d prefix and three bytes from the VM's name and
 * the NIC's index), the names of its TAP devices, and — for a NIC that says
 * nothing about its sides — a pair of namespaces of the VM's own with
 * 192.0.2.1 (host side) and 192.0.2.2 (guest), so `hvkit exec -- ping
 * 192.0.2.1` works out of the box.
 */
import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import { z } from 'zod';
import {
  ALL_NVSP_VERSIONS,
  NETVSC_MTU_MAX,
  NETVSC_MTU_MIN,
  nvspVersionString,
} from '../../devices/net/protocol.ts';
import { sizeSchema } from '../units.ts';

const macSchema = z
  .string()
  .regex(
    /^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/,
    'a MAC address is six hex bytes, like 00:15:5d:00:00:01',
  )
  .refine(
    (mac) => (Number.parseInt(mac.slice(0, 2), 16) & 1) === 0,
    'a NIC needs a unicast MAC (first byte even)',
  )
  .transform((mac) => mac.toLowerCase());

/** An interface name as Linux takes it (IFNAMSIZ - 1 bytes, no '/', ':' or spaces). */
const ifname = z
  .string()
  .regex(/^[A-Za-z0-9_.-]{1,15}$/, 'an interface name is 1..15 letters, digits, "_", "." or "-"');

const netnsName = z
  .string()
  .regex(/^[A-Za-z0-9_.-]{1,64}$/, 'a namespace name is 1..64 letters, digits, "_", "." or "-"')
  .refine((n) => n !== '.' && n !== '..', 'not a namespace name');

const cidr = z.string().refine((text) => {
  const [address, prefix, ...rest] = text.split('/');
  const family = isIP(address ?? '');
  const bits = Number(prefix);
  return (
    rest.length === 0 &&
    family !== 0 &&
    Number.isInteger(bits) &&
    bits >= 0 &&
    bits <= (family === 4 ? 32 : 128)
  );
}, 'an address with its prefix length, like 192.0.2.2/24');

const address = z.string().refine((text) => isIP(text) !== 0, 'an IPv4 or IPv6 address');

/** An NVSP version: "6.1", "5", "2" (Linux's NVSP_PROTOCOL_VERSION_2 is 0x30002) or its number. */
const nvspVersion = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const found = ALL_NVSP_VERSIONS.find(
    (v) => v === value || nvspVersionString(v) === String(value).trim(),
  );
  if (found === undefined) {
    ctx.addIssue({
      code: 'custom',
      message: `unknown NVSP version ${JSON.stringify(value)}; known: ${ALL_NVSP_VERSIONS.map(nvspVersionString).join(', ')}`,
    });
    return z.NEVER;
  }
  return found;
});

export const nicHostSchema = z
  .object({
    /** tap: a TAP device (needs root); loopback: frames come back (default without root). */
    backend: z.enum(['tap', 'loopback']).optional(),
    tap: ifname.optional(),
    bridge: ifname.optional(),
    netns: netnsName.optional(),
    /** An address for the host side: on the bridge when there is one, else on the TAP. */
    address: cidr.optional(),
  })
  .strict();

export const nicGuestSchema = z
  .object({
    /** The guest's namespace (default: named after the VM). */
    netns: netnsName.optional(),
    /** The interface's name in it (default eth0, eth1, ... by NIC). */
    name: ifname.optional(),
    address: cidr.optional(),
    gateway: address.optional(),
  })
  .strict();

export const nicSchema = z
  .object({
    type: z.literal('nic'),
    mac: macSchema.optional(),
    /** Channels: the primary plus sub-channels for vRSS (NVSP 5 on). */
    channels: z.number().int().min(1).max(64).default(2),
    mtu: z.number().int().min(NETVSC_MTU_MIN).max(NETVSC_MTU_MAX).default(1500),
    /** Whether the guest asks the host for checksum and large-send offloads. */
    offloads: z.boolean().default(true),
    /** NVSP versions the host accepts (default all six). */
    versions: z.array(nvspVersion).min(1).optional(),
    /** The order the guest proposes versions in (default Linux's: 6.1, 6, 5, 4, 2, 1). */
    guest_versions: z.array(nvspVersion).min(1).optional(),
    /** Guest memory for the receive buffer the host fills (Linux: 16 MiB). */
    receive_buffer: sizeSchema.default(16 * 1024 * 1024),
    /** Guest memory for the send buffer's sections (Linux: 1 MiB). */
    send_buffer: sizeSchema.default(1024 * 1024),
    host: nicHostSchema.optional(),
    guest: nicGuestSchema.optional(),
    /** A pcapng file of every frame the NIC carries. */
    capture: z.string().min(1).optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    for (const [field, min] of [
      ['receive_buffer', 64 * 1024],
      ['send_buffer', 16 * 1024],
    ] as const) {
      const v = c[field];
      if (v < min || v > 256 * 1024 * 1024 || v % 4096 !== 0) {
        ctx.addIssue({
          code: 'custom',
          path: [field],
          message: `must be a multiple of 4 KiB between ${min / 1024} KiB and 256 MiB, got ${v}`,
        });
      }
    }
    if (
      c.host?.backend === 'loopback' &&
      (c.host.tap || c.host.bridge || c.host.netns || c.host.address)
    ) {
      ctx.addIssue({
        code: 'custom',
        path: ['host'],
        message: 'a loopback backend has no TAP, bridge, namespace or address',
      });
    }
  });

export type NicConfig = z.output<typeof nicSchema>;

/** The NIC the built-in default VM has: the pair of namespaces as root, else the loopback. */
export function defaultNicEntry(): NicConfig {
  return nicSchema.parse({ type: 'nic' });
}

function digest(...parts: string[]): string {
  return createHash('sha256').update(parts.join('\0')).digest('hex');
}

/** The NIC's MAC when the config gives none: 00:15:5d and three bytes of the VM name and index. */
export function defaultMac(vmName: string, index: number): string {
  const h = digest('hvkit nic', vmName, String(index));
  return `00:15:5d:${h.slice(0, 2)}:${h.slice(2, 4)}:${h.slice(4, 6)}`;
}

/** A stable instance GUID for a VM's NIC N (the guest tells config entries apart by it). */
export function nicInstanceId(vmName: string, index: number): string {
  const h = digest('hvkit nic instance', vmName, String(index));
  const variant = ((Number.parseInt(h[16]!, 16) & 0x3) | 0x8).toString(16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** TAP names unique to a VM and NIC (15 bytes at most): hvk + 6 hex + h|g + index. */
export function tapName(vmName: string, side: 'h' | 'g', index: number): string {
  return `hvk${digest('hvkit tap', vmName).slice(0, 6)}${side}${index}`.slice(0, 15);
}

export interface ResolvedHost {
  readonly backend: 'tap' | 'loopback';
  readonly tap: string;
  readonly bridge?: string;
  readonly netns?: string;
  readonly address?: string;
}

export interface ResolvedGuest {
  readonly netns: string;
  readonly name: string;
  readonly address?: string;
  readonly gateway?: string;
}

/** Whether this NIC takes the built-in pair of namespaces (it says nothing about either side). */
function builtInPair(config: Pick<NicConfig, 'host' | 'guest'>, index: number): boolean {
  return index === 0 && config.host === undefined && config.guest === undefined;
}

export function resolveHost(
  config: NicConfig,
  vmName: string,
  index: number,
  root: boolean,
): ResolvedHost {
  const h = config.host ?? {};
  const backend = h.backend ?? (root ? 'tap' : 'loopback');
  const pair = builtInPair(config, index);
  return {
    backend,
    tap: h.tap ?? tapName(vmName, 'h', index),
    ...(h.bridge ? { bridge: h.bridge } : {}),
    ...(h.netns
      ? { netns: h.netns }
      : config.host === undefined
        ? { netns: `${vmName}-host` }
        : {}),
    ...(h.address ? { address: h.address } : pair ? { address: '192.0.2.1/24' } : {}),
  };
}

export function resolveGuest(
  config: Pick<NicConfig, 'host' | 'guest'> | undefined,
  vmName: string,
  index: number,
): ResolvedGuest {
  const g = config?.guest ?? {};
  const pair = config !== undefined && builtInPair(config, index);
  return {
    netns: g.netns ?? vmName,
    name: g.name ?? `eth${index}`,
    ...(g.address ? { address: g.address } : pair ? { address: '192.0.2.2/24' } : {}),
    ...(g.gateway ? { gateway: g.gateway } : {}),
  };
}
