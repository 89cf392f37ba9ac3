import { access, unlink } from 'node:fs/promises';
import { extname } from 'node:path';
import cliProgress from 'cli-progress';
import { Command, type Command as CommandType, InvalidArgumentError, Option } from 'commander';
import { type BlockDevice, DiskIoError, ImageFormatError } from '../block/block-device.ts';
import { CheckNotSupported, type CheckReport, checkImage } from '../block/image/check.ts';
import { compareDisks, copyDisk, type ProgressCallback } from '../block/image/copy.ts';
import { createImage } from '../block/image/create.ts';
import { type ImageInfo, inspectImage } from '../block/image/inspect.ts';
import { DISK_FORMATS, type DiskFormat } from '../block/image/open.ts';
import { openDisk } from '../nbd/open-disk.ts';
import { formatBytes } from '../vm/units.ts';
import { attachCommand, detachCommand } from './disk-attach.ts';
import { serveCommand } from './disk-serve.ts';

/**
 * `hvkit disk`: create, info, check, convert, compare (and serve, from
 * disk-serve.ts) for raw, VHDX and VHD images. Output, exit codes and flags
 * follow qemu-img where it has the same verb. Nothing existing is ever
 * overwritten: create and convert refuse a target path that exists.
 */

const UNITS: Record<string, number> = {
  '': 1,
  k: 2 ** 10,
  m: 2 ** 20,
  g: 2 ** 30,
  t: 2 ** 40,
  p: 2 ** 50,
  e: 2 ** 60,
};

/** Parses a size as qemu-img does: bytes, or a number with k/M/G/T/P/E (powers of 1024). */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgtpe]?)(?:i?b)?$/i.exec(text.trim());
  if (!m) {
    throw new InvalidArgumentError(`"${text}" is not a size (use bytes or a suffix: 64M, 10G, 1T)`);
  }
  const bytes = Number(m[1]) * UNITS[m[2]!.toLowerCase()]!;
  if (!Number.isSafeInteger(bytes)) {
    throw new InvalidArgumentError(`"${text}" is not a whole number of bytes below 2^53`);
  }
  return bytes;
}

function parseFormat(text: string): DiskFormat {
  if (!(DISK_FORMATS as readonly string[]).includes(text)) {
    throw new InvalidArgumentError(`"${text}" is not a format (${DISK_FORMATS.join(', ')})`);
  }
  return text as DiskFormat;
}

function parseSector(text: string): 512 | 4096 {
  if (text !== '512' && text !== '4096')
    throw new InvalidArgumentError('the logical sector size is 512 or 4096');
  return Number(text) as 512 | 4096;
}

const formatOption = (flags: string, what: string) =>
  new Option(flags, what).choices(DISK_FORMATS).argParser(parseFormat);
const typeOption = () =>
  new Option('--type <type>', 'fixed (all space allocated now) or dynamic').choices([
    'fixed',
    'dynamic',
  ]);

function describeError(error: unknown): string {
  if (error instanceof ImageFormatError || error instanceof DiskIoError) return error.message;
  if (error instanceof Error) return error.message;
  return String(error);
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

function formatFromName(path: string): DiskFormat {
  const ext = extname(path).toLowerCase();
  return ext === '.vhdx' ? 'vhdx' : ext === '.vhd' ? 'vhd' : 'raw';
}

/** A progress bar on a terminal; nothing otherwise. */
function progressBar(enabled: boolean): { update: ProgressCallback; stop(): void } {
  if (!enabled) return { update: () => {}, stop: () => {} };
  const bar = new cliProgress.SingleBar(
    { format: '    ({percentage}/100%) {bar} {value}/{total} MiB', hideCursor: true },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    update(done, total) {
      const mib = (n: number) => Math.round(n / 2 ** 20);
      if (!started) {
        bar.start(mib(total), 0);
        started = true;
      }
      bar.update(mib(done));
    },
    stop() {
      if (started) bar.stop();
    },
  };
}

interface CreateOptions {
  format?: DiskFormat;
  type?: 'fixed' | 'dynamic';
  blockSize?: number;
  logicalSector?: 512 | 4096;
  parent?: string;
}

function createCommand(): CommandType {
  return new Command('create')
    .description('create a disk image (refuses to overwrite an existing file)')
    .argument('<file>', 'image to create')
    .argument(
      '[size]',
      "virtual size: bytes or 64M, 10G, 1T... (a differencing image takes its parent's)",
      parseSize,
    )
    .addOption(
      formatOption('-f, --format <format>', 'image format (default: from the extension, else raw)'),
    )
    .addOption(typeOption())
    .option(
      '--block-size <size>',
      'block size (VHDX: 1M-256M, default 32M; VHD: default 2M)',
      parseSize,
    )
    .option(
      '--logical-sector <bytes>',
      'logical sector size of a VHDX: 512 (default) or 4096',
      parseSector,
    )
    .option('--parent <file>', 'make a differencing VHDX over this parent')
    .action(async (file: string, size: number | undefined, o: CreateOptions) => {
      const format = o.format ?? formatFromName(file);
      try {
        if (size === undefined && !o.parent) throw new Error('a size is required');
        if (await exists(file)) throw new Error(`${file} already exists; refusing to overwrite it`);
        await createImage(file, {
          format,
          ...(size !== undefined ? { size } : {}),
          ...(o.type ? { type: o.type } : {}),
          ...(o.blockSize !== undefined ? { blockSize: o.blockSize } : {}),
          ...(o.logicalSector ? { logicalSectorSize: o.logicalSector } : {}),
          ...(o.parent ? { parent: o.parent } : {}),
        });
        const info = await inspectImage(file, format);
        const details = [
          `fmt=${format}`,
          `size=${info['virtual-size']}`,
          ...(o.parent ? [`backing_file=${o.parent}`] : [`type=${o.type ?? 'dynamic'}`]),
          ...(info['cluster-size'] ? [`block_size=${info['cluster-size']}`] : []),
        ];
        console.log(`Formatting '${file}', ${details.join(' ')}`);
      } catch (error) {
        console.error(`hvkit disk create: ${describeError(error)}`);
        process.exitCode = 1;
      }
    });
}

function printInfo(info: ImageInfo, indent = ''): void {
  const line = (text: string) => console.log(`${indent}${text}`);
  line(`image: ${info.filename}`);
  line(`file format: ${info.format}`);
  line(`virtual size: ${formatBytes(info['virtual-size'])} (${info['virtual-size']} bytes)`);
  line(`disk size: ${formatBytes(info['actual-size'])}`);
  if (info['cluster-size']) line(`cluster_size: ${info['cluster-size']}`);
  if (info['backing-filename']) {
    line(
      `backing file: ${info['backing-filename']} (actual path: ${info['full-backing-filename']})`,
    );
  }
  if (info['dirty-flag']) line('dirty flag: yes (a pending log was replayed in memory only)');
  const specific = info['format-specific'];
  if (specific) {
    line('Format specific information:');
    for (const [key, value] of Object.entries(specific.data)) {
      const shown =
        value !== null && typeof value === 'object'
          ? Object.entries(value as Record<string, unknown>)
              .map(([k, v]) => `${k} ${v}`)
              .join(', ')
          : String(value);
      line(`    ${key}: ${shown}`);
    }
  }
  if (info['backing-image']) {
    console.log('');
    printInfo(info['backing-image'], indent);
  }
}

function infoCommand(): CommandType {
  return new Command('info')
    .description('show what an image is: format, sizes, blocks, GUIDs, parent chain')
    .argument('<file>', 'image')
    .addOption(formatOption('-f, --format <format>', 'image format (default: detected)'))
    .option('--json', 'print JSON (the field names of qemu-img info --output=json)')
    .action(async (file: string, o: { format?: DiskFormat; json?: boolean }) => {
      try {
        const info = await inspectImage(file, o.format);
        if (o.json) console.log(JSON.stringify(info, null, 4));
        else printInfo(info);
      } catch (error) {
        console.error(`hvkit disk info: ${describeError(error)}`);
        process.exitCode = 1;
      }
    });
}

function printCheck(report: CheckReport): void {
  for (const r of report.repaired) console.log(`Repaired: ${r}`);
  for (const c of report.corruptions) console.log(`ERROR: ${c}`);
  for (const l of report.leaks) console.log(`Leaked: ${l}`);
  for (const n of report.notes) console.log(`Note: ${n}`);
  if (report.corruptions.length > 0) {
    console.log(`\n${report.corruptions.length} errors were found on the image.`);
    console.log('Data may be corrupted, or further writes to the image may corrupt it.');
  }
  if (report.leaks.length > 0) {
    console.log(`\n${report.leakedBytes} bytes of leaked space were found on the image.`);
    console.log('This means waste of disk space, but no harm to data.');
  }
  if (report.corruptions.length === 0 && report.leaks.length === 0) {
    console.log('No errors were found on the image.');
  }
}

function checkCommand(): CommandType {
  return new Command('check')
    .description(
      "check an image's structure (exit 0 clean, 2 corrupt, 3 leaks only, 63 unsupported)",
    )
    .argument('<file>', 'image')
    .addOption(formatOption('-f, --format <format>', 'image format (default: detected)'))
    .option('-r, --repair', 'replay a pending log and repair what can be repaired')
    .option('--json', 'print the report as JSON')
    .action(async (file: string, o: { format?: DiskFormat; repair?: boolean; json?: boolean }) => {
      try {
        const report = await checkImage(file, {
          ...(o.format ? { format: o.format } : {}),
          repair: o.repair ?? false,
        });
        if (o.json) console.log(JSON.stringify(report, null, 4));
        else printCheck(report);
        process.exitCode = report.corruptions.length > 0 ? 2 : report.leaks.length > 0 ? 3 : 0;
      } catch (error) {
        console.error(`hvkit disk check: ${describeError(error)}`);
        process.exitCode = error instanceof CheckNotSupported ? 63 : 1;
      }
    });
}

interface ConvertOptions {
  format?: DiskFormat;
  outputFormat: DiskFormat;
  type?: 'fixed' | 'dynamic';
  blockSize?: number;
  progress: boolean;
}

function convertCommand(): CommandType {
  return new Command('convert')
    .description('copy an image into a new image of any format (refuses an existing target)')
    .argument('<source>', 'image to read (a file, or an nbd:// URI)')
    .argument('<target>', 'image to create')
    .addOption(formatOption('-f, --format <format>', 'source format (default: detected)'))
    .addOption(formatOption('-O, --output-format <format>', 'target format').makeOptionMandatory())
    .addOption(typeOption())
    .option('--block-size <size>', 'block size of the target', parseSize)
    .option('--no-progress', 'no progress bar (it shows only on a terminal)')
    .action(async (source: string, target: string, o: ConvertOptions) => {
      let src: BlockDevice | null = null;
      let dst: BlockDevice | null = null;
      let created = false;
      const bar = progressBar(o.progress && process.stdout.isTTY === true);
      try {
        if (await exists(target))
          throw new Error(`${target} already exists; refusing to overwrite it`);
        src = await openDisk(source, { readOnly: true, ...(o.format ? { format: o.format } : {}) });
        await createImage(target, {
          format: o.outputFormat,
          size: src.size,
          ...(o.type ? { type: o.type } : {}),
          ...(o.blockSize !== undefined ? { blockSize: o.blockSize } : {}),
          ...(o.outputFormat === 'vhdx' && src.logicalSectorSize === 4096
            ? { logicalSectorSize: 4096 }
            : {}),
        });
        created = true;
        dst = await openDisk(target, { format: o.outputFormat });
        await copyDisk(src, dst, bar.update);
        bar.stop();
        await dst.close();
        dst = null;
      } catch (error) {
        bar.stop();
        console.error(`hvkit disk convert: ${describeError(error)}`);
        process.exitCode = 1;
        await dst?.close().catch(() => undefined);
        dst = null;
        if (created) await unlink(target).catch(() => undefined);
      } finally {
        await src?.close().catch(() => undefined);
      }
    });
}

function compareCommand(): CommandType {
  return new Command('compare')
    .description('compare the contents of two images (exit 0 identical, 1 different, 2 error)')
    .argument('<first>', 'image')
    .argument('<second>', 'image')
    .addOption(formatOption('-f, --format <format>', 'format of the first image'))
    .addOption(formatOption('-F, --second-format <format>', 'format of the second image'))
    .option('-s, --strict', 'images of different sizes are different')
    .exitOverride((err) => {
      // Bad arguments are errors (2), not "different" (1).
      process.exit(err.exitCode === 0 ? 0 : 2);
    })
    .action(
      async (
        first: string,
        second: string,
        o: { format?: DiskFormat; secondFormat?: DiskFormat; strict?: boolean },
      ) => {
        let a: BlockDevice | null = null;
        let b: BlockDevice | null = null;
        try {
          a = await openDisk(first, { readOnly: true, ...(o.format ? { format: o.format } : {}) });
          b = await openDisk(second, {
            readOnly: true,
            ...(o.secondFormat ? { format: o.secondFormat } : {}),
          });
          const result = await compareDisks(a, b, { strict: o.strict ?? false });
          if (result.sizeMismatch)
            console.log(
              o.strict ? 'Strict mode: Image size mismatch!' : 'Warning: Image size mismatch!',
            );
          if (result.identical) {
            console.log('Images are identical.');
            process.exitCode = 0;
          } else {
            if (!(o.strict && result.sizeMismatch))
              console.log(`Content mismatch at offset ${result.offset}!`);
            process.exitCode = 1;
          }
        } catch (error) {
          console.error(`hvkit disk compare: ${describeError(error)}`);
          process.exitCode = 2;
        } finally {
          await a?.close().catch(() => undefined);
          await b?.close().catch(() => undefined);
        }
      },
    );
}

export function diskCommand(): CommandType {
  return new Command('disk')
    .description('disk images (raw, VHDX, VHD): create, info, check, convert, compare, serve')
    .addCommand(createCommand())
    .addCommand(infoCommand())
    .addCommand(checkCommand())
    .addCommand(convertCommand())
    .addCommand(compareCommand())
    .addCommand(serveCommand())
    .addCommand(attachCommand())
    .addCommand(detachCommand());
}
