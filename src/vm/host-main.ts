/**
 * The host worker: runs the VMBus server and the device providers on the
 * partition, as the root partition would.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { HostPartition } from '../hv/partition.ts';
import { W_POSTS, W_POSTS_REFUSED, W_SIGNALS } from '../hv/shared-state.ts';
import { HostBus } from '../vmbus/server/host-bus.ts';
import { versionPlan } from './config.ts';
import type { CommandHandler, HostContext, HostPart } from './device-kind.ts';
import { deviceKind, deviceKinds } from './device-kinds.ts';
import { channelView, type HostStatus } from './status.ts';
import { addCommands, runCommand } from './worker-commands.ts';
import type { FromWorker, ToWorker, WorkerInit } from './worker-messages.ts';

const port = parentPort!;
const { handles, config } = workerData as WorkerInit;
const post = (message: FromWorker): void => port.postMessage(message);
const log = (text: string): void => post({ type: 'log', text: `host: ${text}` });

const partition = new HostPartition(handles);
const bus = new HostBus(partition, {
  versions: versionPlan(config).host,
  dedicatedInterrupts: config.vmbus.dedicated_interrupts,
  log,
});
const parts: HostPart[] = [];
const context: HostContext = {
  bus,
  vmName: config.name,
  baseDir: config.base_dir ?? process.cwd(),
  log,
  adopt: (part) => {
    parts.push(part);
  },
  release: (part) => {
    const at = parts.indexOf(part);
    if (at >= 0) parts.splice(at, 1);
  },
};
/** The parts of each kind, in config order (what the kind's own commands act on). */
const partsByKind = new Map<string, HostPart[]>();
const commands = new Map<string, CommandHandler>();
try {
  for (const entry of config.devices) {
    const kind = deviceKind(entry.type)!;
    const ofKind = partsByKind.get(kind.type) ?? [];
    const part = await kind.createHost(entry, context, ofKind.length);
    parts.push(part);
    ofKind.push(part);
    partsByKind.set(kind.type, ofKind);
    for (const device of part.devices) bus.addDevice(device);
    addCommands(commands, part.commands);
  }
  for (const kind of deviceKinds) {
    addCommands(commands, kind.hostCommands?.(context, partsByKind.get(kind.type) ?? []));
  }
} catch (error) {
  post({ type: 'failed', error: (error as Error).message });
  throw error;
}
bus.start();

function status(): HostStatus {
  const server = bus.server;
  const channels = bus
    .channelStatus()
    .map((c) =>
      channelView(
        { relid: c.relid, classId: c.classId, subchannelIndex: c.subchannelIndex, state: c.state },
        c,
      ),
    );
  return {
    version: server.connected?.version ?? 0,
    state: server.state,
    messagesIn: server.stats.messagesIn,
    messagesOut: server.stats.messagesOut,
    dropped: server.stats.dropped,
    lastDropReasons: [...server.stats.lastDropReasons],
    channels,
    hypervisor: {
      posts: partition.state.counter(W_POSTS),
      postsRefused: partition.state.counter(W_POSTS_REFUSED),
      signals: partition.state.counter(W_SIGNALS),
    },
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
      await bus.stop();
      for (const part of parts) {
        await part.close().catch((error: Error) => log(`closing a device: ${error.message}`));
      }
      post({ type: 'stopped', id: message.id });
      port.close();
    })();
  }
});
post({ type: 'ready', commands: [...commands.keys()] });
