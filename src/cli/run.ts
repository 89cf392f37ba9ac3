import { Command } from 'commander';
import logUpdate from 'log-update';
import {
  ConfigError,
  defaultConfig,
  loadConfig,
  parseDuration,
  UnitError,
  type VmConfig,
} from '../vm/config.ts';
import { controlSocketPath } from '../vm/control-path.ts';
import { ControlServer } from '../vm/control-server.ts';
import { VirtualMachine } from '../vm/machine.ts';
import { formatStatus, type VmStatus } from '../vm/status.ts';

interface RunOptions {
  duration?: string;
  interval: string;
  json?: boolean;
  control?: string | false;
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
    .option(
      '--control <path>',
      'control socket path (default: per VM name in the hvkit run directory)',
    )
    .option('--no-control', 'do not listen on a control socket')
    .action(async (configPath: string | undefined, options: RunOptions) => {
      process.exitCode = await run(configPath, options);
    });
}

interface StopRequest {
  restart: boolean;
  exitCode: number;
}

async function run(configPath: string | undefined, options: RunOptions): Promise<number> {
  let config: VmConfig;
  let durationMs: number | undefined;
  let intervalMs: number;
  let socketPath: string | undefined;
  try {
    config = configPath ? loadConfig(configPath) : defaultConfig();
    durationMs = options.duration ? parseDuration(options.duration) : undefined;
    intervalMs = parseDuration(options.interval);
    socketPath =
      options.control === false ? undefined : (options.control ?? controlSocketPath(config.name));
  } catch (error) {
    if (error instanceof ConfigError || error instanceof UnitError) {
      console.error(`hvkit run: ${error.message}`);
      return 2;
    }
    throw error;
  }
  const live = process.stdout.isTTY === true && !options.json;
  // The duration counts from the first boot.
  let deadline = Number.POSITIVE_INFINITY;

  let vm: VirtualMachine | undefined;
  let wake: (() => void) | undefined;
  let interrupted = false;
  let stopRequest: StopRequest | undefined;
  const stop = (): void => wake?.();
  const onSignal = (): void => {
    interrupted = true;
    stop();
  };

  const control = socketPath
    ? new ControlServer(socketPath, async (command, args) => {
        const current = vm;
        if (!current) throw new Error('the VM is not running (booting or restarting)');
        if (command === 'status') return current.status();
        if (command === 'commands') return ['status', 'commands', 'stop', ...current.commands()];
        if (command === 'stop') {
          stopRequest = { restart: false, exitCode: 0 };
          stop();
          return 'stopping';
        }
        return current.command(command, args);
      })
    : undefined;
  try {
    await control?.start();
  } catch (error) {
    console.error(`hvkit run: ${(error as Error).message}`);
    return 1;
  }
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  let exitCode = 0;
  try {
    for (;;) {
      let failure: Error | undefined;
      stopRequest = undefined;
      try {
        vm = await VirtualMachine.start(config, {
          onLog: (line) => {
            if (!live) console.error(line);
          },
          onFailure: (error) => {
            failure = error;
            stop();
          },
          onStopRequest: (request) => {
            stopRequest = request;
            stop();
          },
        });
      } catch (error) {
        console.error(`hvkit run: the VM did not boot: ${(error as Error).message}`);
        return 1;
      }
      if (durationMs !== undefined && deadline === Number.POSITIVE_INFINITY)
        deadline = Date.now() + durationMs;
      const first = await vm.status();
      if (!options.json) {
        console.log(
          `${config.name} booted: VMBus ${first.guest.version >>> 16}.${first.guest.version & 0xffff}, ` +
            `${first.guest.channels.length} channel(s); ` +
            `${durationMs ? `running for ${durationMs / 1000}s` : 'Ctrl-C to stop'}` +
            (socketPath ? `; control socket ${socketPath}` : ''),
        );
      }
      let last: VmStatus = first;
      // The live view redraws in place, every line fitted to the terminal's width.
      const draw = (status: VmStatus): void => {
        logUpdate(formatStatus(status, process.stdout.columns || 80));
      };
      while (!failure && !interrupted && !stopRequest) {
        const remaining = deadline - Date.now();
        if (remaining <= 0) break;
        const woken = await new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(false), Math.min(intervalMs, remaining));
          wake = () => {
            clearTimeout(timer);
            resolve(true);
          };
        });
        if (woken) break;
        try {
          last = await vm.status();
          if (live) draw(last);
        } catch (error) {
          failure = error as Error;
        }
      }
      try {
        last = await vm.status();
      } catch {
        // Keep the last status we had.
      }
      let shutdownError: Error | undefined;
      const stopping = vm;
      vm = undefined;
      try {
        await stopping.stop();
      } catch (error) {
        shutdownError = error as Error;
      }
      if (options.json) {
        console.log(
          JSON.stringify(
            {
              status: last,
              failure: failure?.message,
              shutdown: shutdownError?.message ?? 'clean',
            },
            null,
            2,
          ),
        );
      } else {
        if (live) {
          draw(last);
          logUpdate.done();
        } else console.log(formatStatus(last));
        console.log(
          shutdownError
            ? `shutdown failed: ${shutdownError.message}`
            : 'shut down cleanly: guest unloaded the VMBus, host stopped',
        );
      }
      if (failure) {
        console.error(`hvkit run: ${failure.message}`);
        exitCode = 1;
        break;
      }
      if (shutdownError) {
        exitCode = 1;
        break;
      }
      const request = stopRequest as StopRequest | undefined;
      if (request?.restart && !interrupted && Date.now() < deadline) {
        if (!options.json) console.log(`${config.name} restarting`);
        continue;
      }
      exitCode = request?.exitCode ?? 0;
      break;
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await control?.stop();
  }
  return exitCode;
}
