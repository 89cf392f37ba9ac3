/**
 * Building and reading NVSP messages: 40 bytes whatever the type (what
 * Linux sends and expects), the type first, the body after it. Readers are
 * bounded to the bytes received: a field past the end reads as missing.
 */
import { NVSP_BODY, NVSP_MESSAGE_SIZE, type NvspMessageType } from './protocol.ts';

/** A fresh NVSP message of `type` with its body's 32-bit words (little-endian). */
export function nvspMessage(type: NvspMessageType, ...words: number[]): Uint8Array {
  const bytes = new Uint8Array(NVSP_MESSAGE_SIZE);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, type, true);
  words.forEach((w, i) => {
    view.setUint32(NVSP_BODY + 4 * i, w >>> 0, true);
  });
  return bytes;
}

/** A received NVSP message: its type, and bounded reads of its body. */
export class NvspReader {
  type = -1;
  private view: DataView = new DataView(new ArrayBuffer(0));
  private length = 0;

  /** Takes a message (a view of a private copy); false when it is too short for a type. */
  load(payload: Uint8Array): boolean {
    this.view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
    this.length = payload.length;
    if (payload.length < NVSP_BODY) {
      this.type = -1;
      return false;
    }
    this.type = this.view.getUint32(0, true);
    return true;
  }

  get bodyLength(): number {
    return Math.max(0, this.length - NVSP_BODY);
  }

  /** Whether the body holds at least `n` bytes. */
  has(n: number): boolean {
    return this.length >= NVSP_BODY + n;
  }

  /** The 32-bit word at body offset `at` (the caller checked `has`). */
  u32(at: number): number {
    return this.view.getUint32(NVSP_BODY + at, true);
  }

  u16(at: number): number {
    return this.view.getUint16(NVSP_BODY + at, true);
  }

  u64(at: number): bigint {
    return this.view.getBigUint64(NVSP_BODY + at, true);
  }

  /** A 32-bit word from the start of the message (for tables placed by offset). */
  word(offset: number): number | undefined {
    return offset + 4 <= this.length ? this.view.getUint32(offset, true) : undefined;
  }
}
