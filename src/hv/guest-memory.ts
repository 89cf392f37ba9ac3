import { PAGE_SHIFT, PAGE_SIZE } from './protocol.ts';

/** An access outside guest memory, or misaligned where alignment is required. */
export class GuestMemoryError extends Error {
  override readonly name = 'GuestMemoryError';
}

/**
 * Guest-physical memory: 4 KiB pages over one SharedArrayBuffer, shared by
 * the host and guest workers. GPA n is byte n of the buffer. Every accessor
 * checks its range first; the views it returns alias guest memory (zero-copy),
 * which is what lets backends move data straight between the guest's pages
 * and a file.
 */
export class GuestMemory {
  readonly buffer: SharedArrayBuffer;
  readonly size: number;
  readonly pageCount: number;
  /** The whole memory as bytes (no bounds checks of its own: use the methods). */
  readonly u8: Uint8Array;
  /** The whole memory as 32-bit words, for Atomics on control words. */
  readonly i32: Int32Array;
  readonly dataView: DataView;

  constructor(buffer: SharedArrayBuffer) {
    if (buffer.byteLength === 0 || buffer.byteLength % PAGE_SIZE !== 0) {
      throw new GuestMemoryError(
        `guest memory must be a non-empty multiple of ${PAGE_SIZE} bytes, got ${buffer.byteLength}`,
      );
    }
    this.buffer = buffer;
    this.size = buffer.byteLength;
    this.pageCount = this.size >>> PAGE_SHIFT;
    this.u8 = new Uint8Array(buffer);
    this.i32 = new Int32Array(buffer);
    this.dataView = new DataView(buffer);
  }

  static create(bytes: number): GuestMemory {
    return new GuestMemory(new SharedArrayBuffer(bytes));
  }

  contains(gpa: number, length: number): boolean {
    return (
      Number.isSafeInteger(gpa) &&
      Number.isSafeInteger(length) &&
      gpa >= 0 &&
      length >= 0 &&
      gpa + length <= this.size
    );
  }

  containsPage(pfn: number): boolean {
    return Number.isSafeInteger(pfn) && pfn >= 0 && pfn < this.pageCount;
  }

  check(gpa: number, length: number): void {
    if (!this.contains(gpa, length)) {
      throw new GuestMemoryError(
        `guest memory access [0x${gpa.toString(16)}, +${length}) is outside the ${this.size}-byte memory`,
      );
    }
  }

  /** A view of [gpa, gpa+length): reads and writes go straight to guest memory. */
  bytes(gpa: number, length: number): Uint8Array {
    this.check(gpa, length);
    return new Uint8Array(this.buffer, gpa, length);
  }

  /** A view of one whole page. */
  page(pfn: number): Uint8Array {
    if (!this.containsPage(pfn)) {
      throw new GuestMemoryError(
        `page 0x${pfn.toString(16)} is outside guest memory (${this.pageCount} pages)`,
      );
    }
    return new Uint8Array(this.buffer, pfn * PAGE_SIZE, PAGE_SIZE);
  }

  /** Copies guest bytes out into private memory. */
  read(gpa: number, target: Uint8Array): void {
    this.check(gpa, target.length);
    target.set(this.u8.subarray(gpa, gpa + target.length));
  }

  /** Copies private bytes into guest memory. */
  write(gpa: number, source: Uint8Array): void {
    this.check(gpa, source.length);
    this.u8.set(source, gpa);
  }

  fill(gpa: number, length: number, value = 0): void {
    this.check(gpa, length);
    this.u8.fill(value, gpa, gpa + length);
  }

  /** Index into `i32` for an atomic 32-bit word at a 4-byte aligned GPA. */
  wordIndex(gpa: number): number {
    this.check(gpa, 4);
    if (gpa % 4 !== 0)
      throw new GuestMemoryError(`GPA 0x${gpa.toString(16)} is not 4-byte aligned`);
    return gpa >>> 2;
  }
}
