/**
 * The guest's file copy service (Linux tools/hv/hv_fcopy_uio_daemon.c):
 * START_FILE_COPY creates the file (directories too with CREATE_PATH; an
 * existing file only with OVER_WRITE), WRITE_TO_FILE writes a fragment at
 * its offset, COMPLETE_FCOPY closes it, CANCEL_FCOPY closes and removes the
 * partial file.
 *
 * Files land under a root directory that stands for the guest's file
 * system: the host's absolute guest path /a/b lands at <root>/a/b. Paths
 * that climb out of the root (.., symbolic links) are refused.
 *
 * Statuses: HV_ERROR_ALREADY_EXISTS, HV_ERROR_DISK_FULL (ENOSPC) as Linux;
 * a missing directory without CREATE_PATH is ERROR_PATH_NOT_FOUND and a
 * path outside the root or an invalid name HV_INVALIDARG, where Linux
 * answers a bare HV_E_FAIL, so the host can say what was wrong.
 */
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  realpathSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { join, resolve, sep } from 'node:path';
import { DeviceClass } from '../../../vmbus/protocol.ts';
import {
  DATA_FRAGMENT,
  FCOPY_DATA_OFFSET,
  FcopyFlags,
  FcopyOperation,
  hvDoFcopy,
  hvFcopyHdr,
  hvStartFcopy,
  IC_RING_BYTES,
  IcMessageType,
  IcStatus,
  LINUX_IC_VERSIONS,
  W_MAX_PATH,
} from '../protocol.ts';
import { decodeUtf16z } from '../utf16.ts';
import type { IcAnswer, IcGuestService, IcRequest } from '../vsc.ts';

const FILE_NAME = hvStartFcopy.offsetOf('file_name');
const PATH_NAME = hvStartFcopy.offsetOf('path_name');
const COPY_FLAGS = hvStartFcopy.offsetOf('copy_flags');
const FILE_SIZE = hvStartFcopy.offsetOf('file_size');
const WRITE_OFFSET = hvDoFcopy.offsetOf('offset');
const WRITE_SIZE = hvDoFcopy.offsetOf('size');
const NAME_BYTES = W_MAX_PATH * 2;

interface OpenFile {
  readonly fd: number;
  /** Where it is on this machine. */
  readonly path: string;
  /** The path the host gave (for status and logs). */
  readonly guestPath: string;
  readonly size: bigint;
  written: number;
}

export interface FcopyStats {
  started: number;
  completed: number;
  cancelled: number;
  failed: number;
  bytes: number;
}

export class FcopyService implements IcGuestService {
  readonly name = 'fcopy';
  readonly classId = DeviceClass.fcopy;
  readonly messageType = IcMessageType.Fcopy;
  readonly frameworkVersions = LINUX_IC_VERSIONS.fcopyFramework;
  readonly serviceVersions = LINUX_IC_VERSIONS.fcopy;
  readonly maxMessageBytes = IC_RING_BYTES;
  readonly stats: FcopyStats = { started: 0, completed: 0, cancelled: 0, failed: 0, bytes: 0 };
  lastError = '';
  private file: OpenFile | undefined;

  constructor(
    /** The directory that stands for the guest's root. */
    readonly root: string,
    private readonly log: (message: string) => void = () => {},
  ) {
    mkdirSync(root, { recursive: true });
  }

  handle({ body }: IcRequest): IcAnswer {
    if (body.length < hvFcopyHdr.size) {
      return this.fail(IcStatus.E_FAIL, `fcopy message of ${body.length} bytes has no header`);
    }
    const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
    const op = view.getUint32(0, true);
    try {
      switch (op) {
        case FcopyOperation.StartFileCopy:
          return this.start(body, view);
        case FcopyOperation.WriteToFile:
          return this.write(body, view);
        case FcopyOperation.CompleteFcopy:
          return this.complete();
        case FcopyOperation.CancelFcopy:
          return this.cancel();
        default:
          return this.fail(IcStatus.E_FAIL, `unknown fcopy operation ${op}`);
      }
    } catch (error) {
      return this.fail(IcStatus.E_FAIL, (error as Error).message);
    }
  }

  private fail(status: number, reason: string): number {
    this.stats.failed++;
    this.lastError = reason;
    this.log(`fcopy: ${reason}`);
    return status;
  }

  private start(body: Uint8Array, view: DataView): number {
    if (body.length < hvStartFcopy.size) {
      return this.fail(
        IcStatus.E_FAIL,
        `START_FILE_COPY of ${body.length} bytes, needs ${hvStartFcopy.size}`,
      );
    }
    this.abandon();
    const fileName = decodeUtf16z(body.subarray(FILE_NAME, FILE_NAME + NAME_BYTES), NAME_BYTES);
    const pathName = decodeUtf16z(body.subarray(PATH_NAME, PATH_NAME + NAME_BYTES), NAME_BYTES);
    const flags = view.getUint32(COPY_FLAGS, true);
    const size = view.getBigUint64(FILE_SIZE, true);
    const guestPath = `${pathName.replace(/[\\/]+$/, '')}/${fileName}`;
    if (fileName === '' || fileName === '.' || fileName === '..' || /[\\/\0]/.test(fileName)) {
      return this.fail(IcStatus.INVALIDARG, `invalid file name ${JSON.stringify(fileName)}`);
    }
    const parts = pathName.split(/[\\/]+/).filter((p) => p !== '' && p !== '.');
    if (parts.includes('..') || pathName.includes('\0')) {
      return this.fail(
        IcStatus.INVALIDARG,
        `path ${JSON.stringify(pathName)} leaves the guest's root`,
      );
    }
    const root = realpathSync(this.root);
    const directory = resolve(root, ...parts);
    if (!existsSync(directory)) {
      if ((flags & FcopyFlags.CreatePath) === 0) {
        return this.fail(IcStatus.PATH_NOT_FOUND, `no directory ${pathName} (CREATE_PATH not set)`);
      }
      mkdirSync(directory, { recursive: true, mode: 0o755 });
    }
    const real = realpathSync(directory);
    if (real !== root && !real.startsWith(`${root}${sep}`)) {
      return this.fail(
        IcStatus.INVALIDARG,
        `path ${JSON.stringify(pathName)} leads out of the guest's root`,
      );
    }
    if (!statSync(real).isDirectory()) {
      return this.fail(IcStatus.PATH_NOT_FOUND, `${pathName} is not a directory`);
    }
    const path = join(real, fileName);
    if (existsSync(path) && (flags & FcopyFlags.OverWrite) === 0) {
      return this.fail(IcStatus.ALREADY_EXISTS, `${guestPath} exists (OVER_WRITE not set)`);
    }
    const fd = openSync(path, 'w', 0o644);
    this.file = { fd, path, guestPath, size, written: 0 };
    this.stats.started++;
    return IcStatus.S_OK;
  }

  private write(body: Uint8Array, view: DataView): number {
    const file = this.file;
    if (!file) return this.fail(IcStatus.E_FAIL, 'WRITE_TO_FILE without a file being copied');
    if (body.length < FCOPY_DATA_OFFSET) {
      return this.fail(IcStatus.E_FAIL, `WRITE_TO_FILE of ${body.length} bytes has no data header`);
    }
    const offset = view.getBigUint64(WRITE_OFFSET, true);
    const size = view.getUint32(WRITE_SIZE, true);
    if (size > DATA_FRAGMENT || FCOPY_DATA_OFFSET + size > body.length) {
      return this.fail(
        IcStatus.E_FAIL,
        `WRITE_TO_FILE of ${size} bytes in a ${body.length}-byte message (at most ${DATA_FRAGMENT})`,
      );
    }
    if (offset + BigInt(size) > BigInt(Number.MAX_SAFE_INTEGER)) {
      return this.fail(
        IcStatus.E_FAIL,
        `WRITE_TO_FILE at offset ${offset} is beyond what this guest writes`,
      );
    }
    const data = body.subarray(FCOPY_DATA_OFFSET, FCOPY_DATA_OFFSET + size);
    let done = 0;
    try {
      while (done < size) {
        done += writeSync(file.fd, data, done, size - done, Number(offset) + done);
      }
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOSPC' || code === 'EDQUOT') {
        return this.fail(
          IcStatus.DISK_FULL,
          `${file.guestPath}: no space left after ${file.written} bytes`,
        );
      }
      return this.fail(IcStatus.E_FAIL, `${file.guestPath}: ${(error as Error).message}`);
    }
    file.written += size;
    this.stats.bytes += size;
    return IcStatus.S_OK;
  }

  private complete(): number {
    const file = this.file;
    if (!file) return this.fail(IcStatus.E_FAIL, 'COMPLETE_FCOPY without a file being copied');
    this.file = undefined;
    try {
      fsyncSync(file.fd);
    } finally {
      closeSync(file.fd);
    }
    this.stats.completed++;
    return IcStatus.S_OK;
  }

  private cancel(): number {
    if (!this.file) return IcStatus.S_OK;
    this.abandon();
    this.stats.cancelled++;
    return IcStatus.S_OK;
  }

  /** Closes and removes a file whose copy did not complete. */
  private abandon(): void {
    const file = this.file;
    if (!file) return;
    this.file = undefined;
    closeSync(file.fd);
    rmSync(file.path, { force: true });
  }

  /** The channel closed or the guest stops: an unfinished copy is removed. */
  closed(): void {
    this.abandon();
  }

  summary(): string {
    const s = this.stats;
    return `${s.completed} files copied in (${(s.bytes / 1024 / 1024).toFixed(1)} MiB)`;
  }

  describe(): Record<string, unknown> {
    return {
      root: this.root,
      ...this.stats,
      ...(this.file ? { copying: this.file.guestPath, written: this.file.written } : {}),
      ...(this.lastError ? { lastError: this.lastError } : {}),
    };
  }
}
