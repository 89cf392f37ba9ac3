import { WireError } from './errors.ts';
import type { FieldLayout, Flex, InputOf, Reserved, ValueOf, WireType } from './types.ts';

/**
 * Declarative wire structs. A struct is an ordered record of named wire types;
 * offsets follow from the order (wire layouts have no implicit padding, so
 * every reserved or padding byte is declared). Keys starting with `$` are
 * anonymous members (C's anonymous unions, structs and bitfield groups): their
 * own members appear directly in the parent, as in the C declaration.
 *
 * Declarations are computed once: size, flattened layout (dotted names as the
 * oracle spells them) and per-field accessors for the data path, which read a
 * field in place without decoding the whole struct.
 */

// biome-ignore lint/suspicious/noExplicitAny: a field may be any wire type
type AnyWire = WireType<any, any>;
export type Fields = Readonly<Record<string, AnyWire>>;

type Omitted = Reserved | Flex;
type NamedKeys<F> = {
  [K in keyof F]-?: K extends `$${string}` ? never : F[K] extends Omitted ? never : K;
}[keyof F];
type AnonKeys<F> = { [K in keyof F]-?: K extends `$${string}` ? K : never }[keyof F];
type UnionToIntersection<U> = (U extends unknown ? (x: U) => void : never) extends (
  x: infer I,
) => void
  ? I
  : never;
type Simplify<T> = { [K in keyof T]: T[K] } & {};

export type StructValue<F> = Simplify<
  { [K in NamedKeys<F>]: ValueOf<F[K]> } & UnionToIntersection<
    { [K in AnonKeys<F>]: ValueOf<F[K]> }[AnonKeys<F>]
  >
>;
export type StructInput<F> = Simplify<
  { [K in NamedKeys<F>]: InputOf<F[K]> } & UnionToIntersection<
    { [K in AnonKeys<F>]: InputOf<F[K]> }[AnonKeys<F>]
  >
>;
export type UnionValue<F> = StructValue<F>;
export type UnionInput<F> = Partial<StructInput<F>>;

/** In-place access to one scalar field, for code that must not allocate. */
export interface Accessor<T> {
  readonly offset: number;
  readonly size: number;
  get(view: DataView, base: number): T;
  set(view: DataView, base: number, value: T): void;
}

export type ReadResult<T> = { ok: true; value: T } | { ok: false; error: string };

export interface StructType<T, I> extends WireType<T, I> {
  readonly kind: 'struct' | 'union';
  /** The C name, for registered declarations; '' for anonymous nested ones. */
  readonly name: string;
  /** Every field, nested ones with dotted names, offsets from the struct start. */
  readonly layout: readonly FieldLayout[];
  /** Top-level keys of decoded values (anonymous members flattened). */
  readonly valueKeys: readonly string[];
  offsetOf(path: string): number;
  /** Accessor for a number-valued scalar field (u8/u16/u32, either byte order). */
  uint(path: string): Accessor<number>;
  /** Accessor for a 64-bit field. */
  bigint(path: string): Accessor<bigint>;
  /** Decode from bytes with bounds checking; throws WireError when too short. */
  read(bytes: Uint8Array, offset?: number): T;
  /** Like read, but reports a short buffer as a result instead of throwing. */
  tryRead(bytes: Uint8Array, offset?: number): ReadResult<T>;
  /** Encode into a new buffer of exactly `size` bytes. */
  write(value: I): Uint8Array;
  /** Encode into the caller's bytes at offset; returns the offset after the struct. */
  writeInto(target: Uint8Array, offset: number, value: I): number;
}

interface Placed {
  readonly key: string;
  readonly type: AnyWire;
  readonly offset: number;
  readonly anonymous: boolean;
  readonly omitted: boolean;
  readonly valueKeys: readonly string[];
}

function isOmitted(type: AnyWire): boolean {
  return type.kind === 'reserved' || type.kind === 'flex';
}

function valueKeysOf(type: AnyWire): readonly string[] {
  const keys = (type as { valueKeys?: readonly string[] }).valueKeys;
  if (keys) return keys;
  if (type.kind === 'bits') return type.members.map((m) => m.name);
  return [];
}

function flattenInto(
  out: FieldLayout[],
  prefix: string,
  base: number,
  key: string,
  type: AnyWire,
  anonymous: boolean,
): void {
  const name = anonymous ? '' : `${prefix}${key}`;
  if (!anonymous) {
    const entry: FieldLayout =
      type.kind === 'flex'
        ? { name, offset: base, size: 0, flexible: true, elemSize: (type as Flex).elemSize }
        : { name, offset: base, size: type.size };
    out.push(entry);
  }
  const childPrefix = anonymous ? prefix : `${name}.`;
  for (const m of type.members) {
    out.push({
      ...m,
      name: `${childPrefix}${m.name}`,
      offset: base + m.offset,
      ...(m.bitOffset !== undefined ? { bitOffset: base * 8 + m.bitOffset } : {}),
    });
  }
}

function build<T, I>(kind: 'struct' | 'union', name: string, fields: Fields): StructType<T, I> {
  const placed: Placed[] = [];
  let cursor = 0;
  let size = 0;
  for (const [key, type] of Object.entries(fields)) {
    const offset = kind === 'struct' ? cursor : 0;
    const anonymous = key.startsWith('$');
    placed.push({
      key,
      type,
      offset,
      anonymous,
      omitted: isOmitted(type),
      valueKeys: anonymous ? valueKeysOf(type) : [key],
    });
    if (kind === 'struct') {
      if (type.kind === 'flex' && key !== Object.keys(fields).at(-1)) {
        throw new WireError(`${name || 'struct'}: flexible array ${key} must be last`);
      }
      cursor += type.size;
      size = cursor;
    } else {
      size = Math.max(size, type.size);
    }
  }

  const layout: FieldLayout[] = [];
  for (const p of placed) flattenInto(layout, '', p.offset, p.key, p.type, p.anonymous);
  const byName = new Map<string, FieldLayout>();
  for (const f of layout) if (!byName.has(f.name)) byName.set(f.name, f);

  // Scalar types by path, for accessors.
  const scalars = new Map<string, { offset: number; type: AnyWire }>();
  const collect = (prefix: string, base: number, type: AnyWire): void => {
    const inner = (type as { placedFields?: readonly Placed[] }).placedFields;
    if (!inner) return;
    for (const p of inner) {
      const path = p.anonymous ? prefix.slice(0, -1) : `${prefix}${p.key}`;
      if (p.type.kind === 'uint' || p.type.kind === 'bigint') {
        scalars.set(path, { offset: base + p.offset, type: p.type });
      }
      collect(p.anonymous ? prefix : `${path}.`, base + p.offset, p.type);
    }
  };

  const valueKeys = placed.filter((p) => !p.omitted).flatMap((p) => p.valueKeys);
  const label = name || `anonymous ${kind}`;

  const type: StructType<T, I> & { placedFields: readonly Placed[] } = {
    kind,
    name,
    size,
    members: layout,
    layout,
    valueKeys,
    placedFields: placed,
    decode(view, offset) {
      const out: Record<string, unknown> = {};
      for (const p of placed) {
        if (p.omitted) continue;
        const v = p.type.decode(view, offset + p.offset);
        if (p.anonymous) Object.assign(out, v);
        else out[p.key] = v;
      }
      return out as T;
    },
    encode(view, offset, value) {
      const input = value as Record<string, unknown>;
      if (kind === 'union') new Uint8Array(view.buffer, view.byteOffset + offset, size).fill(0);
      for (const p of placed) {
        const at = offset + p.offset;
        if (p.omitted) {
          if (kind === 'struct') p.type.encode(view, at, undefined);
          continue;
        }
        if (p.anonymous) {
          const present = p.valueKeys.some((k) => input[k] !== undefined);
          if (kind === 'struct' || present) p.type.encode(view, at, input);
          continue;
        }
        const v = input[p.key];
        if (v === undefined) {
          if (kind === 'union') continue;
          throw new WireError(`${label}: missing field ${p.key}`);
        }
        p.type.encode(view, at, v);
      }
    },
    offsetOf(path) {
      const f = byName.get(path);
      if (!f) throw new WireError(`${label}: no field ${path}`);
      return f.offset;
    },
    uint(path) {
      const s = scalars.get(path);
      if (s?.type.kind !== 'uint') throw new WireError(`${label}: ${path} is not a uint field`);
      const { offset: fo, type: t } = s;
      return {
        offset: fo,
        size: t.size,
        get: (view, base) => t.decode(view, base + fo) as number,
        set: (view, base, v) => t.encode(view, base + fo, v),
      };
    },
    bigint(path) {
      const s = scalars.get(path);
      if (s?.type.kind !== 'bigint') {
        throw new WireError(`${label}: ${path} is not a 64-bit field`);
      }
      const { offset: fo, type: t } = s;
      return {
        offset: fo,
        size: 8,
        get: (view, base) => t.decode(view, base + fo) as bigint,
        set: (view, base, v) => t.encode(view, base + fo, v),
      };
    },
    read(bytes, offset = 0) {
      if (!Number.isInteger(offset) || offset < 0 || offset + size > bytes.length) {
        throw new WireError(
          `${label}: need ${size} bytes at offset ${offset}, have ${Math.max(0, bytes.length - offset)}`,
        );
      }
      return this.decode(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), offset);
    },
    tryRead(bytes, offset = 0) {
      if (!Number.isInteger(offset) || offset < 0 || offset + size > bytes.length) {
        return {
          ok: false,
          error: `${label}: need ${size} bytes at offset ${offset}, have ${Math.max(0, bytes.length - offset)}`,
        };
      }
      return {
        ok: true,
        value: this.decode(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), offset),
      };
    },
    write(value) {
      const out = new Uint8Array(size);
      this.encode(new DataView(out.buffer), 0, value);
      return out;
    },
    writeInto(target, offset, value) {
      if (!Number.isInteger(offset) || offset < 0 || offset + size > target.length) {
        throw new WireError(
          `${label}: need ${size} bytes at offset ${offset}, have ${Math.max(0, target.length - offset)}`,
        );
      }
      this.encode(new DataView(target.buffer, target.byteOffset, target.byteLength), offset, value);
      return offset + size;
    },
  };
  collect('', 0, type);
  return type;
}

/** An anonymous nested struct (not registered). */
export function struct<const F extends Fields>(
  fields: F,
): StructType<StructValue<F>, StructInput<F>> {
  return build('struct', '', fields);
}

/** A union: every member starts at offset 0; size is the largest member's. */
export function union<const F extends Fields>(fields: F): StructType<UnionValue<F>, UnionInput<F>> {
  return build('union', '', fields);
}

const registry = new Map<string, StructType<unknown, unknown>>();

/**
 * Declares a named wire struct (the C name, as the oracle spells it) and
 * registers it so the conformance test can find every declaration. A name can
 * be declared only once.
 */
export function defineStruct<const F extends Fields>(
  name: string,
  fields: F,
): StructType<StructValue<F>, StructInput<F>> {
  return register(name, build('struct', name, fields));
}

export function defineUnion<const F extends Fields>(
  name: string,
  fields: F,
): StructType<UnionValue<F>, UnionInput<F>> {
  return register(name, build('union', name, fields));
}

function register<T extends StructType<unknown, unknown>>(name: string, type: T): T {
  if (registry.has(name)) throw new WireError(`wire struct ${name} is declared twice`);
  registry.set(name, type);
  return type;
}

export function registeredStructs(): ReadonlyMap<string, StructType<unknown, unknown>> {
  return registry;
}
