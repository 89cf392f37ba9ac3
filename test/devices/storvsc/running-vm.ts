/**
 * A running VM for the end-to-end storage tests: `hvkit run` booted with a
 * config and killed when the test ends, and typed views of what its
 * `status` call reports about the SCSI controllers on both sides.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { callVm } from '../../../src/cli/control-client.ts';
import { startVm } from '../../cli/hvkit.ts';

export interface RunningVm {
  readonly control: string;
  readonly exit: Promise<{
    code: number | null;
    signal: NodeJS.Signals | null;
    stdout: string;
    stderr: string;
  }>;
  kill(signal?: NodeJS.Signals): void;
  output(): string;
  status(): Promise<VmStatusJson>;
}

/** What the tests read of `status` (the parts storvsp and storvsc report). */
export interface VmStatusJson {
  host: { devices: { type: string; [k: string]: unknown }[] };
  guest: { devices: { type: string; [k: string]: unknown }[] };
}

/** Boots `hvkit run [config]` with its control socket in `dir`; killed when the test ends. */
export async function bootVm(t: TestContext, dir: string, config?: object): Promise<RunningVm> {
  const control = join(dir, 'control.sock');
  const args: string[] = [];
  if (config) {
    const path = join(dir, 'vm.yaml');
    await writeFile(path, JSON.stringify(config, null, 2));
    args.push(path);
  }
  args.push('--control', control);
  const vm = await startVm(args, 120_000);
  t.after(async () => {
    vm.kill('SIGKILL');
    await vm.exit.catch(() => {});
  });
  return {
    control,
    exit: vm.exit,
    kill: vm.kill,
    output: vm.output,
    status: async () => (await callVm(control, 'status')) as VmStatusJson,
  };
}

export interface GuestDiskJson {
  lun: number;
  capacity: number;
  blockSize: number;
  readOnly: boolean;
  vendor: string;
  product: string;
  serial: string;
  identifier: string;
  uri: string | null;
}

export interface HostDiskJson {
  lun: number;
  capacity: number;
  format: string;
  source: string;
  readOnly: boolean;
  identifier: string;
}

export interface ChannelJson {
  index: number;
  requests: number;
  completions: number;
  bytesRead: number;
  bytesWritten: number;
  errors: number;
}

export function hostController(status: VmStatusJson, index = 0) {
  const c = status.host.devices.find((d) => d.type === 'scsi' && d.controller === index);
  if (!c)
    throw new Error(`no host scsi controller ${index} in ${JSON.stringify(status.host.devices)}`);
  return c as unknown as {
    disks: HostDiskJson[];
    channels: ChannelJson[];
    version: string;
    summary: string;
  };
}

export function guestController(status: VmStatusJson, index = 0) {
  const storvsc = status.guest.devices.find((d) => d.type === 'storvsc') as unknown as
    | {
        controllers: {
          controller: number;
          version: string;
          disks: GuestDiskJson[];
          channels: ChannelJson[];
        }[];
        summary: string;
      }
    | undefined;
  const c = storvsc?.controllers.find((x) => x.controller === index);
  if (!c)
    throw new Error(
      `no guest storvsc controller ${index} in ${JSON.stringify(status.guest.devices)}`,
    );
  return c;
}
