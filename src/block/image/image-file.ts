import { constants, type FileHandle, open } from 'node:fs/promises';
import { type DiskErrorCode, DiskIoError, ImageFormatError } from '../block-device.ts';
import { preallocate, punchHole, zeroRange } from './fallocate.ts';

/**
 * Patches laid over what is read from a file without writing the file: a
 * read-only open of an image whose metadata log must be replayed reads
 * through one.
 */
export interface ReadOverlay {
  /** Applies the patches that intersect [position, position + target.length) to target. */
  apply(position: number, target: Uint8Array): void;
  /** The file length the overlay implies (a replayed log may extend the file). */
  readonly minimumFileSize: number;
}

/** Most iovecs one readv/writev call takes (Linux IOV_MAX). */
const MAX_IOVECS = 1024;
const ZERO_CHUNK = 1 << 20;
let zeroChunk: Uint8Array | null = null;

function zeros(): Uint8Array {
  zeroChunk ??= new Uint8Array(ZERO_CHUNK);
  return zeroChunk;
}

function ioCode(error: unknown): DiskErrorCode {
  const code = (error as { code?: unknown }).code;
  if (code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG') return 'ENOSPC';
  if (code === 'EROFS' || code === 'EBADF' || code === 'EPERM' || code === 'EACCES') return 'EROFS';
  return 'EIO';
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * A disk image file: positional, vectored reads and writes into caller-owned
 * buffers, with every failure turned into a DiskIoError naming the file and
 * the failing file offset. Reads past the end of the file yield zeros (image
 * formats rely on it for sparse tails). close() waits for the operations in
 * flight.
 */
export class ImageFile {
  private inFlight = 0;
  private drained: (() => void) | null = null;
  private closed = false;
  private overlay: ReadOverlay | null = null;

  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    readonly writable: boolean,
  ) {}

  /** Opens an existing file for reading (and writing unless readOnly). */
  static async open(path: string, readOnly: boolean): Promise<ImageFile> {
    try {
      const handle = await open(path, readOnly ? constants.O_RDONLY : constants.O_RDWR);
      return new ImageFile(path, handle, !readOnly);
    } catch (error) {
      throw new DiskIoError(ioCode(error), `cannot open ${path}: ${messageOf(error)}`);
    }
  }

  /** Creates a new file; refuses to touch an existing one. */
  static async create(path: string): Promise<ImageFile> {
    try {
      const handle = await open(
        path,
        constants.O_RDWR | constants.O_CREAT | constants.O_EXCL,
        0o644,
      );
      return new ImageFile(path, handle, true);
    } catch (error) {
      const exists = (error as { code?: unknown }).code === 'EEXIST';
      throw new DiskIoError(
        exists ? 'EINVAL' : ioCode(error),
        exists
          ? `${path} already exists; refusing to overwrite it`
          : `cannot create ${path}: ${messageOf(error)}`,
      );
    }
  }

  get fd(): number {
    return this.handle.fd;
  }

  /** Lays patches over every later read (used for a log replayed in memory). */
  setReadOverlay(overlay: ReadOverlay | null): void {
    this.overlay = overlay;
  }

  private async track<T>(what: string, position: number, run: () => Promise<T>): Promise<T> {
    if (this.closed) throw new DiskIoError('ECLOSED', `${this.path} is closed`, position);
    this.inFlight++;
    try {
      return await run();
    } catch (error) {
      if (error instanceof DiskIoError || error instanceof ImageFormatError) throw error;
      throw new DiskIoError(
        ioCode(error),
        `${this.path}: ${what} at file offset ${position} failed: ${messageOf(error)}`,
        position,
      );
    } finally {
      this.inFlight--;
      if (this.inFlight === 0 && this.drained) this.drained();
    }
  }

  async size(): Promise<number> {
    return this.track('stat', 0, async () => {
      const real = (await this.handle.stat()).size;
      return Math.max(real, this.overlay?.minimumFileSize ?? 0);
    });
  }

  /** Bytes of storage the file occupies (st_blocks * 512). */
  async allocatedBytes(): Promise<number> {
    return this.track('stat', 0, async () => (await this.handle.stat()).blocks * 512);
  }

  /** Fills target from position; bytes past the end of the file read as zeros. */
  async read(position: number, target: Uint8Array): Promise<void> {
    await this.readv(position, [target]);
  }

  /** Fills the targets, in order, from position; past the end of the file they read zeros. */
  async readv(position: number, targets: readonly Uint8Array[]): Promise<void> {
    await this.track('read', position, async () => {
      let at = position;
      let pending = targets.filter((t) => t.length > 0);
      while (pending.length > 0) {
        const batch = pending.slice(0, MAX_IOVECS);
        const { bytesRead } = await this.handle.readv(batch, at);
        if (bytesRead === 0) {
          for (const t of pending) t.fill(0);
          break;
        }
        at += bytesRead;
        pending = advance(pending, bytesRead);
      }
      if (this.overlay) {
        let p = position;
        for (const t of targets) {
          this.overlay.apply(p, t);
          p += t.length;
        }
      }
    });
  }

  /**
   * Reads exactly `length` bytes of an on-disk structure; a file too short to
   * hold it is a format error naming the structure.
   */
  async readStructure(position: number, length: number, structure: string): Promise<Uint8Array> {
    const fileSize = await this.size();
    if (position + length > fileSize) {
      throw new ImageFormatError(
        structure,
        `needs ${length} bytes at file offset ${position}, but the file is only ${fileSize} bytes (truncated?)`,
      );
    }
    const out = new Uint8Array(length);
    await this.read(position, out);
    return out;
  }

  async write(position: number, source: Uint8Array): Promise<void> {
    await this.writev(position, [source]);
  }

  async writev(position: number, sources: readonly Uint8Array[]): Promise<void> {
    await this.track('write', position, async () => {
      if (!this.writable)
        throw new DiskIoError('EROFS', `${this.path} is open read-only`, position);
      let at = position;
      let pending = sources.filter((s) => s.length > 0);
      while (pending.length > 0) {
        const batch = pending.slice(0, MAX_IOVECS);
        const { bytesWritten } = await this.handle.writev(batch, at);
        if (bytesWritten === 0) {
          throw new DiskIoError(
            'EIO',
            `${this.path}: write at file offset ${at} made no progress`,
            at,
          );
        }
        at += bytesWritten;
        pending = advance(pending, bytesWritten);
      }
    });
  }

  /** Writes zeros over [position, position+length) with ordinary writes. */
  async writeZeros(position: number, length: number): Promise<void> {
    const chunk = zeros();
    let at = position;
    const end = position + length;
    while (at < end) {
      const n = Math.min(chunk.length, end - at);
      await this.write(at, chunk.subarray(0, n));
      at += n;
    }
  }

  /** Makes written data durable (fdatasync). */
  async sync(): Promise<void> {
    await this.track('sync', 0, () => this.handle.datasync());
  }

  async truncate(length: number): Promise<void> {
    await this.track('truncate', length, () => this.handle.truncate(length));
  }

  /** Deallocates the range (reads return zeros); false when the filesystem cannot. */
  punchHole(position: number, length: number): Promise<boolean> {
    return this.track('punch hole', position, () => punchHole(this.fd, position, length));
  }

  /** Zeroes the range without writing it; false when the filesystem cannot. */
  zeroRange(position: number, length: number): Promise<boolean> {
    return this.track('zero range', position, () => zeroRange(this.fd, position, length));
  }

  /** Reserves storage for the range, growing the file; false when the filesystem cannot. */
  preallocate(position: number, length: number): Promise<boolean> {
    return this.track('preallocate', position, () => preallocate(this.fd, position, length));
  }

  /**
   * Makes [position, position+length) read as zeros by the cheapest means the
   * filesystem offers: punch a hole when deallocating is allowed, else
   * convert to zeroed extents, else write zeros.
   */
  async zeroFill(position: number, length: number, deallocate: boolean): Promise<void> {
    if (length <= 0) return;
    if (deallocate && (await this.punchHole(position, length))) return;
    if (await this.zeroRange(position, length)) return;
    await this.writeZeros(position, length);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.inFlight > 0) {
      await new Promise<void>((resolve) => {
        this.drained = resolve;
      });
    }
    await this.handle.close();
  }
}

/** Drops the first `count` bytes from a list of buffers (as subarrays, no copy). */
function advance(buffers: readonly Uint8Array[], count: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let skip = count;
  for (const b of buffers) {
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    out.push(skip > 0 ? b.subarray(skip) : b);
    skip = 0;
  }
  return out;
}
