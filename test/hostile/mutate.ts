/**
 * Structure-aware mutation for hostile-input properties: start from a
 * well-formed message (built by the oracle builder, never by the code under
 * test) and, often enough that most runs still pass the first checks, leave
 * it alone; otherwise set one field to a boundary value or off by one, cut
 * the message short, grow it, or flip bytes.
 */
import fc from 'fast-check';
import { oracleStructs } from '../conformance/oracle.ts';

export interface FieldSpot {
  readonly offset: number;
  readonly size: 1 | 2 | 4 | 8;
}

const structs = oracleStructs();

/** The integer fields of an oracle struct (where a boundary value can go). */
export function fieldsOf(struct: string, base = 0): FieldSpot[] {
  const entry = structs.get(struct);
  if (!entry) throw new Error(`the oracle has no struct ${struct}`);
  const out: FieldSpot[] = [];
  for (const f of entry.struct.fields) {
    if (f.bitfield || f.flexible_array) continue;
    if (f.size === 1 || f.size === 2 || f.size === 4 || f.size === 8) {
      // Only leaves: a field that other fields lie inside is a union or struct.
      const nested = entry.struct.fields.some((g) => g !== f && g.name.startsWith(`${f.name}.`));
      if (!nested) out.push({ offset: base + f.offset, size: f.size });
    }
  }
  return out;
}

export type Mutation =
  | { readonly kind: 'keep' }
  | { readonly kind: 'boundary'; readonly field: number; readonly value: number }
  | { readonly kind: 'off-by-one'; readonly field: number; readonly delta: 1 | -1 }
  | { readonly kind: 'truncate'; readonly keep: number }
  | { readonly kind: 'extend'; readonly bytes: Uint8Array }
  | { readonly kind: 'flip'; readonly at: number[]; readonly values: number[] };

const boundaryValues = [0, 1, 0x7f, 0x80, 0xff, 0xffff, 0x7fffffff, 0xffffffff, 0xfffffffe];

/** Mutations, `keepWeight` in (keepWeight + 6) of them leaving the message intact. */
export function mutation(keepWeight = 4): fc.Arbitrary<Mutation> {
  return fc.oneof(
    { weight: keepWeight, arbitrary: fc.constant<Mutation>({ kind: 'keep' }) },
    {
      weight: 2,
      arbitrary: fc
        .record({ field: fc.nat(), value: fc.constantFrom(...boundaryValues) })
        .map((m): Mutation => ({ kind: 'boundary', ...m })),
    },
    {
      weight: 2,
      arbitrary: fc
        .record({ field: fc.nat(), delta: fc.constantFrom<1 | -1>(1, -1) })
        .map((m): Mutation => ({ kind: 'off-by-one', ...m })),
    },
    {
      weight: 1,
      arbitrary: fc.nat().map((keep): Mutation => ({ kind: 'truncate', keep })),
    },
    {
      weight: 1,
      arbitrary: fc
        .uint8Array({ minLength: 1, maxLength: 24 })
        .map((bytes): Mutation => ({ kind: 'extend', bytes })),
    },
    {
      weight: 1,
      arbitrary: fc
        .array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 })
        .map(
          (pairs): Mutation => ({
            kind: 'flip',
            at: pairs.map((p) => p[0]),
            values: pairs.map((p) => p[1]),
          }),
        ),
    },
  );
}

function readField(view: DataView, f: FieldSpot): bigint {
  switch (f.size) {
    case 1:
      return BigInt(view.getUint8(f.offset));
    case 2:
      return BigInt(view.getUint16(f.offset, true));
    case 4:
      return BigInt(view.getUint32(f.offset, true));
    case 8:
      return view.getBigUint64(f.offset, true);
  }
}

function writeField(view: DataView, f: FieldSpot, value: bigint): void {
  const bits = BigInt(f.size * 8);
  const v = BigInt.asUintN(Number(bits), value);
  switch (f.size) {
    case 1:
      view.setUint8(f.offset, Number(v));
      return;
    case 2:
      view.setUint16(f.offset, Number(v), true);
      return;
    case 4:
      view.setUint32(f.offset, Number(v), true);
      return;
    case 8:
      view.setBigUint64(f.offset, v, true);
      return;
  }
}

/** Applies a mutation to a copy of `bytes`; `fields` are where boundary values go. */
export function applyMutation(
  bytes: Uint8Array,
  m: Mutation,
  fields: readonly FieldSpot[],
): Uint8Array {
  const out = bytes.slice();
  const view = new DataView(out.buffer);
  const usable = fields.filter((f) => f.offset + f.size <= out.length);
  switch (m.kind) {
    case 'keep':
      return out;
    case 'boundary': {
      if (usable.length === 0) return out;
      const f = usable[m.field % usable.length]!;
      writeField(view, f, BigInt(m.value));
      return out;
    }
    case 'off-by-one': {
      if (usable.length === 0) return out;
      const f = usable[m.field % usable.length]!;
      writeField(view, f, readField(view, f) + BigInt(m.delta));
      return out;
    }
    case 'truncate':
      return out.subarray(0, out.length === 0 ? 0 : m.keep % out.length).slice();
    case 'extend': {
      const grown = new Uint8Array(out.length + m.bytes.length);
      grown.set(out);
      grown.set(m.bytes, out.length);
      return grown;
    }
    case 'flip':
      if (out.length === 0) return out;
      m.at.forEach((at, i) => {
        out[at % out.length] = m.values[i]!;
      });
      return out;
  }
}

/**
 * Counts, over a property's runs, how many reached a path; `assertAtLeast`
 * fails the test when a generator stops reaching it.
 */
export class Reach {
  runs = 0;
  /** Per path, the runs that reached it (each run counts once). */
  private readonly hits = new Map<string, number>();
  private current = new Set<string>();

  /** A new run begins. */
  run(): void {
    this.runs++;
    this.current = new Set();
  }

  /** This run reached `path`. */
  hit(path: string): void {
    if (this.current.has(path)) return;
    this.current.add(path);
    this.hits.set(path, (this.hits.get(path) ?? 0) + 1);
  }

  count(path: string): number {
    return this.hits.get(path) ?? 0;
  }

  fraction(path: string): number {
    return this.runs === 0 ? 0 : this.count(path) / this.runs;
  }

  /** Throws unless at least `share` of the runs reached `path`. */
  assertAtLeast(path: string, share: number): void {
    const got = this.fraction(path);
    if (got < share) {
      throw new Error(
        `only ${this.count(path)} of ${this.runs} runs (${(got * 100).toFixed(1)}%) reached "${path}"; the generator must reach it in at least ${(share * 100).toFixed(0)}%`,
      );
    }
  }

  /** One line for logs: each path's share of the runs. */
  describe(): string {
    return [...this.hits]
      .map(([path, n]) => `${path} ${((100 * n) / Math.max(1, this.runs)).toFixed(0)}%`)
      .join(', ');
  }
}
