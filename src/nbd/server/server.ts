import { lstat, unlink } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { formatNbdUri, type NbdAddress } from '../uri.ts';
import { NbdServerConnection } from './connection.ts';
import { type NbdExport, type NbdExportOptions, prepareExport } from './export.ts';
import type { ExportTable } from './options.ts';

/**
 * An NBD server (fixed newstyle, proto.md) exporting one or more
 * BlockDevices over a Unix socket or loopback TCP. The server never owns the
 * devices: closing it flushes them but leaves closing them to the caller.
 */

export type ListenAddress =
  | { readonly socket: string }
  | { readonly port: number; readonly host?: string };

export interface ListeningAddress {
  /** Where clients connect (the actual port when 0 was asked for). */
  readonly address: NbdAddress;
  /** The NBD URI of the default export, e.g. nbd+unix:///?socket=/tmp/s. */
  readonly uri: string;
}

export interface NbdServerOptions {
  readonly exports: readonly NbdExportOptions[];
  /** Export chosen by the empty name; the first export when not given. */
  readonly defaultExport?: string;
  /** Called for each connection that ends, with the reason. */
  readonly onDisconnect?: (reason: string) => void;
}

export class NbdServer implements ExportTable {
  private readonly byName = new Map<string, NbdExport>();
  private readonly defaultName: string;
  private readonly connections = new Set<NbdServerConnection>();
  private readonly sockets = new Set<Socket>();
  private server: Server | undefined;
  private socketPath: string | undefined;
  private closing: Promise<void> | undefined;

  constructor(private readonly options: NbdServerOptions) {
    if (options.exports.length === 0)
      throw new RangeError('an NBD server needs at least one export');
    for (const e of options.exports) {
      if (this.byName.has(e.name))
        throw new RangeError(`export ${JSON.stringify(e.name)} is given twice`);
      this.byName.set(e.name, prepareExport(e));
    }
    this.defaultName = options.defaultExport ?? options.exports[0]!.name;
    if (!this.byName.has(this.defaultName)) {
      throw new RangeError(`default export ${JSON.stringify(this.defaultName)} is not exported`);
    }
  }

  lookup(name: string): NbdExport | undefined {
    return this.byName.get(name === '' ? this.defaultName : name);
  }

  list(): readonly NbdExport[] {
    return [...this.byName.values()];
  }

  /** Connections currently open. */
  get connectionCount(): number {
    return this.connections.size;
  }

  async listen(address: ListenAddress): Promise<ListeningAddress> {
    if (this.server) throw new Error('NBD server is already listening');
    const server = createServer({ noDelay: true }, (socket) => this.accept(socket));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      const done = (): void => {
        server.off('error', reject);
        resolve();
      };
      if ('socket' in address) server.listen(address.socket, done);
      else server.listen(address.port, address.host ?? '127.0.0.1', done);
    });
    server.on('error', () => {
      // Errors after listening concern single connections, handled per socket.
    });
    let where: NbdAddress;
    if ('socket' in address) {
      this.socketPath = address.socket;
      where = { transport: 'unix', socket: address.socket };
    } else {
      const bound = server.address();
      const port = typeof bound === 'object' && bound ? bound.port : address.port;
      where = { transport: 'tcp', host: address.host ?? '127.0.0.1', port };
    }
    return { address: where, uri: formatNbdUri({ address: where, exportName: '' }) };
  }

  private accept(socket: Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    this.sockets.add(socket);
    const connection = new NbdServerConnection(socket, this, {
      closed: (reason) => this.options.onDisconnect?.(reason),
    });
    this.connections.add(connection);
    socket.on('data', (chunk: Buffer) => connection.receive(chunk));
    socket.on('drain', () => connection.outputDrained());
    socket.on('end', () => connection.inputEnded());
    socket.on('error', (err) => connection.inputEnded(`socket error: ${err.message}`));
    socket.on('close', () => {
      connection.inputEnded();
      this.sockets.delete(socket);
      void connection.idle().then(() => this.connections.delete(connection));
    });
    connection.start();
  }

  /**
   * Graceful stop: stop accepting, let every connection finish and answer
   * its running requests, flush every writable export, close. Rejects with
   * the first flush failure (after closing everything).
   */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    const server = this.server;
    const stopped = server
      ? new Promise<void>((resolve) => server.close(() => resolve()))
      : Promise.resolve();
    await Promise.all([...this.connections].map((c) => c.shutdown()));
    let failure: unknown;
    for (const exp of this.byName.values()) {
      if (exp.readOnly || !exp.device.canFlush) continue;
      try {
        await exp.device.flush();
      } catch (err) {
        failure ??= err;
      }
    }
    // Sockets that did not close after end() (a peer that never reads) are cut.
    const linger = setTimeout(() => {
      for (const s of this.sockets) s.destroy();
    }, 2000);
    await stopped;
    clearTimeout(linger);
    if (this.socketPath) await removeSocket(this.socketPath);
    if (failure) throw failure;
  }
}

async function removeSocket(path: string): Promise<void> {
  try {
    const st = await lstat(path);
    if (st.isSocket()) await unlink(path);
  } catch {
    // Already gone.
  }
}
