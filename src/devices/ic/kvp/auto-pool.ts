/**
 * What the guest publishes in the auto pool, gathered from the running
 * system the way hv_kvp_daemon does (uname, /etc/os-release, the
 * interfaces' addresses), in the key order the host enumerates by index.
 */
import { readFileSync } from 'node:fs';
import { hostname, machine, networkInterfaces, release, type } from 'node:os';
import { KVP_AUTO_KEYS } from '../protocol.ts';
import type { NetInterface } from './ip-info.ts';
import type { KvpRecord } from './pool-file.ts';

/** The version the guest reports as IntegrationServicesVersion (Linux's HV_DRV_VERSION). */
export const INTEGRATION_SERVICES_VERSION = '3.1';

/** NAME and VERSION_ID from os-release text (quotes and escapes removed). */
export function parseOsRelease(text: string): { name?: string; versionId?: string } {
  const out: { name?: string; versionId?: string } = {};
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq < 0) continue;
    const key = line.slice(0, eq).trim();
    let value = line.slice(eq + 1).trim();
    if (value.length >= 2 && (value[0] === '"' || value[0] === "'") && value.at(-1) === value[0]) {
      value = value.slice(1, -1);
    }
    value = value.replace(/\\(.)/g, '$1');
    if (key === 'NAME') out.name = value;
    else if (key === 'VERSION_ID') out.versionId = value;
  }
  return out;
}

function osRelease(): { name?: string; versionId?: string } {
  for (const path of ['/etc/os-release', '/usr/lib/os-release']) {
    try {
      return parseOsRelease(readFileSync(path, 'utf8'));
    } catch {
      // Try the next location.
    }
  }
  return {};
}

/**
 * The guest's non-loopback addresses of one family, ';'-separated: its NICs'
 * when it has any, else the process's own interfaces'.
 */
export function addresses(family: 'IPv4' | 'IPv6', guest: readonly NetInterface[] = []): string {
  const out: string[] = [];
  if (guest.length > 0) {
    for (const n of guest)
      for (const a of n.addresses) if (a.family === family) out.push(a.address);
    return out.join(';');
  }
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) {
      if (!a.internal && a.family === family) out.push(a.address);
    }
  }
  return out.join(';');
}

/** The auto pool's records, freshly gathered. */
export function autoPoolRecords(guest: readonly NetInterface[] = []): KvpRecord[] {
  const os = osRelease();
  const kernel = release();
  const values: Record<(typeof KVP_AUTO_KEYS)[number], string> = {
    FullyQualifiedDomainName: hostname(),
    IntegrationServicesVersion: INTEGRATION_SERVICES_VERSION,
    NetworkAddressIPv4: addresses('IPv4', guest),
    NetworkAddressIPv6: addresses('IPv6', guest),
    OSBuildNumber: kernel,
    OSName: os.name ?? type(),
    OSMajorVersion: os.versionId ?? '',
    OSMinorVersion: '',
    // The host expects x.y.z: the release up to its first '-'.
    OSVersion: kernel.split('-')[0] ?? kernel,
    ProcessorArchitecture: machine(),
  };
  return KVP_AUTO_KEYS.map((key) => ({ key, value: values[key] }));
}
