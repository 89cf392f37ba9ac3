import { Command } from 'commander';
import { backupCommand } from './backup.ts';
import { copyFileCommand } from './copy-file.ts';
import { decodeCommand } from './decode.ts';
import { diskCommand } from './disk.ts';
import { execCommand } from './exec.ts';
import { kvpCommand } from './kvp.ts';
import { nicCommand } from './nic.ts';
import { runCommand } from './run.ts';
import { shutdownCommand } from './shutdown.ts';
import { statusCommand, stopCommand } from './status.ts';

/**
 * The `hvkit` command. Each verb lives in its own module under src/cli/ and
 * contributes one commander Command; this file only assembles them.
 */
export function buildProgram(): Command {
  const program = new Command('hvkit')
    .description(
      'Hyper-V synthetic I/O stack: VMBus, storvsc/storvsp, netvsc/netvsp, integration services',
    )
    .version('0.1.0')
    .showHelpAfterError();
  program.addCommand(runCommand());
  program.addCommand(decodeCommand());
  program.addCommand(diskCommand());
  program.addCommand(statusCommand());
  program.addCommand(stopCommand());
  program.addCommand(shutdownCommand());
  program.addCommand(kvpCommand());
  program.addCommand(nicCommand());
  program.addCommand(execCommand());
  program.addCommand(copyFileCommand());
  program.addCommand(backupCommand());
  return program;
}
