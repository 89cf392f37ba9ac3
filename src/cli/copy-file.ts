import { open, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { Command } from 'commander';
import { callVm, socketFor, type TargetOptions, targetOptions, withVm } from './control-client.ts';

interface CopyOptions extends TargetOptions {
  toGuest: string;
  overwrite?: boolean;
  createPath?: boolean;
}

/** Bytes per control request (base64 keeps each line well under the 4 MiB limit). */
const CHUNK = 1024 * 1024;

/**
 * `hvkit copy-file SRC --to-guest DEST`: copies a host file into the guest
 * through the file copy integration service. The file travels to the VM in
 * chunks over the control socket; the host sends it on in 6 KiB fragments.
 */
export function copyFileCommand(): Command {
  const command = new Command('copy-file')
    .description('copy a file into the guest (file copy integration service)')
    .argument('<src>', 'file on this machine')
    .requiredOption('--to-guest <dest>', 'absolute path in the guest (ending in / keeps the name)')
    .option('--overwrite', 'replace the file if it exists in the guest')
    .option('--create-path', "create the destination's missing directories");
  for (const option of targetOptions()) command.addOption(option);
  return command.action((src: string, options: CopyOptions) =>
    withVm(async () => {
      const info = await stat(src).catch((error: NodeJS.ErrnoException) => {
        throw new Error(`cannot read ${src}: ${error.code ?? error.message}`);
      });
      if (!info.isFile()) throw new Error(`${src} is not a regular file`);
      const dest = options.toGuest.endsWith('/')
        ? `${options.toGuest}${basename(src)}`
        : options.toGuest;
      const socket = socketFor(options);
      const started = Date.now();
      const { session } = (await callVm(socket, 'copy-file', {
        op: 'start',
        dest,
        size: info.size,
        overwrite: options.overwrite === true,
        create_path: options.createPath === true,
      })) as { session: string };
      const file = await open(src, 'r');
      try {
        const buffer = Buffer.alloc(CHUNK);
        let offset = 0;
        while (offset < info.size) {
          const { bytesRead } = await file.read(buffer, 0, CHUNK, offset);
          if (bytesRead === 0) throw new Error(`${src} shrank while it was being copied`);
          await callVm(socket, 'copy-file', {
            op: 'write',
            session,
            offset,
            data: buffer.subarray(0, bytesRead).toString('base64'),
          });
          offset += bytesRead;
        }
        await callVm(socket, 'copy-file', { op: 'complete', session });
      } catch (error) {
        // The host already cancelled when the guest failed; this covers local errors.
        await callVm(socket, 'copy-file', { op: 'cancel', session }).catch(() => {});
        throw error;
      } finally {
        await file.close();
      }
      const seconds = (Date.now() - started) / 1000;
      console.log(
        `copied ${info.size} bytes to the guest's ${dest} in ${seconds.toFixed(1)}s` +
          ` (${(info.size / 1024 / 1024 / Math.max(seconds, 0.001)).toFixed(1)} MiB/s)`,
      );
    }),
  );
}
