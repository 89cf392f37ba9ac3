/**
 * Namespaces and bridges hvkit made, so that the VMs using them remove them
 * when they stop and a VM that was killed has them reclaimed at its next
 * start. Two records: a machine-wide mark per resource hvkit created
 * (/run/hvkit/net: a namespace or bridge someone else made is never
 * removed), and per VM the resources it created or joined, one file each
 * under <run dir>/<vm>.net/ (the host and guest workers record theirs
 * without meeting). TAP devices need no record: the kernel removes them when
 * the process that opened them goes.
 *
 * What several VMs share — a bridge they all join, a host-side namespace
 * they all use — is removed by whichever VM leaves it empty: a bridge
 * without ports, a namespace holding nothing but its loopback (and bridges
 * about to go).
 */
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { controlDirectory } from '../control-path.ts';
import { deleteLink, deleteNetns, ip, linkExists, netnsExists } from './ip.ts';

export type OwnedResource =
  | { readonly kind: 'netns'; readonly name: string }
  | { readonly kind: 'bridge'; readonly name: string; readonly netns?: string };

/** Machine-wide marks of what hvkit created (a tmpfs: gone at reboot, with the namespaces). */
const MARKS = '/run/hvkit/net';

function directory(vmName: string): string {
  return join(controlDirectory(), `${vmName}.net`);
}

function fileName(resource: OwnedResource): string {
  const where = resource.kind === 'bridge' ? `${resource.netns ?? ''}@` : '';
  return `${resource.kind}-${where}${resource.name}.json`;
}

/** Marks a namespace or bridge as made by hvkit (call right after creating it). */
export async function markCreated(resource: OwnedResource): Promise<void> {
  await mkdir(MARKS, { recursive: true });
  await writeFile(join(MARKS, fileName(resource)), JSON.stringify(resource));
}

/** Whether hvkit made this existing namespace or bridge (another VM may still use it). */
export async function madeByHvkit(resource: OwnedResource): Promise<boolean> {
  try {
    await readFile(join(MARKS, fileName(resource)));
    return true;
  } catch {
    return false;
  }
}

async function unmark(resource: OwnedResource): Promise<void> {
  await rm(join(MARKS, fileName(resource)), { force: true });
}

export async function recordOwned(vmName: string, resource: OwnedResource): Promise<void> {
  const dir = directory(vmName);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, fileName(resource)), JSON.stringify(resource));
}

async function forget(vmName: string, resource: OwnedResource): Promise<void> {
  await rm(join(directory(vmName), fileName(resource)), { force: true });
}

/** Links in a namespace other than loopback and `except`. */
async function otherLinks(
  netns: string | undefined,
  except: ReadonlySet<string>,
): Promise<string[]> {
  const out = await ip(['-j', 'link', 'show'], netns);
  const links = JSON.parse(out) as { ifname?: string }[];
  return links.map((l) => l.ifname ?? '').filter((n) => n && n !== 'lo' && !except.has(n));
}

async function bridgePorts(name: string, netns?: string): Promise<string[]> {
  const out = await ip(['-j', 'link', 'show', 'master', name], netns);
  return (JSON.parse(out) as { ifname?: string }[]).map((l) => l.ifname ?? '').filter(Boolean);
}

/**
 * Removes what a VM recorded, bridges first, each only when nothing else
 * uses it; returns what it removed and what it left (in use by another).
 */
export async function releaseOwned(
  vmName: string,
  resources: readonly OwnedResource[],
  log: (message: string) => void,
): Promise<{ removed: string[]; kept: string[] }> {
  const removed: string[] = [];
  const kept: string[] = [];
  const bridges = resources.filter((r) => r.kind === 'bridge');
  const spaces = resources.filter((r) => r.kind === 'netns');
  const goneBridges = new Map<string, Set<string>>();
  for (const b of bridges) {
    const label = `bridge ${b.name}${b.netns ? ` in ${b.netns}` : ''}`;
    try {
      if ((b.netns && !(await netnsExists(b.netns))) || !(await linkExists(b.name, b.netns))) {
        await forget(vmName, b);
        await unmark(b);
        continue;
      }
      const ports = await bridgePorts(b.name, b.netns);
      if (ports.length > 0) {
        kept.push(`${label} (ports ${ports.join(', ')})`);
        continue;
      }
      await deleteLink(b.name, b.netns);
      await forget(vmName, b);
      await unmark(b);
      removed.push(label);
      const key = b.netns ?? '';
      goneBridges.set(key, (goneBridges.get(key) ?? new Set()).add(b.name));
    } catch (error) {
      log(`network: cannot remove ${label}: ${(error as Error).message}`);
    }
  }
  for (const s of spaces) {
    try {
      if (!(await netnsExists(s.name))) {
        await forget(vmName, s);
        await unmark(s);
        continue;
      }
      const others = await otherLinks(s.name, goneBridges.get(s.name) ?? new Set());
      if (others.length > 0) {
        kept.push(`namespace ${s.name} (holds ${others.join(', ')})`);
        continue;
      }
      await deleteNetns(s.name);
      await forget(vmName, s);
      await unmark(s);
      removed.push(`namespace ${s.name}`);
    } catch (error) {
      log(`network: cannot remove namespace ${s.name}: ${(error as Error).message}`);
    }
  }
  return { removed, kept };
}

/** What an earlier run of this VM recorded and did not remove (it was killed). */
export async function leftovers(vmName: string): Promise<OwnedResource[]> {
  let names: string[];
  try {
    names = await readdir(directory(vmName));
  } catch {
    return [];
  }
  const out: OwnedResource[] = [];
  for (const name of names) {
    try {
      const parsed = JSON.parse(
        await readFile(join(directory(vmName), name), 'utf8'),
      ) as OwnedResource;
      if (
        (parsed.kind === 'netns' || parsed.kind === 'bridge') &&
        typeof parsed.name === 'string'
      ) {
        out.push(parsed);
      }
    } catch {
      await rm(join(directory(vmName), name), { force: true });
    }
  }
  return out;
}

/**
 * Makes sure a namespace or bridge exists for a VM: creates it (and marks
 * it) when missing; when it exists and hvkit made it, the VM joins it. Either
 * way the VM records it, to remove it when it is left empty.
 */
export async function useShared(
  vmName: string,
  resource: OwnedResource,
  exists: () => Promise<boolean>,
  create: () => Promise<void>,
): Promise<OwnedResource | undefined> {
  if (!(await exists())) {
    await create();
    await markCreated(resource);
  } else if (!(await madeByHvkit(resource))) {
    return undefined;
  }
  await recordOwned(vmName, resource);
  return resource;
}
