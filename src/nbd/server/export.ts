import type { BlockDevice } from '../../block/block-device.ts';
import { NBD_DEFAULT_MAX_BLOCK, NBD_MAX_STRING, TransmissionFlag } from '../protocol.ts';

/** What the server is asked to export under one name. */
export interface NbdExportOptions {
  /** Export name; '' is the default export of NBD_OPT_EXPORT_NAME / NBD_OPT_GO. */
  readonly name: string;
  readonly device: BlockDevice;
  readonly description?: string;
  /** Refuse writes even if the device accepts them. */
  readonly readOnly?: boolean;
  /**
   * Advertise NBD_FLAG_CAN_MULTI_CONN (default true). Every connection to an
   * export shares the one BlockDevice object, so a flush or FUA write on any
   * connection reaches the same cache; turn this off for a device whose
   * caching is per caller.
   */
  readonly multiConn?: boolean;
  /** Largest READ/WRITE/WRITE_ZEROES request accepted (default 32 MiB). */
  readonly maxBlockSize?: number;
}

/** An export with its block size constraints worked out and checked. */
export interface NbdExport {
  readonly name: string;
  readonly device: BlockDevice;
  readonly description: string;
  readonly readOnly: boolean;
  readonly multiConn: boolean;
  /** Smallest addressable unit: offsets and lengths must be multiples of it. */
  readonly minimumBlock: number;
  readonly preferredBlock: number;
  readonly maximumBlock: number;
}

/** Upper bound for the maximum block size: each request's data is held in one buffer. */
export const MAX_BLOCK_LIMIT = 1024 * 1024 * 1024;

const isPowerOfTwo = (n: number): boolean => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;

/**
 * Works out the block size constraints (proto.md "Block size constraints"):
 * the minimum is the device's logical sector (a power of two up to 64 KiB),
 * the preferred size is at least 4 KiB and the physical sector, the maximum a
 * multiple of the minimum.
 */
export function prepareExport(options: NbdExportOptions): NbdExport {
  const { name, device } = options;
  if (new TextEncoder().encode(name).length > NBD_MAX_STRING || name.includes('\0')) {
    throw new RangeError(`NBD export name ${JSON.stringify(name.slice(0, 40))} is not valid`);
  }
  const minimumBlock = device.logicalSectorSize;
  if (!isPowerOfTwo(minimumBlock) || minimumBlock > 65536) {
    throw new RangeError(
      `NBD export ${JSON.stringify(name)}: logical sector size ${minimumBlock} is not a power of two up to 65536`,
    );
  }
  let preferredBlock = Math.max(4096, minimumBlock, device.physicalSectorSize);
  if (!isPowerOfTwo(preferredBlock)) preferredBlock = Math.max(4096, minimumBlock);
  const requestedMax = options.maxBlockSize ?? NBD_DEFAULT_MAX_BLOCK;
  if (
    !Number.isSafeInteger(requestedMax) ||
    requestedMax < preferredBlock ||
    requestedMax > MAX_BLOCK_LIMIT
  ) {
    throw new RangeError(
      `NBD export ${JSON.stringify(name)}: maximum block size ${requestedMax} is not between the preferred ${preferredBlock} and ${MAX_BLOCK_LIMIT}`,
    );
  }
  const maximumBlock = requestedMax - (requestedMax % minimumBlock);
  return {
    name,
    device,
    description: options.description ?? '',
    readOnly: options.readOnly === true || device.readOnly,
    multiConn: options.multiConn ?? true,
    minimumBlock,
    preferredBlock,
    maximumBlock,
  };
}

/** Transmission flags for an export, given whether structured replies were agreed. */
export function transmissionFlags(exp: NbdExport, structuredReplies: boolean): number {
  let flags = TransmissionFlag.HasFlags | TransmissionFlag.SendFua;
  if (exp.readOnly) flags |= TransmissionFlag.ReadOnly;
  if (exp.device.canFlush) flags |= TransmissionFlag.SendFlush;
  if (!exp.readOnly) {
    // WRITE_ZEROES works on every device: without native support it writes
    // zeros. FAST_ZERO requests succeed only with native support (ENOTSUP
    // otherwise), which tells a copying client whether pre-zeroing pays.
    flags |= TransmissionFlag.SendWriteZeroes | TransmissionFlag.SendFastZero;
    if (exp.device.canDiscard) flags |= TransmissionFlag.SendTrim;
  }
  // Every read is answered with a single data chunk, so DF costs nothing.
  if (structuredReplies) flags |= TransmissionFlag.SendDf;
  if (exp.multiConn) flags |= TransmissionFlag.CanMultiConn;
  return flags;
}
