/** A VM with one or more NICs booted by `hvkit run`, for the end-to-end NIC tests. */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { callVm } from '../../src/cli/control-client.ts';
import { hvkit, startVm } from '../cli/hvkit.ts';

export interface Vm {
  readonly socket: string;
  readonly exit: ReturnType<typeof hvkit>;
  kill(signal?: NodeJS.Signals): void;
}

export async function boot(
  dir: string,
  name: string,
  nic: object | object[],
  others: object[] = [],
): Promise<Vm> {
  const file = join(dir, `${name}.yaml`);
  const socket = join(dir, `${name}.sock`);
  await writeFile(
    file,
    JSON.stringify(
      {
        name,
        memory: '96M',
        devices: [
          ...(Array.isArray(nic) ? nic : [nic]).map((n) => ({ type: 'nic', ...n })),
          ...others,
        ],
      },
      null,
      2,
    ),
  );
  const vm = await startVm([file, '--control', socket], 120_000);
  return { socket, exit: vm.exit, kill: vm.kill };
}

/** `hvkit exec` in the VM's guest namespace; resolves with stdout (rejects on a non-zero exit). */
export async function guestExec(vm: Vm, argv: string[], timeoutMs = 60_000): Promise<string> {
  const result = await hvkit(['exec', '--socket', vm.socket, '--', ...argv], { timeoutMs });
  if (result.code !== 0)
    throw new Error(`${argv.join(' ')} exited ${result.code}: ${result.stderr}${result.stdout}`);
  return result.stdout;
}

export async function stopVm(vm: Vm): Promise<void> {
  await callVm(vm.socket, 'stop').catch(() => {});
  const result = await vm.exit;
  assert.equal(result.code, 0, result.stderr);
}
