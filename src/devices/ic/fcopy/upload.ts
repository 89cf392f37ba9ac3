/**
 * A file copy that arrives at the host in pieces (the CLI sends chunks over
 * the control socket): one upload at a time, named by a session id, each
 * chunk at the offset that follows the last, never more than the announced
 * size, and an upload nobody feeds for a minute is cancelled in the guest.
 */
import { posix } from 'node:path';
import { DATA_FRAGMENT } from '../protocol.ts';
import { IcError } from '../vsp.ts';
import type { FcopyVsp } from './vsp.ts';

/** An abandoned upload (its client went away) is cancelled after this long without a chunk. */
export const UPLOAD_IDLE_MS = 60_000;

export interface UploadStart {
  /** Absolute guest path of the file. */
  readonly dest: string;
  readonly size: number;
  readonly overwrite: boolean;
  readonly createPath: boolean;
}

interface Upload {
  readonly id: string;
  readonly dest: string;
  readonly size: number;
  received: number;
  timer: ReturnType<typeof setTimeout> | undefined;
}

export class FcopyUploads {
  private current: Upload | undefined;

  constructor(
    private readonly vsp: FcopyVsp,
    private readonly log: (message: string) => void,
    private readonly idleMs = UPLOAD_IDLE_MS,
  ) {}

  /** Starts the copy in the guest; resolves with the session id and the chunk size to use. */
  async start(start: UploadStart): Promise<{ session: string; fragment: number }> {
    const { dest } = start;
    if (!dest.startsWith('/') || dest.endsWith('/')) {
      throw new IcError(
        `the guest destination must be an absolute file path, got ${JSON.stringify(dest)}`,
      );
    }
    if (this.current) throw new IcError(`a copy to ${this.current.dest} is in progress`);
    await this.vsp.start({
      directory: posix.dirname(dest),
      fileName: posix.basename(dest),
      size: start.size,
      overwrite: start.overwrite,
      createPath: start.createPath,
    });
    const upload: Upload = {
      id: crypto.randomUUID(),
      dest,
      size: start.size,
      received: 0,
      timer: undefined,
    };
    this.current = upload;
    this.touch(upload);
    return { session: upload.id, fragment: DATA_FRAGMENT };
  }

  /** The next chunk of a session; resolves with the bytes received so far. */
  async write(session: string, offset: number, data: Uint8Array): Promise<number> {
    const upload = this.find(session);
    if (offset !== upload.received) {
      throw new IcError(`chunk at offset ${offset}, expected ${upload.received}`);
    }
    if (upload.received + data.length > upload.size) {
      throw new IcError(`more data than the announced ${upload.size} bytes`);
    }
    this.touch(upload);
    try {
      await this.vsp.write(offset, data);
    } catch (error) {
      this.end();
      await this.vsp.cancel().catch(() => {});
      throw error;
    }
    upload.received += data.length;
    return upload.received;
  }

  async complete(session: string): Promise<{ dest: string; bytes: number }> {
    const upload = this.find(session);
    if (upload.received !== upload.size) {
      throw new IcError(`only ${upload.received} of ${upload.size} bytes arrived`);
    }
    this.end();
    await this.vsp.complete();
    return { dest: upload.dest, bytes: upload.received };
  }

  async cancel(session: string): Promise<{ cancelled: string }> {
    const upload = this.find(session);
    this.end();
    await this.vsp.cancel();
    return { cancelled: upload.dest };
  }

  /** Forgets the upload in progress (the VM is stopping). */
  dispose(): void {
    this.end();
  }

  private find(session: string): Upload {
    const upload = this.current;
    if (!upload || upload.id !== session) {
      throw new IcError(`no copy session ${session} (it finished, failed or timed out)`);
    }
    return upload;
  }

  private end(): void {
    clearTimeout(this.current?.timer);
    this.current = undefined;
  }

  private touch(upload: Upload): void {
    clearTimeout(upload.timer);
    upload.timer = setTimeout(() => {
      if (this.current !== upload) return;
      this.log(`copy to ${upload.dest} abandoned (no data for ${this.idleMs / 1000}s); cancelled`);
      this.end();
      void this.vsp.cancel().catch(() => {});
    }, this.idleMs);
    upload.timer.unref();
  }
}
