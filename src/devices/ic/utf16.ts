/**
 * UTF-16LE strings as IC messages carry them: in fixed fields, terminated by
 * a NUL, with sizes in bytes that include the NUL.
 */

const decoder = new TextDecoder('utf-16le');

/**
 * Decodes up to `sizeBytes` bytes of `field` (rounded down to whole units),
 * stopping at the first NUL unit. Invalid surrogates become U+FFFD.
 */
export function decodeUtf16z(field: Uint8Array, sizeBytes: number): string {
  const limit = Math.min(field.length, Math.max(0, sizeBytes)) & ~1;
  let end = 0;
  while (end < limit && (field[end] !== 0 || field[end + 1] !== 0)) end += 2;
  return decoder.decode(field.subarray(0, end));
}

/** Encodes `text` with its NUL terminator; the byte size includes the NUL. */
export function encodeUtf16z(text: string): Uint8Array {
  const out = new Uint8Array((text.length + 1) * 2);
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    out[2 * i] = unit & 0xff;
    out[2 * i + 1] = unit >>> 8;
  }
  return out;
}

/** Bytes `text` takes as UTF-16 with its NUL. */
export function utf16Size(text: string): number {
  return (text.length + 1) * 2;
}

/**
 * Writes `text` and its NUL into a `fieldBytes`-byte field at `offset`,
 * cut (never inside a surrogate pair) to fit, and zero-fills the rest.
 * Returns the bytes written, NUL included.
 */
export function writeUtf16Field(
  target: Uint8Array,
  offset: number,
  fieldBytes: number,
  text: string,
): number {
  let units = Math.min(text.length, fieldBytes / 2 - 1);
  if (units > 0 && units < text.length) {
    const last = text.charCodeAt(units - 1);
    if (last >= 0xd800 && last <= 0xdbff) units--;
  }
  const field = target.subarray(offset, offset + fieldBytes);
  field.fill(0);
  for (let i = 0; i < units; i++) {
    const unit = text.charCodeAt(i);
    field[2 * i] = unit & 0xff;
    field[2 * i + 1] = unit >>> 8;
  }
  return (units + 1) * 2;
}
