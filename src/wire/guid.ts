import { WireError } from './errors.ts';

/**
 * GUIDs travel in the mixed-endian order of the Windows/UEFI GUID structure:
 * data1 (u32) and data2/data3 (u16) little-endian, data4 (8 bytes) as written.
 * Canonical strings are lowercase 8-4-4-4-12.
 */
const canonical = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export const NULL_GUID = '00000000-0000-0000-0000-000000000000';

export function isGuid(text: string): boolean {
  return canonical.test(text.toLowerCase());
}

export function writeGuid(bytes: Uint8Array, offset: number, text: string): void {
  const lower = text.toLowerCase();
  if (!canonical.test(lower)) {
    throw new WireError(`not a GUID: ${JSON.stringify(text)}`);
  }
  const hex = lower.replaceAll('-', '');
  const raw = new Uint8Array(16);
  for (let i = 0; i < 16; i++) raw[i] = Number.parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  // data1, data2 and data3 are stored byte-reversed.
  const order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
  for (let i = 0; i < 16; i++) bytes[offset + i] = raw[order[i]!]!;
}

export function readGuid(bytes: Uint8Array, offset: number): string {
  const order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
  let hex = '';
  for (let i = 0; i < 16; i++) {
    hex += bytes[offset + order[i]!]!.toString(16).padStart(2, '0');
    if (i === 3 || i === 5 || i === 7 || i === 9) hex += '-';
  }
  return hex;
}

export function guidToBytes(text: string): Uint8Array {
  const out = new Uint8Array(16);
  writeGuid(out, 0, text);
  return out;
}

/** A random (version 4) GUID in canonical form. */
export function randomGuid(): string {
  return crypto.randomUUID();
}
