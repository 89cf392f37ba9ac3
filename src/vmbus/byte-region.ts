/**
 * The bytes of a ring's data area, which the guest may have scattered over
 * non-contiguous pages (a GPADL names any pages it likes). Contiguous regions
 * copy with one TypedArray.set; paged regions split copies at page ends.
 * Callers pass ranges that lie inside the region (the ring splits at its own
 * wrap point first).
 */
export interface ByteRegion {
  readonly length: number;
  read(offset: number, target: Uint8Array, targetOffset: number, length: number): void;
  write(offset: number, source: Uint8Array, sourceOffset: number, length: number): void;
  fill(offset: number, length: number, value: number): void;
  /** Zero-copy views of [offset, offset+length), in order (one per page when scattered). */
  views(offset: number, length: number): Uint8Array[];
}

/** Copies shorter than this go byte by byte: cheaper than making a subarray view. */
const SMALL_COPY = 64;

export class ContiguousRegion implements ByteRegion {
  readonly length: number;
  /** For in-place field access by the ring's fast paths. */
  readonly view: DataView;
  /** 32-bit words of the region, when it starts 4-byte aligned (word copies of small packets). */
  readonly words: Int32Array | undefined;
  constructor(readonly bytes: Uint8Array) {
    this.length = bytes.length;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.words =
      bytes.byteOffset % 4 === 0
        ? new Int32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2)
        : undefined;
  }
  read(offset: number, target: Uint8Array, targetOffset: number, length: number): void {
    if (length <= SMALL_COPY) {
      const bytes = this.bytes;
      for (let i = 0; i < length; i++) target[targetOffset + i] = bytes[offset + i]!;
      return;
    }
    target.set(this.bytes.subarray(offset, offset + length), targetOffset);
  }
  write(offset: number, source: Uint8Array, sourceOffset: number, length: number): void {
    if (sourceOffset === 0 && length === source.length) {
      this.bytes.set(source, offset);
      return;
    }
    if (length <= SMALL_COPY) {
      const bytes = this.bytes;
      for (let i = 0; i < length; i++) bytes[offset + i] = source[sourceOffset + i]!;
      return;
    }
    this.bytes.set(source.subarray(sourceOffset, sourceOffset + length), offset);
  }
  fill(offset: number, length: number, value: number): void {
    this.bytes.fill(value, offset, offset + length);
  }
  views(offset: number, length: number): Uint8Array[] {
    return [this.bytes.subarray(offset, offset + length)];
  }
}

export class PagedRegion implements ByteRegion {
  readonly length: number;
  constructor(
    readonly pages: readonly Uint8Array[],
    readonly pageSize = 4096,
  ) {
    this.length = pages.length * pageSize;
  }

  private each(
    offset: number,
    length: number,
    fn: (page: Uint8Array, at: number, n: number, done: number) => void,
  ): void {
    let done = 0;
    while (done < length) {
      const pos = offset + done;
      const page = this.pages[Math.floor(pos / this.pageSize)]!;
      const at = pos % this.pageSize;
      const n = Math.min(this.pageSize - at, length - done);
      fn(page, at, n, done);
      done += n;
    }
  }

  read(offset: number, target: Uint8Array, targetOffset: number, length: number): void {
    this.each(offset, length, (page, at, n, done) => {
      target.set(page.subarray(at, at + n), targetOffset + done);
    });
  }
  write(offset: number, source: Uint8Array, sourceOffset: number, length: number): void {
    this.each(offset, length, (page, at, n, done) => {
      page.set(source.subarray(sourceOffset + done, sourceOffset + done + n), at);
    });
  }
  fill(offset: number, length: number, value: number): void {
    this.each(offset, length, (page, at, n) => {
      page.fill(value, at, at + n);
    });
  }
  views(offset: number, length: number): Uint8Array[] {
    const out: Uint8Array[] = [];
    this.each(offset, length, (page, at, n) => {
      out.push(page.subarray(at, at + n));
    });
    return out;
  }
}

/**
 * Makes a region over guest pages: contiguous when the PFNs follow one
 * another (the common case: the guest allocates rings in one run), paged
 * otherwise.
 */
export function regionOverPages(
  buffer: ArrayBufferLike,
  pfns: readonly number[],
  pageSize = 4096,
): ByteRegion {
  const contiguous = pfns.every((pfn, i) => i === 0 || pfn === pfns[i - 1]! + 1);
  if (contiguous && pfns.length > 0) {
    return new ContiguousRegion(
      new Uint8Array(buffer, pfns[0]! * pageSize, pfns.length * pageSize),
    );
  }
  return new PagedRegion(
    pfns.map((pfn) => new Uint8Array(buffer, pfn * pageSize, pageSize)),
    pageSize,
  );
}
