/**
 * The guest worker: the guest's VMBus driver and device drivers, with only
 * guest memory and the hypervisor's interface to talk through.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { PageAllocator } from '../hv/page-allocator.ts';
import { GuestPartition } from '../hv/partition.ts';
import { VmbusClient } from '../vmbus/client/vmbus-client.ts';
import { versionPlan } from './config.ts';
import type { CommandHandler, GuestContext, GuestPart } from './device-kind.ts';
import { deviceKinds } from './device-kinds.ts';
import { GuestNetwork } from './guest-network.ts';
import { channelView, type GuestStatus } from './status.ts';
import { addCommands, runCommand } from './worker-commands.ts';
import type { FromWorker, ToWorker, WorkerInit } from './worker-messages.ts';

const port = parentPort!;
const { handles, config } = workerData as WorkerInit;
const post = (message: FromWorker): void => port.postMessage(message);
const log = (text: string): void => post({ type: 'log', text: `guest: ${text}` });

const partition = new GuestPartition(handles);
// The first megabyte stays unused, as low memory does on a real guest.
const reserved = 256;
const allocator = new PageAllocator(reserved, partition.memory.pageCount - reserved);
const client = new VmbusClient(partition, allocator, {
  versionOrder: versionPlan(config).guest,
  log,
});
const context: GuestContext = {
  client,
  vmName: config.name,
  baseDir: config.base_dir ?? process.cwd(),
  log,
  network: new GuestNetwork(),
  requestStop: ({ restart, exitCode }) => post({ type: 'request-stop', restart, exitCode }),
};
const parts: GuestPart[] = [];
const commands = new Map<string, CommandHandler>();

function status(): GuestStatus {
  const stats = client.connection.stats;
  const channels = client.channelStatus().map((c) =>
    channelView(
      {
        relid: c.relid,
        classId: c.classId,
        subchannelIndex: c.subchannelIndex,
        state: c.rescinded ? 'rescinded' : c.open ? 'open' : 'offered',
      },
      c,
    ),
  );
  return {
    version: client.version,
    messageConnectionId: client.connection.messageConnectionId,
    messagesIn: stats.messagesIn,
    messagesOut: stats.messagesOut,
    dropped: stats.dropped,
    interrupts: stats.interrupts,
    channels,
    devices: parts.map((p) => p.status()),
  };
}

port.on('message', (message: ToWorker) => {
  if (message.type === 'status') {
    post({ type: 'status', id: message.id, status: status() });
  } else if (message.type === 'command') {
    void runCommand(port, commands, message.id, message.name, message.args);
  } else if (message.type === 'stop') {
    void (async () => {
      for (const part of parts) {
        await part.stop().catch((error: Error) => log(`stopping a driver: ${error.message}`));
      }
      try {
        await client.unload();
      } catch (error) {
        log(`unload failed: ${(error as Error).message}`);
      }
      client.shutdown();
      post({ type: 'stopped', id: message.id });
      port.close();
    })();
  }
});

try {
  for (const kind of deviceKinds) {
    const entries = config.devices.filter((d) => d.type === kind.type);
    if (entries.length === 0 && !kind.hotPluggable) continue;
    const part = await kind.createGuest(entries, context);
    parts.push(part);
    addCommands(commands, part.commands);
  }
  const version = await client.connect();
  await client.requestOffers();
  post({ type: 'ready', version, commands: [...commands.keys()] });
} catch (error) {
  post({ type: 'failed', error: (error as Error).message });
}
