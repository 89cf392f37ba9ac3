import { Command } from 'commander';
import { formatStatus, type VmStatus } from '../vm/status.ts';
import { callVm, socketFor, type TargetOptions, targetOptions, withVm } from './control-client.ts';

/** `hvkit status`: the status of a running VM, from its control socket. */
export function statusCommand(): Command {
  const command = new Command('status')
    .description('show the status of a running VM (devices, channels, counters)')
    .option('--json', 'print JSON');
  for (const option of targetOptions()) command.addOption(option);
  return command.action((options: TargetOptions & { json?: boolean }) =>
    withVm(async () => {
      const status = (await callVm(socketFor(options), 'status')) as VmStatus;
      console.log(options.json ? JSON.stringify(status, null, 2) : formatStatus(status));
    }),
  );
}

/** `hvkit stop`: a clean stop of a running VM (the guest unloads the VMBus, the host stops). */
export function stopCommand(): Command {
  const command = new Command('stop').description(
    'stop a running VM cleanly (the guest unloads the VMBus)',
  );
  for (const option of targetOptions()) command.addOption(option);
  return command.action((options: TargetOptions) =>
    withVm(async () => {
      await callVm(socketFor(options), 'stop');
      console.log('stopping');
    }),
  );
}
