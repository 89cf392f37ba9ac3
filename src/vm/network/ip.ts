/**
 * Network configuration through iproute2's `ip`: namespaces, links,
 * addresses, routes and bridges — what a VM's NIC needs around its TAP
 * devices. Each call runs `ip` with arguments (never a shell) and fails with
 * the command and what `ip` said.
 */
import { execFile } from 'node:child_process';

function run(file: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: 10_000, encoding: 'utf8' }, (error, stdout, stderr) => {
      if (error) {
        const said = (stderr || error.message).trim().split('\n')[0];
        reject(new Error(`${file} ${args.join(' ')}: ${said}`));
      } else {
        resolve(stdout);
      }
    });
  });
}

/** `ip [-n netns] args...` */
export function ip(args: readonly string[], netns?: string): Promise<string> {
  return run('ip', netns ? ['-n', netns, ...args] : args);
}

/** Whether this process may configure the network (it runs as root). */
export function canConfigureNetwork(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

export async function netnsExists(name: string): Promise<boolean> {
  const list = await ip(['netns', 'list']);
  return list.split('\n').some((line) => line.split(' ')[0] === name);
}

export async function addNetns(name: string): Promise<void> {
  await ip(['netns', 'add', name]);
  // Loopback up, as a fresh machine has it.
  await ip(['link', 'set', 'lo', 'up'], name);
}

export async function deleteNetns(name: string): Promise<void> {
  await ip(['netns', 'delete', name]);
}

export async function linkExists(name: string, netns?: string): Promise<boolean> {
  try {
    await ip(['link', 'show', 'dev', name], netns);
    return true;
  } catch {
    return false;
  }
}

export async function deleteLink(name: string, netns?: string): Promise<void> {
  await ip(['link', 'delete', 'dev', name], netns);
}

/** Moves a link from this namespace into `netns` (a TAP keeps working: its fd stays ours). */
export async function moveLink(name: string, netns: string): Promise<void> {
  await ip(['link', 'set', 'dev', name, 'netns', netns]);
}

export interface LinkSettings {
  readonly rename?: string;
  readonly mac?: string;
  readonly mtu?: number;
  /** Largest GSO frame the stack hands this link (the NIC's LSO limit). */
  readonly gsoMaxSize?: number;
  readonly master?: string;
}

/** Applies settings to a link and brings it up. */
export async function configureLink(
  name: string,
  settings: LinkSettings,
  netns?: string,
): Promise<string> {
  let current = name;
  if (settings.rename && settings.rename !== name) {
    await ip(['link', 'set', 'dev', name, 'name', settings.rename], netns);
    current = settings.rename;
  }
  const set: string[] = [];
  if (settings.mac) set.push('address', settings.mac);
  if (settings.mtu) set.push('mtu', String(settings.mtu));
  if (settings.gsoMaxSize) set.push('gso_max_size', String(settings.gsoMaxSize));
  if (set.length > 0) await ip(['link', 'set', 'dev', current, ...set], netns);
  if (settings.master) await ip(['link', 'set', 'dev', current, 'master', settings.master], netns);
  await ip(['link', 'set', 'dev', current, 'up'], netns);
  return current;
}

export async function addAddress(link: string, cidr: string, netns?: string): Promise<void> {
  await ip(['address', 'replace', cidr, 'dev', link], netns);
}

export async function flushAddresses(link: string, netns?: string): Promise<void> {
  await ip(['address', 'flush', 'dev', link], netns);
}

export async function addDefaultRoute(gateway: string, netns?: string): Promise<void> {
  await ip(['route', 'replace', 'default', 'via', gateway], netns);
}

export async function addBridge(name: string, netns?: string): Promise<void> {
  await ip(['link', 'add', 'name', name, 'type', 'bridge'], netns);
  await ip(['link', 'set', 'dev', name, 'up'], netns);
}

export interface LinkAddress {
  readonly family: 'inet' | 'inet6';
  readonly address: string;
  readonly prefixLength: number;
}

/** A link's addresses (from `ip -j address show`). */
export async function linkAddresses(link: string, netns?: string): Promise<LinkAddress[]> {
  const out = await ip(['-j', 'address', 'show', 'dev', link], netns);
  let parsed: unknown;
  try {
    parsed = JSON.parse(out);
  } catch {
    return [];
  }
  const list: LinkAddress[] = [];
  if (!Array.isArray(parsed)) return list;
  for (const entry of parsed) {
    const infos = (entry as { addr_info?: unknown }).addr_info;
    if (!Array.isArray(infos)) continue;
    for (const info of infos) {
      const { family, local, prefixlen } = info as Record<string, unknown>;
      if ((family === 'inet' || family === 'inet6') && typeof local === 'string') {
        list.push({ family, address: local, prefixLength: Number(prefixlen) || 0 });
      }
    }
  }
  return list;
}

/** Routes' gateways of a namespace (`ip -j route show default`). */
export async function defaultGateways(netns?: string): Promise<string[]> {
  const out: string[] = [];
  for (const family of ['-4', '-6']) {
    try {
      const parsed = JSON.parse(await ip([family, '-j', 'route', 'show', 'default'], netns));
      if (Array.isArray(parsed)) {
        for (const r of parsed) {
          const gateway = (r as { gateway?: unknown }).gateway;
          if (typeof gateway === 'string') out.push(gateway);
        }
      }
    } catch {
      // No routes of that family.
    }
  }
  return out;
}
