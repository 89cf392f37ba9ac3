/**
 * Builds wire messages from the layouts the oracle measured in the Linux
 * sources — an independent builder for the hostile-input tests, which must
 * not build their "well-formed" inputs with the encoders under test. Every
 * field is addressed by the oracle's (dotted) name; unnamed bytes are zero;
 * multi-byte fields are little-endian; bitfields are set bit by bit.
 */
import { oracleStructs } from '../conformance/oracle.ts';

const structs = oracleStructs();

export type FieldValue = number | bigint | Uint8Array;

/** The oracle's size of `struct`. */
export function sizeOf(struct: string): number {
  return layoutOf(struct).sizeof;
}

/** The oracle's offset of `field` in `struct`. */
export function offsetOf(struct: string, field: string): number {
  const f = layoutOf(struct).fields.find((x) => x.name === field);
  if (!f) throw new Error(`the oracle's ${struct} has no field ${field}`);
  return f.offset;
}

function layoutOf(struct: string) {
  const entry = structs.get(struct);
  if (!entry) throw new Error(`the oracle has no struct ${struct}`);
  return entry.struct;
}

/**
 * `struct` laid out as Linux lays it out, with `values` in the named fields,
 * followed by `tail` (a flexible array's elements, a payload).
 */
export function build(
  struct: string,
  values: Readonly<Record<string, FieldValue>>,
  tail: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const layout = layoutOf(struct);
  const out = new Uint8Array(layout.sizeof + tail.length);
  const view = new DataView(out.buffer);
  for (const [name, value] of Object.entries(values)) {
    const field = layout.fields.find((f) => f.name === name);
    if (!field) throw new Error(`the oracle's ${struct} has no field ${name}`);
    if (field.bitfield) {
      const v = BigInt(value as number | bigint);
      for (let b = 0; b < field.bit_width!; b++) {
        const bit = field.bit_offset! + b;
        const byte = bit >> 3;
        const mask = 1 << (bit & 7);
        out[byte] = (v >> BigInt(b)) & 1n ? out[byte]! | mask : out[byte]! & ~mask;
      }
      continue;
    }
    put(view, out, field.offset, field.size ?? 0, value, `${struct}.${name}`);
  }
  out.set(tail, layout.sizeof);
  return out;
}

function put(
  view: DataView,
  out: Uint8Array,
  at: number,
  size: number,
  value: FieldValue,
  what: string,
): void {
  if (value instanceof Uint8Array) {
    if (value.length > size) throw new Error(`${what}: ${value.length} bytes > ${size}`);
    out.set(value, at);
    return;
  }
  switch (size) {
    case 1:
      view.setUint8(at, Number(value) & 0xff);
      return;
    case 2:
      view.setUint16(at, Number(value) & 0xffff, true);
      return;
    case 4:
      view.setUint32(at, Number(BigInt(value) & 0xffff_ffffn), true);
      return;
    case 8:
      view.setBigUint64(at, BigInt(value) & 0xffff_ffff_ffff_ffffn, true);
      return;
    default:
      throw new Error(`${what}: cannot put a number into ${size} bytes`);
  }
}

/** Little-endian u64 values, one after another (PFN arrays). */
export function u64s(values: readonly (number | bigint)[]): Uint8Array {
  const out = new Uint8Array(8 * values.length);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => {
    view.setBigUint64(8 * i, BigInt(v), true);
  });
  return out;
}

/** Concatenates byte arrays. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
