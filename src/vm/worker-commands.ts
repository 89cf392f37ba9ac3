import type { MessagePort } from 'node:worker_threads';
import type { CommandHandler } from './device-kind.ts';
import type { FromWorker } from './worker-messages.ts';

/** Runs a control command in a worker and posts its result (errors become messages, never crashes). */
export async function runCommand(
  port: MessagePort,
  commands: ReadonlyMap<string, CommandHandler>,
  id: number,
  name: string,
  args: Record<string, unknown>,
): Promise<void> {
  const handler = commands.get(name);
  let message: FromWorker;
  if (!handler) {
    message = { type: 'result', id, ok: false, error: `unknown command ${name}` };
  } else {
    try {
      message = { type: 'result', id, ok: true, result: (await handler(args ?? {})) ?? null };
    } catch (error) {
      message = { type: 'result', id, ok: false, error: (error as Error).message };
    }
  }
  port.postMessage(message);
}

/** Adds handlers to a command table, refusing duplicate names. */
export function addCommands(
  table: Map<string, CommandHandler>,
  commands: Readonly<Record<string, CommandHandler>> | undefined,
): void {
  for (const [name, handler] of Object.entries(commands ?? {})) {
    if (table.has(name)) throw new Error(`two devices define the control command ${name}`);
    table.set(name, handler);
  }
}
