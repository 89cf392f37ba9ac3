import { Command } from 'commander';
import { callVm, socketFor, type TargetOptions, targetOptions, withVm } from './control-client.ts';

/**
 * `hvkit backup`: freezes the guest through the backup (VSS) integration
 * service (it runs its freeze hooks), then thaws it. Exits non-zero when the
 * guest cannot freeze or does not answer in time.
 */
export function backupCommand(): Command {
  const command = new Command('backup').description(
    'freeze the guest for a backup, then thaw it (backup integration service)',
  );
  for (const option of targetOptions()) command.addOption(option);
  return command.action((options: TargetOptions) =>
    withVm(async () => {
      const result = (await callVm(socketFor(options), 'backup')) as {
        freezeMs: number;
        frozenMs: number;
        thawMs: number;
      };
      console.log(
        `backup done: the guest froze in ${result.freezeMs} ms, stayed frozen ${result.frozenMs} ms, thawed in ${result.thawMs} ms`,
      );
    }),
  );
}
