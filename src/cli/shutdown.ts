import { Command } from 'commander';
import { callVm, socketFor, type TargetOptions, targetOptions, withVm } from './control-client.ts';

interface ShutdownOptions extends TargetOptions {
  force?: boolean;
  restart?: boolean;
  hibernate?: boolean;
  message?: string;
}

/**
 * `hvkit shutdown`: asks the guest of a running VM, through its shutdown
 * integration service, to shut down (or restart). Exits non-zero when the
 * guest refuses.
 */
export function shutdownCommand(): Command {
  const command = new Command('shutdown')
    .description('ask the guest to shut down (or restart) through the shutdown integration service')
    .option('--force', 'a forced shutdown (the guest still shuts down cleanly)')
    .option('--restart', 'restart instead of shutting down (hvkit run boots the VM again)')
    .option('--hibernate', 'hibernate instead (guests that cannot refuse with E_FAIL)')
    .option('--message <text>', 'text shown to the guest with the request');
  for (const option of targetOptions()) command.addOption(option);
  return command.action((options: ShutdownOptions) =>
    withVm(async () => {
      const result = (await callVm(socketFor(options), 'shutdown', {
        force: options.force === true,
        restart: options.restart === true,
        hibernate: options.hibernate === true,
        ...(options.message !== undefined ? { message: options.message } : {}),
      })) as { statusName: string; action: string };
      console.log(
        `the guest accepted the ${result.action} with ${result.statusName} and is stopping`,
      );
    }),
  );
}
