import { connect } from 'node:net';
import { Option } from 'commander';
import { controlSocketPath } from '../vm/control-path.ts';
import { type ControlResponse, LineSplitter } from '../vm/control-protocol.ts';

export class ControlError extends Error {
  override readonly name = 'ControlError';
}

export interface TargetOptions {
  vm: string;
  socket?: string;
}

/** The --vm / --socket options every command that talks to a running VM takes. */
export function targetOptions(): Option[] {
  return [
    new Option('--vm <name>', 'name of the running VM').default('hvkit-vm'),
    new Option('--socket <path>', 'control socket of the running VM (instead of --vm)'),
  ];
}

export function socketFor(options: TargetOptions): string {
  return options.socket ?? controlSocketPath(options.vm);
}

/** Sends one control request and resolves with its result; rejects with the VM's error message. */
export function callVm(
  socketPath: string,
  command: string,
  args: Record<string, unknown> = {},
  timeoutMs = 120_000,
): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath);
    socket.setEncoding('utf8');
    const splitter = new LineSplitter();
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new ControlError(`the VM did not answer ${command} within ${timeoutMs / 1000}s`));
    }, timeoutMs);
    const done = (error?: Error, result?: unknown): void => {
      clearTimeout(timer);
      socket.end();
      if (error) reject(error);
      else resolve(result);
    };
    socket.once('connect', () => socket.write(`${JSON.stringify({ id: 1, command, args })}\n`));
    socket.on('data', (text: string) => {
      for (const line of splitter.push(text)) {
        const response = JSON.parse(line) as ControlResponse;
        if (response.id !== 1 && response.id !== -1) continue;
        if (response.ok) done(undefined, response.result);
        else done(new ControlError(response.error));
      }
    });
    socket.once('error', (error: NodeJS.ErrnoException) => {
      const reason =
        error.code === 'ENOENT' || error.code === 'ECONNREFUSED'
          ? `no VM is running with control socket ${socketPath}`
          : error.message;
      done(new ControlError(reason));
    });
    socket.once('close', () => done(new ControlError('the VM closed the control connection')));
  });
}

/** Runs a CLI action that talks to a VM: prints errors plainly and sets a non-zero exit code. */
export async function withVm(action: () => Promise<void>): Promise<void> {
  try {
    await action();
  } catch (error) {
    if (error instanceof ControlError || error instanceof Error) {
      console.error(`hvkit: ${error.message}`);
      process.exitCode = 1;
      return;
    }
    throw error;
  }
}
