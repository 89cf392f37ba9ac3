import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

/**
 * Runs the real qemu tools for the interop tests. The test command
 * installs them (scripts/ensure-tools.sh); a missing tool fails the test
 * with the reason, it never skips it.
 */
const run = promisify(execFile);

export interface ToolResult {
  readonly stdout: string;
  readonly stderr: string;
  readonly code: number;
}

/** Runs a tool; resolves with its exit code (non-zero is not an error here). */
export async function tool(command: string, args: readonly string[]): Promise<ToolResult> {
  try {
    const { stdout, stderr } = await run(command, [...args], { maxBuffer: 64 << 20 });
    return { stdout, stderr, code: 0 };
  } catch (error) {
    const e = error as { code?: unknown; stdout?: string; stderr?: string; message: string };
    if (typeof e.code !== 'number') throw new Error(`cannot run ${command}: ${e.message}`);
    return { stdout: e.stdout ?? '', stderr: e.stderr ?? '', code: e.code };
  }
}

/** Runs a tool and fails with its output unless it exits 0. */
export async function must(command: string, args: readonly string[]): Promise<string> {
  const r = await tool(command, args);
  if (r.code !== 0) {
    throw new Error(`${command} ${args.join(' ')} exited ${r.code}:\n${r.stdout}${r.stderr}`);
  }
  return r.stdout;
}

export const qemuImg = (...args: string[]) => must('qemu-img', args);
export const qemuIo = (...args: string[]) => must('qemu-io', args);

export async function qemuInfo(path: string, format?: string): Promise<Record<string, unknown>> {
  const args = ['info', '--output=json', ...(format ? ['-f', format] : []), path];
  return JSON.parse(await qemuImg(...args)) as Record<string, unknown>;
}
