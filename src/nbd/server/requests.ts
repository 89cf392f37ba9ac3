import { DiskIoError, ImageFormatError } from '../../block/block-device.ts';
import { acquirePayloadBuffer, releasePayloadBuffer } from '../payload-buffers.ts';
import { Command, CommandFlag, NbdError, nameOf } from '../protocol.ts';
import type { NbdExport } from './export.ts';
import {
  errorReply,
  noneReply,
  OFFSET_DATA_PREFIX,
  offsetDataReply,
  SIMPLE_REPLY_SIZE,
  simpleReply,
  writeSimpleReply,
} from './replies.ts';

/**
 * Checking and carrying out one transmission request on the server
 * (proto.md "Request types", "Error values"). Nothing here touches the
 * socket: a request goes in, the bytes of its reply come out.
 */

export interface ServerRequest {
  readonly flags: number;
  readonly type: number;
  /** The client's 8-byte cookie, echoed verbatim in the reply. */
  readonly handle: Uint8Array;
  /** Byte offset; values past 2^53 lose precision but are then out of range anyway. */
  readonly offset: number;
  readonly length: number;
  /** WRITE payload. */
  data?: Uint8Array;
}

export interface RequestRejection {
  readonly error: NbdError;
  readonly message: string;
}

const writesData = (type: number): boolean =>
  type === Command.Write || type === Command.Trim || type === Command.WriteZeroes;

/** Flags each command accepts; FUA is accepted everywhere because we advertise it. */
function allowedFlags(type: number, structured: boolean): number {
  switch (type) {
    case Command.Read:
      return CommandFlag.Fua | (structured ? CommandFlag.Df : 0);
    case Command.WriteZeroes:
      return CommandFlag.Fua | CommandFlag.NoHole | CommandFlag.FastZero;
    default:
      return CommandFlag.Fua;
  }
}

/**
 * The error for a request the export cannot carry out as sent, or undefined
 * when it is acceptable. Misaligned, oversized and out-of-range requests get
 * EINVAL, except writes past the end (ENOSPC) and writes to a read-only
 * export (EPERM), as the spec recommends.
 */
export function checkRequest(
  req: ServerRequest,
  exp: NbdExport,
  structured: boolean,
): RequestRejection | undefined {
  const { type, flags, offset, length } = req;
  const command = nameOf(Command, type);
  switch (type) {
    case Command.Read:
    case Command.Write:
    case Command.Flush:
    case Command.WriteZeroes:
    case Command.Trim:
      break;
    default:
      return { error: NbdError.EINVAL, message: `command ${command} is not supported` };
  }
  const extra = flags & ~allowedFlags(type, structured);
  if (extra !== 0) {
    return {
      error: NbdError.EINVAL,
      message: `flags 0x${extra.toString(16)} are not valid for ${command}`,
    };
  }
  if (type === Command.Flush) {
    if (!exp.device.canFlush) return { error: NbdError.EINVAL, message: 'flush is not supported' };
    if (offset !== 0 || length !== 0) {
      return { error: NbdError.EINVAL, message: 'FLUSH must have offset 0 and length 0' };
    }
    return undefined;
  }
  if (writesData(type) && exp.readOnly) {
    return { error: NbdError.EPERM, message: `export ${JSON.stringify(exp.name)} is read-only` };
  }
  if (type === Command.Trim && !exp.device.canDiscard) {
    return { error: NbdError.EINVAL, message: 'trim is not supported' };
  }
  const unit = exp.minimumBlock;
  if (offset % unit !== 0 || length % unit !== 0) {
    return {
      error: NbdError.EINVAL,
      message: `${command} at ${offset}+${length} is not aligned to ${unit} bytes`,
    };
  }
  if (type !== Command.Trim && length > exp.maximumBlock) {
    return {
      error: NbdError.EINVAL,
      message: `${command} of ${length} bytes exceeds the maximum of ${exp.maximumBlock}`,
    };
  }
  const size = exp.device.size;
  if (offset > size || length > size - offset) {
    return {
      error:
        type === Command.Write || type === Command.WriteZeroes ? NbdError.ENOSPC : NbdError.EINVAL,
      message: `${command} at ${offset}+${length} is past the end of the ${size}-byte export`,
    };
  }
  return undefined;
}

/** The reply for a rejected request, simple or structured. */
export function rejectionReply(
  req: ServerRequest,
  rejection: RequestRejection,
  structured: boolean,
): Uint8Array {
  return structured
    ? errorReply(req.handle, rejection.error, rejection.message)
    : simpleReply(req.handle, rejection.error);
}

/** Maps a backend failure to an NBD error value. */
export function errorFor(type: number, cause: unknown): NbdError {
  if (cause instanceof DiskIoError) {
    switch (cause.code) {
      case 'ENOSPC':
        return NbdError.ENOSPC;
      case 'EROFS':
        return NbdError.EPERM;
      case 'EINVAL':
        return NbdError.EINVAL;
      case 'ERANGE':
        return type === Command.Write || type === Command.WriteZeroes
          ? NbdError.ENOSPC
          : NbdError.EINVAL;
      case 'ECLOSED':
        return NbdError.ESHUTDOWN;
      default:
        return NbdError.EIO;
    }
  }
  return NbdError.EIO;
}

function failureReply(req: ServerRequest, cause: unknown, structured: boolean): Uint8Array {
  const error = errorFor(req.type, cause);
  if (!structured) return simpleReply(req.handle, error);
  const message =
    cause instanceof DiskIoError || cause instanceof ImageFormatError
      ? cause.message
      : `${nameOf(Command, req.type)} failed: ${String(cause)}`;
  const at = cause instanceof DiskIoError ? cause.offset : undefined;
  const inside =
    at !== undefined &&
    req.type !== Command.Flush &&
    at >= req.offset &&
    at < req.offset + req.length;
  return errorReply(req.handle, error, message, inside ? at : undefined);
}

/** Largest piece WRITE_ZEROES writes at once on devices without native zeroing. */
const ZERO_PIECE = 1024 * 1024;
let zeroPiece: Uint8Array | undefined;

async function writeZeroes(exp: NbdExport, req: ServerRequest): Promise<void> {
  const fua = (req.flags & CommandFlag.Fua) !== 0;
  const device = exp.device;
  if (device.canWriteZeroes) {
    await device.writeZeroes(req.offset, req.length, {
      fua,
      mayUnmap: (req.flags & CommandFlag.NoHole) === 0,
    });
    return;
  }
  zeroPiece ??= new Uint8Array(ZERO_PIECE);
  for (let done = 0; done < req.length; done += ZERO_PIECE) {
    const n = Math.min(ZERO_PIECE, req.length - done);
    await device.write(req.offset + done, zeroPiece.subarray(0, n), { fua });
  }
}

/**
 * Carries out an accepted request on the export's device and returns its
 * reply. Never rejects: backend failures become error replies.
 */
export async function executeRequest(
  exp: NbdExport,
  req: ServerRequest,
  structured: boolean,
): Promise<Uint8Array> {
  const device = exp.device;
  const fua = (req.flags & CommandFlag.Fua) !== 0;
  try {
    switch (req.type) {
      case Command.Read: {
        if (req.length === 0) {
          return structured ? noneReply(req.handle) : simpleReply(req.handle, 0);
        }
        if (structured) {
          const out = offsetDataReply(req.handle, req.offset, req.length);
          await device
            .read(req.offset, out.subarray(OFFSET_DATA_PREFIX))
            .catch((error: unknown) => {
              releasePayloadBuffer(out);
              throw error;
            });
          return out;
        }
        const out = acquirePayloadBuffer(SIMPLE_REPLY_SIZE + req.length);
        await device.read(req.offset, out.subarray(SIMPLE_REPLY_SIZE)).catch((error: unknown) => {
          releasePayloadBuffer(out);
          throw error;
        });
        writeSimpleReply(out, 0, req.handle);
        return out;
      }
      case Command.Write:
        if (req.length > 0) await device.write(req.offset, req.data!, { fua });
        break;
      case Command.Flush:
        await device.flush();
        break;
      case Command.Trim:
        if (req.length > 0) {
          await device.discard(req.offset, req.length);
          if (fua && device.canFlush) await device.flush();
        }
        break;
      case Command.WriteZeroes:
        if ((req.flags & CommandFlag.FastZero) !== 0 && !device.canWriteZeroes) {
          return rejectionReply(
            req,
            { error: NbdError.ENOTSUP, message: 'this device cannot zero faster than it writes' },
            structured,
          );
        }
        if (req.length > 0) await writeZeroes(exp, req);
        break;
      default:
        return rejectionReply(
          req,
          { error: NbdError.EINVAL, message: `command ${req.type} is not supported` },
          structured,
        );
    }
  } catch (cause) {
    return failureReply(req, cause, structured);
  }
  return structured ? noneReply(req.handle) : simpleReply(req.handle, 0);
}
