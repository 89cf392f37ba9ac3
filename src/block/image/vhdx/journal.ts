import type { ImageFile } from '../image-file.ts';
import { LOG_SECTOR_SIZE } from './format.ts';
import { descriptorSectors, encodeLogEntry } from './log.ts';

/** What the journal needs from the image it protects. */
export interface JournalTarget {
  readonly file: ImageFile;
  readonly logOffset: number;
  readonly logLength: number;
  /** The live bytes of the metadata sector at this 4 KiB-aligned file offset. */
  sectorBytes(fileOffset: number): Uint8Array;
  /** The LogGuid of this session (the headers carry it before the first entry is written). */
  logGuid(): string;
  /**
   * The file's length as far as extensions have completed; what a flush
   * started now makes durable (the log entry's FlushedFileOffset).
   */
  fileLength(): number;
}

/**
 * Makes metadata changes (BAT and sector bitmap sectors) durable through the
 * log, with group commit: changes are made in memory and their 4 KiB
 * sectors marked dirty; commit() writes every dirty sector as one log entry
 * (or a few, when they do not fit one), in the order [MS-VHDX] 2.3 asks:
 * flush the data the new metadata points at, write the entry, flush, write
 * the sectors in place, flush. Concurrent callers share a commit.
 *
 * Each entry is applied before the next is written, so an entry's Tail is
 * its own offset. Entries are kept to a quarter of the log so that a torn
 * write of a new entry can never destroy the newest complete one.
 */
export class Journal {
  private readonly dirty = new Set<number>();
  private cursor = 0;
  private sequence = 1n;
  private running: Promise<void> | null = null;
  private queued: Promise<void> | null = null;
  private readonly sectorsPerEntry: number;

  constructor(private readonly target: JournalTarget) {
    const budget = Math.floor(target.logLength / LOG_SECTOR_SIZE / 4);
    let n = 1;
    while (descriptorSectors(n + 1) + n + 1 <= budget) n++;
    this.sectorsPerEntry = n;
  }

  markDirty(fileOffset: number): void {
    this.dirty.add(fileOffset);
  }

  get hasDirty(): boolean {
    return this.dirty.size > 0;
  }

  /** Resolves when every sector marked dirty before the call is durable in place. */
  commit(): Promise<void> {
    if (this.queued) return this.queued;
    if (this.running) {
      const after = this.running.catch(() => undefined);
      this.queued = after.then(() => {
        this.queued = null;
        return this.run();
      });
      return this.queued;
    }
    return this.run();
  }

  private run(): Promise<void> {
    const p = this.writeDirty().finally(() => {
      if (this.running === p) this.running = null;
    });
    this.running = p;
    return p;
  }

  private async writeDirty(): Promise<void> {
    if (this.dirty.size === 0) return;
    const offsets = [...this.dirty].sort((a, b) => a - b);
    this.dirty.clear();
    // Snapshot first: every change in the snapshot was made after the data
    // it points at was written, so the flush below makes that data durable.
    const sectors = offsets.map((fileOffset) => ({
      fileOffset,
      data: this.target.sectorBytes(fileOffset).slice(),
    }));
    // Every block the snapshot points at lies inside this length, and the
    // flush below makes the length durable: a replay must not find the file
    // shorter than an entry says it was.
    const flushedLength = this.target.fileLength();
    const { file, logOffset, logLength } = this.target;
    try {
      await file.sync();
      for (let i = 0; i < sectors.length; i += this.sectorsPerEntry) {
        const batch = sectors.slice(i, i + this.sectorsPerEntry);
        const length = (descriptorSectors(batch.length) + batch.length) * LOG_SECTOR_SIZE;
        const position = this.cursor + length > logLength ? 0 : this.cursor;
        const entry = encodeLogEntry({
          sequenceNumber: this.sequence,
          logGuid: this.target.logGuid(),
          tail: position,
          flushedFileOffset: flushedLength,
          lastFileOffset: flushedLength,
          sectors: batch,
        });
        await file.write(logOffset + position, entry);
        await file.sync();
        this.sequence++;
        this.cursor = (position + length) % logLength;
        await Promise.all(batch.map((s) => file.write(s.fileOffset, s.data)));
        await file.sync();
      }
    } catch (error) {
      for (const o of offsets) this.dirty.add(o);
      throw error;
    }
  }
}
