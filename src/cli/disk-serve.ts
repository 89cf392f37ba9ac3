import { lstat, unlink } from 'node:fs/promises';
import { connect } from 'node:net';
import { Command, InvalidArgumentError, Option } from 'commander';
import type { BlockDevice } from '../block/block-device.ts';
import { DISK_FORMATS, type DiskFormat } from '../block/image/open.ts';
import { openDisk } from '../nbd/open-disk.ts';
import { type ListenAddress, NbdServer } from '../nbd/server/server.ts';
import { formatNbdUri } from '../nbd/uri.ts';

/**
 * `hvkit disk serve <image>`: exports a disk image over NBD on a Unix socket
 * or a loopback TCP port until SIGINT/SIGTERM, then stops gracefully
 * (running requests finish, the image is flushed and closed).
 */

interface ServeOptions {
  socket?: string;
  port?: number;
  export: string;
  readOnly?: boolean;
  format?: DiskFormat;
}

function parsePort(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError('a port is a number from 0 to 65535');
  const port = Number(value);
  if (port > 65535) throw new InvalidArgumentError('a port is a number from 0 to 65535');
  return port;
}

function formatSize(bytes: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1 && value % 1024 === 0) {
    value /= 1024;
    unit++;
  }
  return `${value} ${units[unit]}`;
}

/**
 * A socket path that already exists is reused only when it is a socket that
 * nobody listens on (left over from a crash); anything else is refused so
 * that no file is ever clobbered.
 */
async function prepareSocketPath(path: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = (await lstat(path)).isSocket();
  } catch {
    return;
  }
  if (!isSocket) throw new Error(`${path} exists and is not a socket`);
  const live = await new Promise<boolean>((resolve) => {
    const probe = connect({ path });
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (live) throw new Error(`${path} is in use by another server`);
  await unlink(path);
}

/** Ends of connections that are routine and not worth a log line. */
const ROUTINE_ENDS = new Set([
  'client disconnected',
  'client sent NBD_CMD_DISC',
  'abort',
  'server shutting down',
]);

/**
 * Reports connections dropped for protocol violations on stderr, at most
 * five per ten seconds (a misbehaving client cannot flood the log).
 */
function disconnectLogger(): (reason: string) => void {
  let windowStart = 0;
  let logged = 0;
  let suppressed = 0;
  return (reason) => {
    if (ROUTINE_ENDS.has(reason) || reason.startsWith('socket error')) return;
    const now = Date.now();
    if (now - windowStart > 10_000) {
      if (suppressed > 0) console.error(`hvkit disk serve: ${suppressed} more dropped connections`);
      windowStart = now;
      logged = 0;
      suppressed = 0;
    }
    if (logged < 5) {
      logged++;
      console.error(`hvkit disk serve: dropped a connection: ${reason}`);
    } else {
      suppressed++;
    }
  };
}

/** Resolves on the first SIGINT or SIGTERM. */
function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const handler = (signal: NodeJS.Signals): void => {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
      resolve(signal);
    };
    process.on('SIGINT', handler);
    process.on('SIGTERM', handler);
  });
}

async function serve(image: string, options: ServeOptions): Promise<void> {
  if ((options.socket === undefined) === (options.port === undefined)) {
    throw new Error('give exactly one of --socket PATH or --port N');
  }
  const address: ListenAddress =
    options.socket !== undefined ? { socket: options.socket } : { port: options.port! };
  if ('socket' in address) await prepareSocketPath(address.socket);

  const device: BlockDevice = await openDisk(image, {
    ...(options.format ? { format: options.format } : {}),
    readOnly: options.readOnly === true,
  });
  let server: NbdServer | undefined;
  try {
    server = new NbdServer({
      exports: [{ name: options.export, device }],
      onDisconnect: disconnectLogger(),
    });
    const stopping = untilSignal();
    const where = await server.listen(address);
    const access = device.readOnly ? 'read-only' : 'read-write';
    const name = options.export ? ` as export ${JSON.stringify(options.export)}` : '';
    const uri = formatNbdUri({ address: where.address, exportName: options.export });
    console.log(
      `serving ${image} (${device.format}, ${formatSize(device.size)}, ${access})${name} at ${uri}`,
    );
    const signal = await stopping;
    console.log(`${signal}: stopping; finishing requests in flight`);
    await server.close();
  } finally {
    await device.close();
  }
  console.log('stopped; image flushed and closed');
}

export function serveCommand(): Command {
  return new Command('serve')
    .description('export a disk image over NBD (Unix socket or loopback TCP) until interrupted')
    .argument('<image>', 'disk image file (raw, VHDX or VHD)')
    .option('--socket <path>', 'listen on this Unix socket')
    .option('--port <n>', 'listen on 127.0.0.1 at this TCP port (0 picks a free one)', parsePort)
    .option('--export <name>', 'export name (the default export also maps to it)', '')
    .option('--read-only', 'refuse writes')
    .addOption(
      new Option('--format <format>', 'image format (detected when omitted)').choices(DISK_FORMATS),
    )
    .action(async (image: string, options: ServeOptions, command: Command) => {
      try {
        await serve(image, options);
      } catch (err) {
        command.error(`hvkit disk serve: ${(err as Error).message}`, { exitCode: 1 });
      }
    });
}
