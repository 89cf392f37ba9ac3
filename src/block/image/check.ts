import { ImageFormatError } from '../block-device.ts';
import { checkNoOverlap, type Extent } from '../extents.ts';
import { ImageFile } from './image-file.ts';
import { type DiskFormat, detectFormat } from './open.ts';
import { FOOTER_SIZE } from './vhd/footer.ts';
import { readVhdLayout } from './vhd/vhd-disk.ts';
import { BlockAllocator } from './vhdx/allocation.ts';
import { REGION_TABLE_OFFSETS, REGION_TABLE_SIZE } from './vhdx/format.ts';
import { HeaderWriter } from './vhdx/header-writer.ts';
import { readVhdxLayout, type VhdxLayout } from './vhdx/layout.ts';
import { VhdxDisk } from './vhdx/vhdx-disk.ts';

/**
 * `hvkit disk check`: a structural check of an image, as qemu-img check
 * reports it: corruptions (data may be lost or misread), leaks (file space
 * nothing refers to: waste, no harm), and with repair, what was fixed.
 */
export interface CheckReport {
  readonly filename: string;
  readonly format: DiskFormat;
  readonly corruptions: string[];
  readonly leaks: string[];
  leakedBytes: number;
  readonly repaired: string[];
  readonly notes: string[];
}

/** Raised for formats without structure to check (raw). */
export class CheckNotSupported extends Error {
  override readonly name = 'CheckNotSupported';
}

export interface CheckOptions {
  readonly format?: DiskFormat;
  /** Replay a pending log, rewrite a damaged header, footer or region table, trim leaked tails. */
  readonly repair?: boolean;
}

export async function checkImage(path: string, options: CheckOptions = {}): Promise<CheckReport> {
  const format = options.format ?? (await detectFormat(path));
  if (format === 'raw') throw new CheckNotSupported('This image format does not support checks');
  const report: CheckReport = {
    filename: path,
    format,
    corruptions: [],
    leaks: [],
    leakedBytes: 0,
    repaired: [],
    notes: [],
  };
  if (format === 'vhdx') await checkVhdx(path, options.repair ?? false, report);
  else await checkVhd(path, options.repair ?? false, report);
  return report;
}

function isPendingLog(error: unknown): boolean {
  return (
    error instanceof ImageFormatError &&
    error.structure === 'VHDX log' &&
    /pending log/.test(error.message)
  );
}

async function checkVhdx(path: string, repair: boolean, report: CheckReport): Promise<void> {
  if (repair) {
    // A writable open replays a pending log into the file.
    try {
      const disk = await VhdxDisk.open(path);
      const replayed = disk.layout.replayed;
      await disk.close();
      if (replayed) report.repaired.push(`replayed the pending log (${replayed.entries} entries)`);
    } catch (error) {
      if (!(error instanceof ImageFormatError)) throw error;
      // Reported below by the structural read.
    }
  }
  const file = await ImageFile.open(path, !repair);
  try {
    let layout: VhdxLayout;
    try {
      layout = await readVhdxLayout(file, 'refuse');
    } catch (error) {
      if (!isPendingLog(error)) {
        if (error instanceof ImageFormatError) {
          report.corruptions.push(error.message);
          return;
        }
        throw error;
      }
      report.corruptions.push(`${(error as Error).message.replace(/^VHDX log: /, '')}`);
      layout = await readVhdxLayout(file, 'memory');
    }
    const [h1, h2] = layout.headerResults;
    const bad = !h1.ok ? 1 : !h2.ok ? 2 : 0;
    if (bad) {
      const reason = layout.current.otherError ?? '';
      if (repair && !layout.replayed?.inMemory) {
        await new HeaderWriter(file, layout.current).update({ fileWriteGuid: crypto.randomUUID() });
        report.repaired.push(`rewrote header ${bad} (${reason})`);
      } else {
        report.corruptions.push(`header ${bad}: ${reason}`);
      }
    }
    const [t1, t2] = layout.regionTableResults;
    const tables = [
      await file.readStructure(REGION_TABLE_OFFSETS[0], REGION_TABLE_SIZE, 'VHDX region table 1'),
      await file.readStructure(REGION_TABLE_OFFSETS[1], REGION_TABLE_SIZE, 'VHDX region table 2'),
    ];
    const problem = !t1.ok
      ? { slot: 0, text: `region table 1: ${t1.error}` }
      : !t2.ok
        ? { slot: 1, text: `region table 2: ${t2.error}` }
        : Buffer.compare(tables[0]!, tables[1]!) !== 0
          ? { slot: 1, text: 'region tables 1 and 2 differ' }
          : null;
    if (problem) {
      if (repair && !layout.replayed?.inMemory) {
        await file.write(REGION_TABLE_OFFSETS[problem.slot as 0 | 1], tables[1 - problem.slot]!);
        await file.sync();
        report.repaired.push(`rewrote ${problem.text.split(':')[0]} from the other copy`);
      } else {
        report.corruptions.push(problem.text);
      }
    }
    if (layout.metadata.hasParent) {
      try {
        const disk = await VhdxDisk.open(path, { readOnly: true });
        report.notes.push(`parent: ${disk.parentPath}`);
        await disk.close();
      } catch (error) {
        if (!(error instanceof ImageFormatError)) throw error;
        report.corruptions.push(error.message);
      }
    }
    const reusable = new BlockAllocator(layout.extents, layout.fileSize).reusableBytes;
    if (reusable > 0) {
      report.notes.push(`${reusable} bytes inside the file are unused; new blocks will reuse them`);
    }
  } finally {
    await file.close();
  }
}

async function checkVhd(path: string, repair: boolean, report: CheckReport): Promise<void> {
  const file = await ImageFile.open(path, !repair);
  try {
    let layout: Awaited<ReturnType<typeof readVhdLayout>>;
    try {
      layout = await readVhdLayout(file);
    } catch (error) {
      if (error instanceof ImageFormatError) {
        report.corruptions.push(error.message);
        return;
      }
      throw error;
    }
    const footer = layout.footer.bytes;
    if (layout.footerError) {
      if (repair) {
        await file.write(layout.footerOffset, footer);
        report.repaired.push(`rewrote the footer from its copy (${layout.footerError})`);
      } else {
        report.corruptions.push(`footer: ${layout.footerError}`);
      }
    }
    if (layout.dynamic) {
      const copy = await file.readStructure(0, FOOTER_SIZE, 'VHD footer copy');
      if (Buffer.compare(copy, footer) !== 0) {
        if (repair) {
          await file.write(0, footer);
          report.repaired.push('rewrote the footer copy at offset 0');
        } else {
          report.corruptions.push('the footer copy at offset 0 differs from the footer');
        }
      }
    }
    // Leaks: file space before the footer that no structure uses.
    const used: Extent[] = layout.dynamic
      ? [...layout.extents]
      : [{ start: 0, length: layout.footer.currentSize, what: 'data' }];
    checkNoOverlap(used, 'VHD file layout');
    const sorted = used.filter((e) => e.length > 0).sort((a, b) => a.start - b.start);
    let cursor = 0;
    let leaked = 0;
    for (const e of sorted) {
      if (e.start > cursor) leaked += e.start - cursor;
      cursor = Math.max(cursor, e.start + e.length);
    }
    const tail = Math.max(0, layout.footerOffset - cursor);
    leaked += tail;
    if (leaked > 0) {
      if (repair && leaked === tail) {
        await file.write(cursor, footer);
        await file.truncate(cursor + FOOTER_SIZE);
        report.repaired.push(`trimmed ${tail} unused bytes before the footer`);
      } else {
        report.leaks.push(`${leaked} bytes of the file are not used by any block`);
        report.leakedBytes = leaked;
      }
    }
    if (repair) await file.sync();
  } finally {
    await file.close();
  }
}
