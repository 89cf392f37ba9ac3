/**
 * The guest worker: the guest's VMBus driver and device drivers, with only
 * guest memory and the hypervisor's interface to talk through.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { PageAllocator } from '../hv/page-allocator.ts';
import { GuestPartition } from '../hv/partition.ts';
import { VmbusClient } from '../vmbus/client/vmbus-client.ts';
import { versionPlan } from './config.ts';
import { registerGuestDrivers } from './guest-drivers.ts';
import type { ChannelView, GuestStatus } from './status.ts';
import type { FromWorker, ToWorker, WorkerInit } from './worker-messages.ts';

const port = parentPort!;
const { handles, config } = workerData as WorkerInit;
const post = (message: FromWorker): void => port.postMessage(message);

const partition = new GuestPartition(handles);
// The first megabyte stays unused, as low memory does on a real guest.
const reserved = 256;
const allocator = new PageAllocator(reserved, partition.memory.pageCount - reserved);
const client = new VmbusClient(partition, allocator, {
  versionOrder: versionPlan(config).guest,
  log: (text) => post({ type: 'log', text: `guest: ${text}` }),
});
const drivers = registerGuestDrivers(client, config);

function status(): GuestStatus {
  const stats = client.connection.stats;
  const channels: ChannelView[] = client.channelStatus().map((c) => ({
    relid: c.relid,
    classId: c.classId,
    subchannelIndex: c.subchannelIndex,
    state: c.rescinded ? 'rescinded' : c.open ? 'open' : 'offered',
    ...(c.occupancy
      ? {
          outboundUsed: c.occupancy.outboundUsed,
          outboundSize: c.occupancy.outboundSize,
          inboundUsed: c.occupancy.inboundUsed,
          inboundSize: c.occupancy.inboundSize,
        }
      : {}),
    ...(c.stats ? { counters: { ...c.stats } } : {}),
    ...(c.error ? { error: c.error } : {}),
    ...(c.driver ? { driver: c.driver } : {}),
  }));
  return {
    version: client.version,
    messageConnectionId: client.connection.messageConnectionId,
    messagesIn: stats.messagesIn,
    messagesOut: stats.messagesOut,
    dropped: stats.dropped,
    interrupts: stats.interrupts,
    channels,
    devices: drivers.status(),
  };
}

port.on('message', (message: ToWorker) => {
  if (message.type === 'status') {
    post({ type: 'status', id: message.id, status: status() });
  } else if (message.type === 'stop') {
    void (async () => {
      await drivers.stop();
      try {
        await client.unload();
      } catch (error) {
        post({ type: 'log', text: `guest: unload failed: ${(error as Error).message}` });
      }
      client.shutdown();
      post({ type: 'stopped', id: message.id });
      port.close();
    })();
  }
});

try {
  const version = await client.connect();
  await client.requestOffers();
  post({ type: 'ready', version });
} catch (error) {
  post({ type: 'failed', error: (error as Error).message });
}
