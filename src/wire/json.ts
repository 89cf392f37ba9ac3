/**
 * Converts decoded wire values to JSON-friendly data, following the oracle's
 * convention: 64-bit integers become numbers when they are exact, otherwise
 * 0x-prefixed 16-digit hex strings; byte arrays become lowercase hex.
 */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export function toJson(value: unknown): Json {
  if (value === null || value === undefined) return null;
  if (typeof value === 'bigint') {
    return value <= BigInt(Number.MAX_SAFE_INTEGER)
      ? Number(value)
      : `0x${value.toString(16).padStart(16, '0')}`;
  }
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'string') {
    return value;
  }
  if (value instanceof Uint8Array) return Buffer.from(value).toString('hex');
  if (Array.isArray(value)) return value.map(toJson);
  if (typeof value === 'object') {
    const out: { [key: string]: Json } = {};
    for (const [k, v] of Object.entries(value)) {
      if (v !== undefined) out[k] = toJson(v);
    }
    return out;
  }
  return String(value);
}

/** Parses hex text (whitespace, colons and an optional 0x prefix allowed). */
export function parseHex(text: string): Uint8Array {
  const clean = text.trim().replace(/^0x/i, '').replace(/[\s:]/g, '');
  if (clean.length % 2 !== 0 || /[^0-9a-fA-F]/.test(clean)) {
    throw new Error(`not hex: expected pairs of hex digits, got ${clean.length} characters`);
  }
  return new Uint8Array(Buffer.from(clean, 'hex'));
}
