/**
 * The block device seam between disk backends (raw, VHDX, VHD, NBD client)
 * and their users (the SCSI target, the NBD server, `hvkit disk`).
 *
 * Offsets and lengths are in bytes. Reads and writes take caller-owned
 * buffers so that data can move straight between guest memory (views over a
 * SharedArrayBuffer) and the backing file with one kernel copy; the vectored
 * forms take the scatter/gather list of a guest page list as it is.
 *
 * Every method rejects with a DiskIoError for I/O failures (carrying the
 * failing byte offset, which the SCSI target turns into sense data) and with
 * an ImageFormatError when the image's own metadata is wrong.
 */
export interface BlockDevice {
  /** 'raw' | 'vhdx' | 'vhd' | 'nbd' (lowercase). */
  readonly format: string;
  /** Virtual size in bytes, a multiple of the logical sector size. */
  readonly size: number;
  readonly logicalSectorSize: number;
  readonly physicalSectorSize: number;
  readonly readOnly: boolean;
  /** A 16-byte unique id for SCSI VPD page 0x83 (VHDX Page83Data, VHD unique id, ...). */
  readonly identifier: Uint8Array;
  readonly canFlush: boolean;
  readonly canDiscard: boolean;
  readonly canWriteZeroes: boolean;

  read(offset: number, target: Uint8Array): Promise<void>;
  readv(offset: number, targets: readonly Uint8Array[]): Promise<void>;
  write(offset: number, source: Uint8Array, options?: WriteOptions): Promise<void>;
  writev(offset: number, sources: readonly Uint8Array[], options?: WriteOptions): Promise<void>;
  flush(): Promise<void>;
  /** Deallocate the range; later reads return zeros. */
  discard(offset: number, length: number): Promise<void>;
  writeZeroes(offset: number, length: number, options?: WriteZeroesOptions): Promise<void>;
  close(): Promise<void>;
}

export interface WriteOptions {
  /** Force unit access: the data is durable when the promise resolves. */
  readonly fua?: boolean;
}

export interface WriteZeroesOptions extends WriteOptions {
  /** The backend may deallocate instead of writing zeros. */
  readonly mayUnmap?: boolean;
}

export type DiskErrorCode = 'EIO' | 'ENOSPC' | 'EROFS' | 'EINVAL' | 'ERANGE' | 'ECLOSED';

/** An I/O request failed. `offset` is the first byte the failure concerns. */
export class DiskIoError extends Error {
  override readonly name = 'DiskIoError';
  constructor(
    readonly code: DiskErrorCode,
    message: string,
    readonly offset?: number,
  ) {
    super(message);
  }
}

/**
 * An image file is malformed. `structure` names what is wrong ("VHDX header
 * 1", "BAT entry 17", "VHD footer"), so the message can point at it.
 */
export class ImageFormatError extends Error {
  override readonly name = 'ImageFormatError';
  constructor(
    readonly structure: string,
    message: string,
  ) {
    super(`${structure}: ${message}`);
  }
}

/** Checks that [offset, offset+length) lies inside the device and is sector aligned. */
export function checkRange(device: BlockDevice, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new DiskIoError('EINVAL', `bad range: offset ${offset}, length ${length}`, offset);
  }
  if (offset + length > device.size) {
    throw new DiskIoError(
      'ERANGE',
      `range ${offset}+${length} is past the end of the ${device.size}-byte device`,
      offset,
    );
  }
}
