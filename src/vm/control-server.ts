import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { type ControlResponse, LineSplitter, parseRequest } from './control-protocol.ts';

export type ControlHandler = (command: string, args: Record<string, unknown>) => Promise<unknown>;

/**
 * The control socket of a running VM: a Unix socket (mode 0600) speaking
 * line-delimited JSON. Refuses to start when another VM already answers on
 * the same path; removes a stale socket left by a VM that died.
 */
export class ControlServer {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();

  constructor(
    readonly path: string,
    private readonly handler: ControlHandler,
  ) {}

  async start(): Promise<void> {
    mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
    if (await isListening(this.path)) {
      throw new Error(`a VM is already running with control socket ${this.path}`);
    }
    rmSync(this.path, { force: true });
    const server = createServer((socket) => this.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    chmodSync(this.path, 0o600);
    this.server = server;
  }

  private accept(socket: Socket): void {
    this.sockets.add(socket);
    socket.setEncoding('utf8');
    const splitter = new LineSplitter();
    const reply = (response: ControlResponse): void => {
      if (!socket.destroyed) socket.write(`${JSON.stringify(response)}\n`);
    };
    socket.on('data', (text: string) => {
      let lines: string[];
      try {
        lines = splitter.push(text);
      } catch (error) {
        reply({ id: -1, ok: false, error: (error as Error).message });
        socket.end();
        return;
      }
      for (const line of lines) {
        const request = parseRequest(line);
        if (typeof request === 'string') {
          reply({ id: -1, ok: false, error: request });
          continue;
        }
        this.handler(request.command, request.args ?? {}).then(
          (result) => reply({ id: request.id, ok: true, result: result ?? null }),
          (error: Error) => reply({ id: request.id, ok: false, error: error.message }),
        );
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => this.sockets.delete(socket));
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    for (const socket of this.sockets) socket.end();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    for (const socket of this.sockets) socket.destroy();
    rmSync(this.path, { force: true });
  }
}

/** True when something accepts connections on the Unix socket. */
function isListening(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}
