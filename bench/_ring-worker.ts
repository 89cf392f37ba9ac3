/**
 * Bench worker: one end of a ring (writer or reader) or of a MessagePort,
 * moving a fixed number of payloads as fast as it can. Blocking waits use
 * Atomics.wait on doorbell words (a worker may block).
 */
import { type MessagePort, parentPort, workerData } from 'node:worker_threads';
import { ChannelEndpoint } from '../src/vmbus/channel.ts';
import { inbandPacketLength } from '../src/vmbus/packet.ts';
import { Ring } from '../src/vmbus/ring.ts';

type Role = 'ring-writer' | 'ring-reader' | 'port-sender' | 'port-receiver';
interface Job {
  role: Role;
  ringAtoB?: SharedArrayBuffer;
  ringBtoA?: SharedArrayBuffer;
  bells?: SharedArrayBuffer;
  port?: MessagePort;
  count: number;
  payload: number;
  /** Reader takes payloads above this size in place (see ChannelEndpoint.inPlaceAbove). */
  inPlaceAbove?: number;
}

const BELL_READER = 0;
const BELL_WRITER = 1;
const job = workerData as Job;
const now = (): number => performance.timeOrigin + performance.now();

function ringEnds(): { outbound: Ring; inbound: Ring; bells: Int32Array } {
  const a = Ring.fromBytes(new Uint8Array(job.ringAtoB!));
  const b = Ring.fromBytes(new Uint8Array(job.ringBtoA!));
  const bells = new Int32Array(job.bells!);
  return job.role === 'ring-writer'
    ? { outbound: a, inbound: b, bells }
    : { outbound: b, inbound: a, bells };
}

function ring(writer: boolean): { start: number; end: number; checksum: number } {
  const { outbound, inbound, bells } = ringEnds();
  const ring = (bell: number) => () => {
    Atomics.add(bells, bell, 1);
    Atomics.notify(bells, bell);
  };
  const endpoint = new ChannelEndpoint(
    outbound,
    inbound,
    ring(writer ? BELL_READER : BELL_WRITER),
    job.role,
  );
  const payload = new Uint8Array(job.payload).map((_, i) => i & 0xff);
  const needed = inbandPacketLength(job.payload) + 8;
  let checksum = 0;
  const start = now();
  if (writer) {
    let sent = 0;
    while (sent < job.count) {
      endpoint.batch(() => {
        for (let i = 0; i < 64 && sent < job.count; i++) {
          if (endpoint.sendInband(payload, sent + 1) !== 'ok') return;
          sent++;
        }
      });
      if (sent < job.count && endpoint.writer.available() <= needed) {
        const seen = Atomics.load(bells, BELL_WRITER);
        endpoint.requestSpace(needed);
        if (endpoint.writer.available() <= needed) Atomics.wait(bells, BELL_WRITER, seen, 50);
        outbound.pendingSendSize = 0;
      }
    }
  } else {
    let received = 0;
    if (job.inPlaceAbove !== undefined) endpoint.inPlaceAbove = job.inPlaceAbove;
    endpoint.onPacket = (packet) => {
      received++;
      checksum = (checksum + packet.payload()[0]! + packet.payloadLength) | 0;
      return true;
    };
    while (received < job.count) {
      const seen = Atomics.load(bells, BELL_READER);
      endpoint.handleInterrupt();
      if (received < job.count) Atomics.wait(bells, BELL_READER, seen, 50);
    }
  }
  return { start, end: now(), checksum };
}

async function port(sender: boolean): Promise<{ start: number; end: number; checksum: number }> {
  const p = job.port!;
  const payload = new Uint8Array(job.payload).map((_, i) => i & 0xff);
  let checksum = 0;
  const start = now();
  if (sender) {
    for (let i = 0; i < job.count; i++) p.postMessage(payload);
    return { start, end: now(), checksum };
  }
  let received = 0;
  return new Promise((resolve) => {
    p.on('message', (data: Uint8Array) => {
      received++;
      checksum = (checksum + data[0]! + data.length) | 0;
      if (received === job.count) {
        p.close();
        resolve({ start, end: now(), checksum });
      }
    });
  });
}

parentPort!.once('message', async () => {
  const result =
    job.role === 'ring-writer' || job.role === 'ring-reader'
      ? ring(job.role === 'ring-writer')
      : await port(job.role === 'port-sender');
  parentPort!.postMessage(result);
});
parentPort!.postMessage('ready');
