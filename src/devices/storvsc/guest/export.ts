/**
 * The guest's NBD exports of its storvsc disks, so real programs (fio,
 * nbdfuse, qemu-img, nbdcopy) can use them: one NBD server per disk, on a
 * Unix socket in a directory (<dir>/<prefix>-lun<N>.sock) or on loopback TCP
 * (port base + LUN, or any free port). A disk that goes away has its server closed: requests
 * in flight fail (the disk is already marked removed) and are answered,
 * then the connections end.
 */
import { lstat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { BlockDevice } from '../../../block/block-device.ts';
import { NbdServer } from '../../../nbd/server/server.ts';

export interface ExportPlacement {
  /** Directory for the Unix sockets. */
  readonly socketDir?: string;
  /** TCP port of LUN 0 on 127.0.0.1 (LUN n listens on base + n); 0 = any free port per LUN. */
  readonly tcpPortBase?: number;
}

export interface DiskExport {
  readonly lun: number;
  readonly uri: string;
}

interface Served {
  readonly server: NbdServer;
  readonly uri: string;
}

async function removeStaleSocket(path: string): Promise<void> {
  try {
    if ((await lstat(path)).isSocket()) await unlink(path);
  } catch {
    // Nothing there.
  }
}

export class GuestExports {
  private readonly served = new Map<number, Served>();

  constructor(
    /** Socket file prefix, e.g. "myvm-scsi0". */
    private readonly prefix: string,
    private readonly placement: ExportPlacement,
    private readonly log: (message: string) => void = () => {},
  ) {
    if (placement.socketDir === undefined && placement.tcpPortBase === undefined) {
      throw new Error('an NBD export needs a socket directory or a TCP port base');
    }
  }

  socketPath(lun: number): string | undefined {
    return this.placement.socketDir === undefined
      ? undefined
      : join(this.placement.socketDir, `${this.prefix}-lun${lun}.sock`);
  }

  /** Starts serving a disk; resolves with its NBD URI. */
  async add(lun: number, device: BlockDevice, description: string): Promise<string> {
    if (this.served.has(lun)) await this.remove(lun);
    const server = new NbdServer({
      exports: [{ name: '', device, description }],
      onDisconnect: () => {},
    });
    const socket = this.socketPath(lun);
    let uri: string;
    if (socket !== undefined) {
      await removeStaleSocket(socket);
      uri = (await server.listen({ socket })).uri;
    } else {
      uri = (await server.listen({ port: this.placement.tcpPortBase! + lun, host: '127.0.0.1' }))
        .uri;
    }
    this.served.set(lun, { server, uri });
    return uri;
  }

  /** Stops serving a disk (answering what is in flight first). */
  async remove(lun: number): Promise<void> {
    const served = this.served.get(lun);
    if (!served) return;
    this.served.delete(lun);
    try {
      await served.server.close();
    } catch (error) {
      // The final flush of a removed disk fails; the connections are closed all the same.
      this.log(`storvsc: export of LUN ${lun} closed: ${(error as Error).message}`);
    }
  }

  uri(lun: number): string | undefined {
    return this.served.get(lun)?.uri;
  }

  list(): DiskExport[] {
    return [...this.served.entries()]
      .map(([lun, s]) => ({ lun, uri: s.uri }))
      .sort((a, b) => a.lun - b.lun);
  }

  async closeAll(): Promise<void> {
    for (const lun of [...this.served.keys()]) await this.remove(lun);
  }
}
