import { WireError } from './errors.ts';
import { readGuid, writeGuid } from './guid.ts';

/**
 * One entry of a flattened layout: a field's dotted name, byte offset and
 * size relative to the start of the outermost struct. Bitfields also carry
 * their absolute bit offset (bit k of byte b is 8*b + k) and width; flexible
 * arrays have size 0 and the size of one element.
 */
export interface FieldLayout {
  readonly name: string;
  readonly offset: number;
  readonly size: number;
  readonly bitOffset?: number;
  readonly bitWidth?: number;
  readonly flexible?: boolean;
  readonly elemSize?: number;
}

/**
 * A wire type: a fixed number of bytes with a decoder and an encoder that work
 * in place on a DataView. `T` is what decoding yields, `I` what encoding takes.
 */
export interface WireType<T, I = T> {
  readonly kind: WireKind;
  readonly size: number;
  decode(view: DataView, offset: number): T;
  encode(view: DataView, offset: number, value: I): void;
  /** Members nested in this type (structs, unions, bitfields), offsets relative to its start. */
  readonly members: readonly FieldLayout[];
}

export type WireKind =
  | 'uint'
  | 'bigint'
  | 'bytes'
  | 'guid'
  | 'array'
  | 'struct'
  | 'union'
  | 'bits'
  | 'reserved'
  | 'flex';

/** Fields of these kinds occupy layout but carry no value. */
export interface Reserved extends WireType<undefined, undefined> {
  readonly kind: 'reserved';
}
export interface Flex extends WireType<undefined, undefined> {
  readonly kind: 'flex';
  readonly elemSize: number;
}

export type ValueOf<W> = W extends WireType<infer T, unknown> ? T : never;
export type InputOf<W> = W extends WireType<unknown, infer I> ? I : never;

const noMembers: readonly FieldLayout[] = Object.freeze([]);

function uint(
  size: number,
  get: (v: DataView, o: number) => number,
  set: (v: DataView, o: number, x: number) => void,
  max: number,
  label: string,
): WireType<number> {
  return {
    kind: 'uint',
    size,
    members: noMembers,
    decode: get,
    encode(view, offset, value) {
      if (!Number.isInteger(value) || value < 0 || value > max) {
        throw new WireError(`${label}: ${value} does not fit`);
      }
      set(view, offset, value);
    },
  };
}

export const u8 = uint(
  1,
  (v, o) => v.getUint8(o),
  (v, o, x) => v.setUint8(o, x),
  0xff,
  'u8',
);
export const u16 = uint(
  2,
  (v, o) => v.getUint16(o, true),
  (v, o, x) => v.setUint16(o, x, true),
  0xffff,
  'u16',
);
export const u32 = uint(
  4,
  (v, o) => v.getUint32(o, true),
  (v, o, x) => v.setUint32(o, x, true),
  0xffffffff,
  'u32',
);
export const u16be = uint(
  2,
  (v, o) => v.getUint16(o, false),
  (v, o, x) => v.setUint16(o, x, false),
  0xffff,
  'u16be',
);
export const u32be = uint(
  4,
  (v, o) => v.getUint32(o, false),
  (v, o, x) => v.setUint32(o, x, false),
  0xffffffff,
  'u32be',
);

/** Signed 32-bit little-endian (HRESULT-like status words). */
export const i32: WireType<number> = {
  kind: 'uint',
  size: 4,
  members: noMembers,
  decode: (v, o) => v.getInt32(o, true),
  encode(view, offset, value) {
    if (!Number.isInteger(value) || value < -0x80000000 || value > 0x7fffffff) {
      throw new WireError(`i32: ${value} does not fit`);
    }
    view.setInt32(offset, value, true);
  },
};

function bigUint(littleEndian: boolean, label: string): WireType<bigint, bigint | number> {
  return {
    kind: 'bigint',
    size: 8,
    members: noMembers,
    decode: (v, o) => v.getBigUint64(o, littleEndian),
    encode(view, offset, value) {
      const big = typeof value === 'bigint' ? value : BigInt(value);
      if (big < 0n || big > 0xffff_ffff_ffff_ffffn) {
        throw new WireError(`${label}: ${value} does not fit`);
      }
      view.setBigUint64(offset, big, littleEndian);
    },
  };
}

/** 64-bit little-endian, decoded as bigint (GPAs, transaction ids, sizes). */
export const u64 = bigUint(true, 'u64');
export const u64be = bigUint(false, 'u64be');

/** Raw bytes, decoded as a copy; a shorter value is zero-padded on encode. */
export function bytes(size: number): WireType<Uint8Array> {
  return {
    kind: 'bytes',
    size,
    members: noMembers,
    decode(view, offset) {
      return new Uint8Array(view.buffer, view.byteOffset + offset, size).slice();
    },
    encode(view, offset, value) {
      if (value.length > size) {
        throw new WireError(`bytes(${size}): value has ${value.length} bytes`);
      }
      const target = new Uint8Array(view.buffer, view.byteOffset + offset, size);
      target.set(value);
      target.fill(0, value.length);
    },
  };
}

/** A 16-byte GUID in Windows mixed-endian order, decoded to its canonical string. */
export const guid: WireType<string> = {
  kind: 'guid',
  size: 16,
  members: noMembers,
  decode(view, offset) {
    return readGuid(new Uint8Array(view.buffer, view.byteOffset, view.byteLength), offset);
  },
  encode(view, offset, value) {
    writeGuid(new Uint8Array(view.buffer, view.byteOffset, view.byteLength), offset, value);
  },
};

/** A fixed-length array; a shorter value is zero-filled on encode. */
export function array<T, I>(element: WireType<T, I>, count: number): WireType<T[], I[]> {
  return {
    kind: 'array',
    size: element.size * count,
    members: noMembers,
    decode(view, offset) {
      const out: T[] = new Array(count);
      for (let i = 0; i < count; i++) out[i] = element.decode(view, offset + i * element.size);
      return out;
    },
    encode(view, offset, value) {
      if (value.length > count) {
        throw new WireError(`array(${count}): value has ${value.length} elements`);
      }
      for (let i = 0; i < value.length; i++) {
        element.encode(view, offset + i * element.size, value[i] as I);
      }
      new Uint8Array(
        view.buffer,
        view.byteOffset + offset + value.length * element.size,
        (count - value.length) * element.size,
      ).fill(0);
    },
  };
}

/** Bytes that must be zero when written and are ignored when read. */
export function reserved(size: number): Reserved {
  return {
    kind: 'reserved',
    size,
    members: noMembers,
    decode: () => undefined,
    encode(view, offset) {
      new Uint8Array(view.buffer, view.byteOffset + offset, size).fill(0);
    },
  };
}

/**
 * A C flexible array member: no bytes of its own in the fixed part; the
 * variable part that follows is parsed by the owner with explicit bounds.
 */
export function flex(elemSize: number): Flex {
  return {
    kind: 'flex',
    size: 0,
    elemSize,
    members: noMembers,
    decode: () => undefined,
    encode: () => {},
  };
}

type BitSpec = Readonly<Record<string, number>>;

/**
 * A group of C bitfields packed into one little-endian integer of `base`
 * bytes. Widths are given in declaration order, starting at bit 0.
 * Decodes to an object of numbers (fields wider than 53 bits are refused).
 */
export function bits<const B extends BitSpec>(
  baseSize: 1 | 2 | 4 | 8,
  spec: B,
): WireType<{ [K in keyof B]: number }, { [K in keyof B]?: number }> {
  const entries = Object.entries(spec);
  let at = 0;
  const placed = entries.map(([name, width]) => {
    if (!Number.isInteger(width) || width <= 0 || width > 53) {
      throw new WireError(`bits: field ${name} has width ${width}`);
    }
    const field = { name, shift: at, width };
    at += width;
    return field;
  });
  if (at > baseSize * 8) {
    throw new WireError(`bits: ${at} bits do not fit in ${baseSize} bytes`);
  }
  const readWord = (view: DataView, offset: number): bigint => {
    switch (baseSize) {
      case 1:
        return BigInt(view.getUint8(offset));
      case 2:
        return BigInt(view.getUint16(offset, true));
      case 4:
        return BigInt(view.getUint32(offset, true));
      default:
        return view.getBigUint64(offset, true);
    }
  };
  const writeWord = (view: DataView, offset: number, word: bigint): void => {
    switch (baseSize) {
      case 1:
        view.setUint8(offset, Number(word));
        break;
      case 2:
        view.setUint16(offset, Number(word), true);
        break;
      case 4:
        view.setUint32(offset, Number(word), true);
        break;
      default:
        view.setBigUint64(offset, word, true);
    }
  };
  return {
    kind: 'bits',
    size: baseSize,
    members: placed.map((f) => ({
      name: f.name,
      offset: Math.floor(f.shift / 8),
      size: 0,
      bitOffset: f.shift,
      bitWidth: f.width,
    })),
    decode(view, offset) {
      const word = readWord(view, offset);
      const out: Record<string, number> = {};
      for (const f of placed) {
        out[f.name] = Number((word >> BigInt(f.shift)) & ((1n << BigInt(f.width)) - 1n));
      }
      return out as { [K in keyof B]: number };
    },
    encode(view, offset, value) {
      let word = 0n;
      for (const f of placed) {
        const v = (value as Record<string, number | undefined>)[f.name] ?? 0;
        if (!Number.isInteger(v) || v < 0 || v >= 2 ** f.width) {
          throw new WireError(`bits: ${f.name}=${v} does not fit in ${f.width} bits`);
        }
        word |= BigInt(v) << BigInt(f.shift);
      }
      writeWord(view, offset, word);
    },
  };
}
