/**
 * The control socket's protocol: one JSON object per line each way.
 * Requests name a command and its arguments; every request gets exactly
 * one response with the same id.
 */
export interface ControlRequest {
  readonly id: number;
  readonly command: string;
  readonly args?: Record<string, unknown>;
}

export type ControlResponse =
  | { readonly id: number; readonly ok: true; readonly result: unknown }
  | { readonly id: number; readonly ok: false; readonly error: string };

/** Longest request line accepted (file contents travel in chunks, not in one line). */
export const MAX_CONTROL_LINE = 4 * 1024 * 1024;

/** Splits a byte stream into lines, refusing lines longer than the limit. */
export class LineSplitter {
  private pending = '';

  constructor(private readonly limit = MAX_CONTROL_LINE) {}

  /** Feeds text; returns the complete lines, or throws when a line grows past the limit. */
  push(text: string): string[] {
    this.pending += text;
    const lines = this.pending.split('\n');
    this.pending = lines.pop() ?? '';
    if (this.pending.length > this.limit) {
      this.pending = '';
      throw new Error(`control line longer than ${this.limit} bytes`);
    }
    return lines.filter((line) => line.trim() !== '');
  }
}

export function parseRequest(line: string): ControlRequest | string {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return 'request is not valid JSON';
  }
  if (typeof value !== 'object' || value === null) return 'request must be a JSON object';
  const { id, command, args } = value as Record<string, unknown>;
  if (typeof id !== 'number' || !Number.isSafeInteger(id)) return 'request needs a numeric id';
  if (typeof command !== 'string' || command === '') return 'request needs a command name';
  if (args !== undefined && (typeof args !== 'object' || args === null || Array.isArray(args))) {
    return 'request args must be an object';
  }
  return { id, command, ...(args ? { args: args as Record<string, unknown> } : {}) };
}
