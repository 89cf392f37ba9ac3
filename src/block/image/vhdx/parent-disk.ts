import { access } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { type BlockDevice, ImageFormatError } from '../../block-device.ts';
import type { VhdxMetadata } from './metadata.ts';
import { parseLinkage } from './parent-locator.ts';

/** How deep a chain of differencing disks may go. */
const MAX_CHAIN_DEPTH = 16;

/** What is checked of an opened parent. */
export interface ParentDisk extends BlockDevice {
  readonly guids: { readonly dataWrite: string };
}

/**
 * Finds and opens the parent of a differencing disk ([MS-VHDX] 2.6.2.6):
 * relative_path first (relative to the child's directory, backslashes as
 * separators), then absolute_win32_path when it is a path of this system;
 * the parent's DataWriteGuid must equal parent_linkage (or parent_linkage2)
 * and its logical sector size the child's. The child is at `depth` in its
 * chain; `openAt` opens the parent read-only at the depth it is given.
 */
export async function openParent<D extends ParentDisk>(
  childPath: string,
  metadata: VhdxMetadata,
  depth: number,
  openAt: (path: string, depth: number) => Promise<D>,
): Promise<{ disk: D; path: string }> {
  const S = 'VHDX parent locator';
  if (depth >= MAX_CHAIN_DEPTH) {
    throw new ImageFormatError(S, `differencing chain deeper than ${MAX_CHAIN_DEPTH}`);
  }
  const entries = metadata.parentLocator!.entries;
  const linkageText = entries.get('parent_linkage');
  const linkage = linkageText ? parseLinkage(linkageText) : null;
  if (!linkage) {
    throw new ImageFormatError(
      S,
      `parent_linkage ${JSON.stringify(linkageText ?? null)} is missing or not a GUID`,
    );
  }
  const linkage2Text = entries.get('parent_linkage2');
  const linkage2 = linkage2Text ? parseLinkage(linkage2Text) : null;
  const tried: string[] = [];
  const candidates: string[] = [];
  const relative = entries.get('relative_path');
  if (relative) {
    const p = resolve(dirname(childPath), relative.replaceAll('\\', '/'));
    candidates.push(p);
    tried.push(`relative_path ${JSON.stringify(relative)} (${p})`);
  }
  const absolute = entries.get('absolute_win32_path');
  if (absolute) {
    if (isAbsolute(absolute)) candidates.push(absolute);
    tried.push(`absolute_win32_path ${JSON.stringify(absolute)}`);
  }
  let found: string | null = null;
  for (const c of candidates) {
    try {
      await access(c);
      found = c;
      break;
    } catch {
      // try the next one
    }
  }
  if (!found) {
    throw new ImageFormatError(
      S,
      `parent not found; tried ${tried.length > 0 ? tried.join(', ') : 'no usable path'}`,
    );
  }
  const disk = await openAt(found, depth + 1);
  const actual = disk.guids.dataWrite;
  if (actual !== linkage && actual !== linkage2) {
    await disk.close();
    throw new ImageFormatError(
      S,
      `parent ${found} has DataWriteGuid {${actual}} but parent_linkage is {${linkage}}: the parent changed after this differencing disk was created`,
    );
  }
  if (disk.logicalSectorSize !== metadata.logicalSectorSize) {
    await disk.close();
    throw new ImageFormatError(
      S,
      `parent ${found} has ${disk.logicalSectorSize}-byte sectors, this disk ${metadata.logicalSectorSize}`,
    );
  }
  return { disk, path: found };
}
