/**
 * KVP's IP operations on the guest side. GET_IP_INFO names an adapter by its
 * MAC address and wants its addresses, masks, gateways and name servers as
 * ';'-separated lists (hv_kvp_daemon: kvp_mac_to_ip, kvp_get_ip_info);
 * SET_IP_INFO hands the guest a configuration for an adapter, which the
 * daemon writes to an ifcfg file for the distribution's scripts. This guest
 * writes that file the same way but never reconfigures the machine it runs
 * on; a later GET_IP_INFO for that adapter answers with what was set.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { isIPv4, isIPv6 } from 'node:net';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { AddrFamily } from '../protocol.ts';

export interface IpInfo {
  readonly adapterId: string;
  /** AddrFamily bits. */
  readonly addrFamily: number;
  readonly dhcpEnabled: boolean;
  /** ';'-separated lists, as on the wire. */
  readonly ipAddr: string;
  readonly subNet: string;
  readonly gateway: string;
  readonly dns: string;
}

/** "00-15-5d-01-02-03" or "00:15:5D:01:02:03" to "00:15:5D:01:02:03"; undefined if not a MAC. */
export function normalizeMac(text: string): string | undefined {
  const m =
    /^([0-9a-f]{2})[:-]?([0-9a-f]{2})[:-]?([0-9a-f]{2})[:-]?([0-9a-f]{2})[:-]?([0-9a-f]{2})[:-]?([0-9a-f]{2})$/i.exec(
      text.trim(),
    );
  return m ? m.slice(1).join(':').toUpperCase() : undefined;
}

function prefixLength(cidr: string | null): number | undefined {
  const n = cidr ? Number(cidr.split('/')[1]) : Number.NaN;
  return Number.isInteger(n) ? n : undefined;
}

/** Default IPv4 gateways of an interface from /proc/net/route (little-endian hex). */
function gateways(interfaceName: string): string[] {
  try {
    const out: string[] = [];
    for (const line of readFileSync('/proc/net/route', 'utf8').split('\n').slice(1)) {
      const [iface, destination, gateway] = line.trim().split(/\s+/);
      if (iface !== interfaceName || destination !== '00000000' || !gateway) continue;
      const n = Number.parseInt(gateway, 16);
      out.push([n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24].join('.'));
    }
    return out;
  } catch {
    return [];
  }
}

function nameServers(): string[] {
  try {
    return readFileSync('/etc/resolv.conf', 'utf8')
      .split('\n')
      .map((line) => /^\s*nameserver\s+(\S+)/.exec(line)?.[1])
      .filter((s): s is string => s !== undefined);
  } catch {
    return [];
  }
}

/**
 * A guest network interface as the guest's NICs report it (its namespace's
 * addresses, not the process's): what GET_IP_INFO and the auto pool use
 * when the guest has NICs of its own.
 */
export interface NetInterface {
  /** "00:15:5D:01:02:03" */
  readonly mac: string;
  readonly name: string;
  readonly addresses: readonly {
    readonly family: 'IPv4' | 'IPv6';
    readonly address: string;
    readonly prefixLength: number;
  }[];
  readonly gateways: readonly string[];
}

/** A dotted IPv4 mask for a prefix length. */
function ipv4Mask(prefix: number): string {
  const bits = prefix <= 0 ? 0 : (0xffff_ffff << (32 - Math.min(32, prefix))) >>> 0;
  return [bits >>> 24, (bits >>> 16) & 0xff, (bits >>> 8) & 0xff, bits & 0xff].join('.');
}

function fromNetInterface(n: NetInterface): IpInfo {
  let family = AddrFamily.None;
  for (const a of n.addresses) family |= a.family === 'IPv4' ? AddrFamily.IPv4 : AddrFamily.IPv6;
  return {
    adapterId: n.mac,
    addrFamily: family,
    dhcpEnabled: false,
    ipAddr: n.addresses.map((a) => a.address).join(';'),
    subNet: n.addresses
      .map((a) => (a.family === 'IPv4' ? ipv4Mask(a.prefixLength) : `/${a.prefixLength}`))
      .join(';'),
    gateway: n.gateways.join(';'),
    dns: nameServers().join(';'),
  };
}

/** The prefix length of a dotted IPv4 mask or a "/64" IPv6 one (undefined when neither). */
export function maskPrefix(mask: string): number | undefined {
  const text = mask.trim();
  if (text.startsWith('/')) {
    const n = Number(text.slice(1));
    return Number.isInteger(n) && n >= 0 && n <= 128 ? n : undefined;
  }
  if (!isIPv4(text)) return undefined;
  const bits = text.split('.').reduce((acc, part) => acc * 256 + Number(part), 0);
  let prefix = 0;
  while (prefix < 32 && bits & (2 ** (31 - prefix))) prefix++;
  return prefix;
}

/**
 * The configuration of the interface with this MAC address, or undefined:
 * among the guest's NICs when it has any, else among the process's own.
 */
export function interfaceIpInfo(
  adapterId: string,
  guestInterfaces: readonly NetInterface[] = [],
): IpInfo | undefined {
  const mac = normalizeMac(adapterId);
  if (!mac) return undefined;
  const guest = guestInterfaces.find((n) => normalizeMac(n.mac) === mac);
  if (guest) return fromNetInterface(guest);
  for (const [name, list] of Object.entries(networkInterfaces())) {
    const addresses = (list ?? []).filter((a) => !a.internal && normalizeMac(a.mac) === mac);
    if (addresses.length === 0) continue;
    let family = AddrFamily.None;
    const ips: string[] = [];
    const masks: string[] = [];
    for (const a of addresses) {
      ips.push(a.address);
      if (a.family === 'IPv4') {
        family |= AddrFamily.IPv4;
        masks.push(a.netmask);
      } else {
        family |= AddrFamily.IPv6;
        masks.push(`/${prefixLength(a.cidr) ?? 128}`);
      }
    }
    return {
      adapterId: mac,
      addrFamily: family,
      dhcpEnabled: false,
      ipAddr: ips.join(';'),
      subNet: masks.join(';'),
      gateway: gateways(name).join(';'),
      dns: nameServers().join(';'),
    };
  }
  return undefined;
}

function list(text: string): string[] {
  return text
    .split(';')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

function ifcfgName(adapterId: string): string {
  return `ifcfg-${adapterId.replace(/[^A-Za-z0-9._-]/g, '_')}`;
}

/**
 * Writes a SET_IP_INFO configuration as an ifcfg file (the daemon's
 * format: BOOTPROTO, IPADDRn/NETMASKn, IPV6ADDR/IPV6NETMASK, GATEWAY,
 * IPV6_DEFAULTGW, DNSn). Returns an error message for addresses that are
 * not IP addresses.
 */
export function saveIpConfig(directory: string, info: IpInfo): string | undefined {
  const lines = [`# adapter ${info.adapterId}`, `BOOTPROTO=${info.dhcpEnabled ? 'dhcp' : 'none'}`];
  const ips = list(info.ipAddr);
  const masks = list(info.subNet);
  let v4 = 0;
  let v6 = 0;
  for (const [i, ip] of ips.entries()) {
    const mask = masks[i] ?? '';
    if (isIPv4(ip)) {
      lines.push(`IPADDR${v4}=${ip}`, `NETMASK${v4}=${mask}`);
      v4++;
    } else if (isIPv6(ip)) {
      const suffix = v6 === 0 ? '' : `_${v6}`;
      lines.push(`IPV6ADDR${suffix}=${ip}`, `IPV6NETMASK${suffix}=${mask}`);
      v6++;
    } else {
      return `${JSON.stringify(ip)} is not an IP address`;
    }
  }
  let g4 = 0;
  let g6 = 0;
  for (const gw of list(info.gateway)) {
    if (isIPv4(gw)) lines.push(`GATEWAY${g4++ === 0 ? '' : g4 - 1}=${gw}`);
    else if (isIPv6(gw)) lines.push(`IPV6_DEFAULTGW${g6++ === 0 ? '' : `_${g6 - 1}`}=${gw}`);
    else return `gateway ${JSON.stringify(gw)} is not an IP address`;
  }
  list(info.dns).forEach((dns, i) => {
    lines.push(`DNS${i + 1}=${dns}`);
  });
  writeFileSync(join(directory, ifcfgName(info.adapterId)), `${lines.join('\n')}\n`, {
    mode: 0o644,
  });
  return undefined;
}

/** Reads back what `saveIpConfig` wrote for this adapter, or undefined. */
export function loadIpConfig(directory: string, adapterId: string): IpInfo | undefined {
  let text: string;
  try {
    text = readFileSync(join(directory, ifcfgName(adapterId)), 'utf8');
  } catch {
    return undefined;
  }
  const ips: string[] = [];
  const masks: string[] = [];
  const gws: string[] = [];
  const dns: string[] = [];
  let dhcp = false;
  let family = AddrFamily.None;
  for (const line of text.split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (!m) continue;
    const [, key, value] = m as unknown as [string, string, string];
    if (key === 'BOOTPROTO') dhcp = value === 'dhcp';
    else if (/^IPADDR\d+$/.test(key)) {
      ips.push(value);
      family |= AddrFamily.IPv4;
    } else if (/^IPV6ADDR(_\d+)?$/.test(key)) {
      ips.push(value);
      family |= AddrFamily.IPv6;
    } else if (/^(NETMASK\d+|IPV6NETMASK(_\d+)?)$/.test(key)) masks.push(value);
    else if (/^(GATEWAY\d*|IPV6_DEFAULTGW(_\d+)?)$/.test(key)) gws.push(value);
    else if (/^DNS\d+$/.test(key)) dns.push(value);
  }
  return {
    adapterId,
    addrFamily: family,
    dhcpEnabled: dhcp,
    ipAddr: ips.join(';'),
    subNet: masks.join(';'),
    gateway: gws.join(';'),
    dns: dns.join(';'),
  };
}
