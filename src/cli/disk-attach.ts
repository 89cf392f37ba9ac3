import { access } from 'node:fs/promises';
import { resolve } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { DISK_FORMATS } from '../block/image/open.ts';
import { isNbdUri } from '../nbd/uri.ts';
import { formatBytes } from '../vm/units.ts';
import { callVm, socketFor, type TargetOptions, targetOptions, withVm } from './control-client.ts';

/**
 * `hvkit disk attach` / `hvkit disk detach`: hot-add and hot-remove disks on
 * a running VM's SCSI controller through its control socket. The host
 * attaches (or detaches) the disk and announces it on the bus; the command
 * then waits until the guest has rescanned and its NBD export appeared (or
 * went away), and prints it.
 */

function lunNumber(text: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n > 254) throw new InvalidArgumentError('a LUN is an integer 0..254');
  return n;
}

function controllerNumber(text: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n > 63) {
    throw new InvalidArgumentError(
      'a controller is an integer 0..63 (its order among the scsi devices)',
    );
  }
  return n;
}

interface GuestController {
  controller: number;
  disks: { lun: number; uri: string | null; capacity: number }[];
}

/** Polls the guest's exports until `done` holds for the controller, or the time is up. */
async function waitForGuest(
  socket: string,
  controller: number,
  done: (c: GuestController | undefined) => boolean,
  timeoutMs: number,
): Promise<GuestController | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const list = (await callVm(socket, 'scsi-exports')) as GuestController[];
    const mine = list.find((c) => c.controller === controller);
    if (done(mine)) return mine;
    if (Date.now() > deadline) return undefined;
    await new Promise((r) => setTimeout(r, 100));
  }
}

interface AttachOptions extends TargetOptions {
  controller: number;
  lun?: number;
  readOnly?: boolean;
  format?: string;
  json?: boolean;
  wait: string;
}

export function attachCommand(): Command {
  const command = new Command('attach')
    .description('hot-add a disk image to a running VM (its guest rescans and exports it)')
    .argument('<image>', 'raw, VHDX or VHD image (or an nbd:// URI)')
    .option(
      '--controller <n>',
      'SCSI controller (order of the scsi devices in the config)',
      controllerNumber,
      0,
    )
    .option('--lun <n>', 'LUN to attach at (default: the lowest free one)', lunNumber)
    .option('--read-only', 'attach write-protected')
    .addOption(
      new Option('--format <format>', 'image format (default: detected)').choices(DISK_FORMATS),
    )
    .option('--wait <seconds>', 'how long to wait for the guest to export it', '15')
    .option('--json', 'print JSON');
  for (const option of targetOptions()) command.addOption(option);
  return command.action((image: string, options: AttachOptions) =>
    withVm(async () => {
      const uri = isNbdUri(image);
      const path = uri ? image : resolve(image);
      if (!uri) {
        await access(path).catch(() => {
          throw new Error(`cannot attach ${path}: no such file`);
        });
      }
      const socket = socketFor(options);
      const attached = (await callVm(socket, 'scsi-attach', {
        path,
        controller: options.controller,
        ...(options.lun !== undefined ? { lun: options.lun } : {}),
        readOnly: options.readOnly === true,
        ...(options.format ? { format: options.format } : {}),
      })) as { controller: number; lun: number; source: string; capacity: number; format: string };
      const guest = await waitForGuest(
        socket,
        attached.controller,
        (c) => !!c?.disks.some((d) => d.lun === attached.lun && d.uri),
        Number(options.wait) * 1000,
      );
      const exported = guest?.disks.find((d) => d.lun === attached.lun)?.uri ?? null;
      if (options.json) {
        console.log(JSON.stringify({ ...attached, uri: exported }, null, 2));
        return;
      }
      console.log(
        `attached ${attached.source} to scsi${attached.controller} LUN ${attached.lun} (${formatBytes(attached.capacity)} ${attached.format})`,
      );
      console.log(
        exported
          ? `guest export: ${exported}`
          : 'the guest has not exported it yet (see hvkit status)',
      );
    }),
  );
}

interface DetachOptions extends TargetOptions {
  controller: number;
  lun: number;
  json?: boolean;
  wait: string;
}

export function detachCommand(): Command {
  const command = new Command('detach')
    .description('hot-remove a disk from a running VM (I/O still running on it fails)')
    .requiredOption('--lun <n>', 'LUN to detach', lunNumber)
    .option('--controller <n>', 'SCSI controller', controllerNumber, 0)
    .option('--wait <seconds>', 'how long to wait for the guest to drop its export', '15')
    .option('--json', 'print JSON');
  for (const option of targetOptions()) command.addOption(option);
  return command.action((options: DetachOptions) =>
    withVm(async () => {
      const socket = socketFor(options);
      const detached = (await callVm(socket, 'scsi-detach', {
        controller: options.controller,
        lun: options.lun,
      })) as { controller: number; lun: number; source: string };
      const guest = await waitForGuest(
        socket,
        detached.controller,
        (c) => !c?.disks.some((d) => d.lun === detached.lun),
        Number(options.wait) * 1000,
      );
      if (options.json) {
        console.log(JSON.stringify({ ...detached, guestRemoved: guest !== undefined }, null, 2));
        return;
      }
      console.log(
        `detached ${detached.source} from scsi${detached.controller} LUN ${detached.lun}`,
      );
      console.log(
        guest
          ? 'the guest removed its export'
          : 'the guest still lists the disk (see hvkit status)',
      );
    }),
  );
}
