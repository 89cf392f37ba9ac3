import { Command } from 'commander';
import {
  ConfigError,
  defaultConfig,
  loadConfig,
  parseDuration,
  type VmConfig,
} from '../vm/config.ts';
import { VirtualMachine } from '../vm/machine.ts';
import { formatStatus, type VmStatus } from '../vm/status.ts';

interface RunOptions {
  duration?: string;
  interval: string;
  json?: boolean;
}

/** `hvkit run [config.yaml]`: boot a VM, show its status live, shut down cleanly. */
export function runCommand(): Command {
  return new Command('run')
    .description(
      'boot a virtual machine (the built-in default without a config file) and show its status',
    )
    .argument('[config]', 'VM configuration file (YAML)')
    .option('-d, --duration <time>', 'run for this long (e.g. 5s, 2m), then shut down cleanly')
    .option('-i, --interval <time>', 'status refresh interval', '1s')
    .option('--json', 'print the final status as JSON')
    .action(async (configPath: string | undefined, options: RunOptions) => {
      process.exitCode = await run(configPath, options);
    });
}

async function run(configPath: string | undefined, options: RunOptions): Promise<number> {
  let config: VmConfig;
  let durationMs: number | undefined;
  let intervalMs: number;
  try {
    config = configPath ? loadConfig(configPath) : defaultConfig();
    durationMs = options.duration ? parseDuration(options.duration) : undefined;
    intervalMs = parseDuration(options.interval);
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`hvkit run: ${error.message}`);
      return 2;
    }
    throw error;
  }
  const live = process.stdout.isTTY === true && !options.json;
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  const stop = (): void => wake?.();

  const logs: string[] = [];
  let vm: VirtualMachine;
  try {
    vm = await VirtualMachine.start(config, {
      onLog: (line) => {
        logs.push(line);
        if (!live) console.error(line);
      },
      onFailure: (error) => {
        failure = error;
        stop();
      },
    });
  } catch (error) {
    console.error(`hvkit run: the VM did not boot: ${(error as Error).message}`);
    return 1;
  }
  const first = await vm.status();
  if (!options.json) {
    console.log(
      `${config.name} booted: VMBus ${first.guest.version >>> 16}.${first.guest.version & 0xffff}, ` +
        `${first.guest.channels.length} channel(s); ${durationMs ? `running for ${durationMs / 1000}s` : 'Ctrl-C to stop'}`,
    );
  }

  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  let last: VmStatus = first;
  let drawnLines = 0;
  const draw = (status: VmStatus): void => {
    const text = formatStatus(status);
    if (drawnLines > 0) process.stdout.write(`\x1b[${drawnLines}A\x1b[J`);
    process.stdout.write(`${text}\n`);
    drawnLines = text.split('\n').length;
  };
  const deadline = durationMs === undefined ? Number.POSITIVE_INFINITY : Date.now() + durationMs;
  while (!failure) {
    const remaining = deadline - Date.now();
    if (remaining <= 0) break;
    const stopped = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), Math.min(intervalMs, remaining));
      wake = () => {
        clearTimeout(timer);
        resolve(true);
      };
    });
    if (stopped || failure) break;
    try {
      last = await vm.status();
      if (live) draw(last);
    } catch (error) {
      failure = error as Error;
    }
  }
  process.off('SIGINT', stop);
  process.off('SIGTERM', stop);

  try {
    last = await vm.status();
  } catch {
    // Keep the last status we had.
  }
  let shutdownError: Error | undefined;
  try {
    await vm.stop();
  } catch (error) {
    shutdownError = error as Error;
  }
  if (options.json) {
    console.log(
      JSON.stringify(
        { status: last, failure: failure?.message, shutdown: shutdownError?.message ?? 'clean' },
        null,
        2,
      ),
    );
  } else {
    if (live) draw(last);
    else console.log(formatStatus(last));
    console.log(
      shutdownError
        ? `shutdown failed: ${shutdownError.message}`
        : 'shut down cleanly: guest unloaded the VMBus, host stopped',
    );
  }
  if (failure) {
    console.error(`hvkit run: ${failure.message}`);
    return 1;
  }
  return shutdownError ? 1 : 0;
}
