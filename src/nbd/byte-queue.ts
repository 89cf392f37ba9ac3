/**
 * Bytes received from a stream socket, in arrival order, consumed from the
 * front. NBD messages arrive split at arbitrary points (and several per
 * segment); parsers wait until `length` covers what they need, then take it.
 *
 * Chunks pushed in are kept by reference (not copied); `take` returns a view
 * into a chunk when the bytes are contiguous there and copies only when they
 * span chunks. Callers must therefore not modify pushed chunks afterwards.
 */
import { acquirePayloadBuffer } from './payload-buffers.ts';
export class ByteQueue {
  private chunks: Uint8Array[] = [];
  /** Index of the first live chunk in `chunks`. */
  private first = 0;
  /** Bytes of chunks[first] already consumed. */
  private head = 0;
  /** Unconsumed bytes. */
  length = 0;

  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  clear(): void {
    this.chunks = [];
    this.first = 0;
    this.head = 0;
    this.length = 0;
  }

  /** Copies the next `count` bytes into `target` at `at` and consumes them. */
  readInto(target: Uint8Array, at: number, count: number): void {
    if (count > this.length) throw new RangeError(`need ${count} bytes, have ${this.length}`);
    let done = 0;
    while (done < count) {
      const chunk = this.chunks[this.first]!;
      const n = Math.min(count - done, chunk.length - this.head);
      target.set(chunk.subarray(this.head, this.head + n), at + done);
      done += n;
      this.advance(n);
    }
  }

  /** Consumes up to `max` bytes into `target` at `at`; returns how many were moved. */
  drainInto(target: Uint8Array, at: number, max: number): number {
    const n = Math.min(max, this.length);
    this.readInto(target, at, n);
    return n;
  }

  /**
   * Consumes the next `count` bytes and returns them: a view into the
   * received chunk when contiguous, else a copy (pooled when large: see
   * payload-buffers.ts).
   */
  take(count: number): Uint8Array {
    if (count > this.length) throw new RangeError(`need ${count} bytes, have ${this.length}`);
    const chunk = this.chunks[this.first];
    if (chunk && chunk.length - this.head >= count) {
      const view = chunk.subarray(this.head, this.head + count);
      this.advance(count);
      return view;
    }
    // A payload spread over several socket chunks: assemble it in a pooled
    // buffer (the caller releases it when done with it).
    const out = acquirePayloadBuffer(count);
    this.readInto(out, 0, count);
    return out;
  }

  /** Discards up to `count` bytes; returns how many were discarded. */
  skip(count: number): number {
    let left = Math.min(count, this.length);
    const skipped = left;
    while (left > 0) {
      const chunk = this.chunks[this.first]!;
      const n = Math.min(left, chunk.length - this.head);
      this.advance(n);
      left -= n;
    }
    return skipped;
  }

  /** Reads a big-endian u32 at `at` bytes from the front without consuming. */
  peekUint32(at: number): number {
    if (at + 4 > this.length) throw new RangeError(`need ${at + 4} bytes, have ${this.length}`);
    let value = 0;
    let chunkIndex = this.first;
    let pos = this.head + at;
    while (pos >= this.chunks[chunkIndex]!.length) {
      pos -= this.chunks[chunkIndex]!.length;
      chunkIndex++;
    }
    for (let i = 0; i < 4; i++) {
      let chunk = this.chunks[chunkIndex]!;
      if (pos >= chunk.length) {
        chunkIndex++;
        pos = 0;
        chunk = this.chunks[chunkIndex]!;
      }
      value = value * 256 + chunk[pos]!;
      pos++;
    }
    return value;
  }

  private advance(n: number): void {
    this.length -= n;
    this.head += n;
    const chunk = this.chunks[this.first]!;
    if (this.head === chunk.length) {
      this.chunks[this.first] = EMPTY;
      this.first++;
      this.head = 0;
      if (this.first === this.chunks.length) {
        this.chunks.length = 0;
        this.first = 0;
      } else if (this.first >= 64 && this.first * 2 >= this.chunks.length) {
        this.chunks = this.chunks.slice(this.first);
        this.first = 0;
      }
    }
  }
}

const EMPTY = new Uint8Array(0);
