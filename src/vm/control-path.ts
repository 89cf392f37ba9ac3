import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';

/**
 * Where a running VM's control socket lives: $HVKIT_RUN_DIR, else
 * $XDG_RUNTIME_DIR/hvkit, else <tmp>/hvkit-<uid>; one socket per VM name.
 */
export function controlDirectory(): string {
  if (process.env.HVKIT_RUN_DIR) return process.env.HVKIT_RUN_DIR;
  if (process.env.XDG_RUNTIME_DIR) return join(process.env.XDG_RUNTIME_DIR, 'hvkit');
  return join(tmpdir(), `hvkit-${userInfo().uid}`);
}

export function controlSocketPath(vmName: string): string {
  if (!/^[A-Za-z0-9._-]+$/.test(vmName)) {
    throw new Error(
      `VM name ${JSON.stringify(vmName)} may only use letters, digits, '.', '_' and '-'`,
    );
  }
  return join(controlDirectory(), `${vmName}.sock`);
}
