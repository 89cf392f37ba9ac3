import { type BlockDevice, checkRange, DiskIoError } from './block-device.ts';

/** What a request does: read, write, or write whole logical sectors only. */
export type RequestAccess = 'read' | 'write' | 'sector write';

/**
 * Throws the DiskIoError an image backend's request gets before it starts:
 * ECLOSED once the device is closed, EINVAL or ERANGE for a bad range (see
 * checkRange), EROFS for a change to a read-only device, and EINVAL for a
 * 'sector write' not aligned to the logical sector size. `name` (the image's
 * path) is what the messages call the device.
 */
export function checkRequest(
  device: BlockDevice,
  name: string,
  closed: boolean,
  offset: number,
  length: number,
  access: RequestAccess,
): void {
  if (closed) throw new DiskIoError('ECLOSED', `${name} is closed`, offset);
  checkRange(device, offset, length);
  if (access === 'read') return;
  if (device.readOnly) throw new DiskIoError('EROFS', `${name} is open read-only`, offset);
  if (access !== 'sector write') return;
  const sector = device.logicalSectorSize;
  if (offset % sector !== 0 || length % sector !== 0) {
    throw new DiskIoError(
      'EINVAL',
      `unaligned request: offset ${offset}, length ${length}, sector size ${sector}`,
      offset,
    );
  }
}

/**
 * Re-throws a file-level DiskIoError (which carries a file offset) as one
 * carrying the virtual offset it concerns; any other error passes through.
 */
export function atVirtual(error: unknown, offset: number): never {
  if (error instanceof DiskIoError) throw new DiskIoError(error.code, error.message, offset);
  throw error;
}
