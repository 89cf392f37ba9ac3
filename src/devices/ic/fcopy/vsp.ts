/**
 * The host's file copy service: START_FILE_COPY with the guest directory,
 * file name and flags, the data as WRITE_TO_FILE fragments of at most 6 KiB
 * (DATA_FRAGMENT), then COMPLETE_FCOPY; CANCEL_FCOPY when anything fails.
 * One file at a time, one message at a time.
 */
import { DeviceClass } from '../../../vmbus/protocol.ts';
import {
  DATA_FRAGMENT,
  FCOPY_DATA_OFFSET,
  FcopyFlags,
  FcopyOperation,
  HOST_IC_VERSIONS,
  hvDoFcopy,
  hvFcopyHdr,
  hvStartFcopy,
  ICMSG_HDR,
  IcMessageType,
  IcStatus,
  statusName,
  W_MAX_PATH,
} from '../protocol.ts';
import { encodeUtf16z } from '../utf16.ts';
import { hostOptions, IcError, type IcServiceOptions, IcVsp } from '../vsp.ts';

export interface FcopyStart {
  /** Guest directory, e.g. /var/tmp. */
  readonly directory: string;
  readonly fileName: string;
  readonly size: number;
  readonly overwrite?: boolean;
  readonly createPath?: boolean;
}

/** What a failed step means, for the person who asked for the copy. */
export function fcopyFailure(status: number, what: string): string {
  switch (status) {
    case IcStatus.ALREADY_EXISTS:
      return `${what} already exists in the guest (overwrite it with --overwrite)`;
    case IcStatus.PATH_NOT_FOUND:
      return `the guest has no such directory for ${what} (create it with --create-path)`;
    case IcStatus.DISK_FULL:
      return `the guest ran out of space writing ${what}`;
    case IcStatus.INVALIDARG:
      return `the guest refused the path ${what} (outside its copy root or an invalid name)`;
    default:
      return `the guest could not copy ${what}: it answered ${statusName(status)}`;
  }
}

export class FcopyVsp extends IcVsp {
  copies = 0;
  bytes = 0;
  private active: string | undefined;

  constructor(private readonly fcopy: IcServiceOptions & { timeoutMs?: number } = {}) {
    super(
      hostOptions(
        {
          name: 'fcopy',
          classId: DeviceClass.fcopy,
          messageType: IcMessageType.Fcopy,
          frameworkVersions: HOST_IC_VERSIONS.framework,
          serviceVersions: HOST_IC_VERSIONS.fcopy,
        },
        fcopy,
      ),
    );
  }

  /** The guest path of the copy in progress, if any. */
  get copying(): string | undefined {
    return this.active;
  }

  private async operation(
    op: FcopyOperation,
    size: number,
    fill?: (body: Uint8Array, view: DataView) => void,
  ): Promise<number> {
    const message = this.message(size);
    const body = message.subarray(ICMSG_HDR);
    const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
    view.setUint32(0, op, true);
    fill?.(body, view);
    const reply = await this.requestMessage(message, this.fcopy.timeoutMs ?? 30_000);
    return reply.status;
  }

  async start(start: FcopyStart): Promise<void> {
    const guestPath = `${start.directory.replace(/\/+$/, '')}/${start.fileName}`;
    if (this.active) throw new IcError(`a copy to ${this.active} is in progress`);
    const name = encodeUtf16z(start.fileName);
    const path = encodeUtf16z(start.directory);
    if (name.length > W_MAX_PATH * 2 || path.length > W_MAX_PATH * 2) {
      throw new IcError(
        `guest file and directory names are limited to ${W_MAX_PATH - 1} UTF-16 units each`,
      );
    }
    if (!Number.isSafeInteger(start.size) || start.size < 0) {
      throw new IcError(`file size ${start.size} is not a byte count`);
    }
    const flags =
      (start.overwrite ? FcopyFlags.OverWrite : 0) | (start.createPath ? FcopyFlags.CreatePath : 0);
    const status = await this.operation(FcopyOperation.StartFileCopy, hvStartFcopy.size, (body) => {
      hvStartFcopy.writeInto(body, 0, {
        hdr: {
          operation: FcopyOperation.StartFileCopy,
          service_id0: new Uint8Array(16),
          service_id1: new Uint8Array(16),
        },
        file_name: name,
        path_name: path,
        copy_flags: flags,
        file_size: BigInt(start.size),
      });
    });
    if (status !== IcStatus.S_OK) throw new IcError(fcopyFailure(status, guestPath));
    this.active = guestPath;
  }

  /** Writes `data` at `offset` of the file being copied, in fragments. */
  async write(offset: number, data: Uint8Array): Promise<void> {
    const target = this.active;
    if (!target) throw new IcError('no copy is in progress');
    for (let done = 0; done < data.length; done += DATA_FRAGMENT) {
      const piece = data.subarray(done, Math.min(data.length, done + DATA_FRAGMENT));
      const status = await this.operation(
        FcopyOperation.WriteToFile,
        FCOPY_DATA_OFFSET + piece.length,
        (body, view) => {
          view.setBigUint64(hvDoFcopy.offsetOf('offset'), BigInt(offset + done), true);
          view.setUint32(hvDoFcopy.offsetOf('size'), piece.length, true);
          body.set(piece, FCOPY_DATA_OFFSET);
        },
      );
      if (status !== IcStatus.S_OK) throw new IcError(fcopyFailure(status, target));
      this.bytes += piece.length;
    }
  }

  async complete(): Promise<void> {
    const target = this.active;
    if (!target) throw new IcError('no copy is in progress');
    const status = await this.operation(FcopyOperation.CompleteFcopy, hvFcopyHdr.size);
    this.active = undefined;
    if (status !== IcStatus.S_OK) throw new IcError(fcopyFailure(status, target));
    this.copies++;
  }

  /** Abandons the copy in progress (the guest removes the partial file). */
  async cancel(): Promise<void> {
    if (!this.active) return;
    this.active = undefined;
    await this.operation(FcopyOperation.CancelFcopy, hvFcopyHdr.size);
  }

  protected override closed(): void {
    this.active = undefined;
  }

  override describe(): Record<string, unknown> {
    return {
      ...super.describe(),
      copies: this.copies,
      bytes: this.bytes,
      ...(this.active ? { copying: this.active } : {}),
    };
  }
}
