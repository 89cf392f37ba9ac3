import { runOk } from '../../real-tools.ts';

/**
 * The real qemu tools for the interop tests (run through test/real-tools.ts:
 * a tool that exits non-zero fails the test with its output).
 */
export const qemuImg = (...args: string[]) => runOk('qemu-img', args);
export const qemuIo = (...args: string[]) => runOk('qemu-io', args);

export async function qemuInfo(path: string, format?: string): Promise<Record<string, unknown>> {
  const args = ['info', '--output=json', ...(format ? ['-f', format] : []), path];
  return JSON.parse(await qemuImg(...args)) as Record<string, unknown>;
}
