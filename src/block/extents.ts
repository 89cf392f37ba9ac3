import { ImageFormatError } from './block-device.ts';

/** A range of an image file that one structure occupies. */
export interface Extent {
  readonly start: number;
  readonly length: number;
  /** What occupies it, for messages ("BAT region", "payload block 17"). */
  readonly what: string;
}

/**
 * Throws an ImageFormatError (structure `layoutName`) naming the first two
 * structures that overlap: an image whose blocks overlap each other or its
 * metadata would corrupt one with writes to the other.
 */
export function checkNoOverlap(extents: readonly Extent[], layoutName: string): void {
  const sorted = [...extents].filter((e) => e.length > 0).sort((a, b) => a.start - b.start);
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1]!;
    const b = sorted[i]!;
    if (b.start < a.start + a.length) {
      throw new ImageFormatError(
        layoutName,
        `${b.what} at file offset ${b.start} overlaps ${a.what} at ${a.start}+${a.length}`,
      );
    }
  }
}
