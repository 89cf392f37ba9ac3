import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { Command, InvalidArgumentError } from 'commander';
import { callVm, socketFor, type TargetOptions, targetOptions, withVm } from './control-client.ts';

interface GuestNicView {
  index: number;
  mac: string;
  state: string;
  netns: string | null;
  name: string | null;
}

interface ExecOptions extends TargetOptions {
  nic?: number;
}

function nicNumber(text: string): number {
  if (!/^\d+$/.test(text)) throw new InvalidArgumentError('a NIC is its index: 0, 1, ...');
  return Number(text);
}

/** The guest namespace a command runs in: the NIC's, or the first NIC's that has one. */
export async function guestNamespace(socket: string, nic?: number): Promise<string> {
  const views = (await callVm(socket, 'nic-guest-sides')) as GuestNicView[];
  const candidates = views.filter(
    (v) => v.netns !== null && (nic === undefined || v.index === nic),
  );
  const chosen = candidates.sort((a, b) => a.index - b.index)[0];
  if (chosen?.netns) return chosen.netns;
  if (views.length === 0) throw new Error('the guest has no NIC (add a `type: nic` device)');
  if (nic !== undefined && !views.some((v) => v.index === nic)) {
    throw new Error(
      `the guest has no nic${nic}; it has ${views.map((v) => `nic${v.index}`).join(', ')}`,
    );
  }
  throw new Error(
    "the guest's NIC has no namespace (its TAP needs root; without root the NIC runs on the loopback backend)",
  );
}

/**
 * `hvkit exec [--vm NAME] -- CMD...`: runs a command inside the guest's
 * network namespace, where its NIC is eth0 — the guest's programs.
 */
export function execCommand(): Command {
  const command = new Command('exec')
    .description("run a command in the guest's network namespace (where its NIC is eth0)")
    .argument('<command...>', 'the command and its arguments (after --)')
    .option('--nic <n>', "the NIC whose namespace to use (default: the guest's first)", nicNumber);
  for (const option of targetOptions()) command.addOption(option);
  return command.action((argv: string[], options: ExecOptions) =>
    withVm(async () => {
      const netns = await guestNamespace(socketFor(options), options.nic);
      const child = spawn('ip', ['netns', 'exec', netns, ...argv], { stdio: 'inherit' });
      const code = await new Promise<number>((resolve) => {
        child.once('error', (error) => {
          console.error(`hvkit exec: ${error.message}`);
          resolve(127);
        });
        child.once('exit', (status, signal) =>
          resolve(status ?? 128 + (signal ? (constants.signals[signal] ?? 0) : 0)),
        );
      });
      process.exitCode = code;
    }),
  );
}
