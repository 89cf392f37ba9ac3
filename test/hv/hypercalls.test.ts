import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PageAllocator } from '../../src/hv/page-allocator.ts';
import { createPartition, GuestPartition, HostPartition } from '../../src/hv/partition.ts';
import {
  HV_HYPERCALL_FAST_BIT,
  HvCallCode,
  HvStatus,
  hvInputPostMessage,
} from '../../src/hv/protocol.ts';
import { MessageConnection } from '../../src/vmbus/client/message-connection.ts';

function setup() {
  const handles = createPartition({ memoryBytes: 1024 * 1024, vpCount: 1 });
  const guest = new GuestPartition(handles);
  const host = new HostPartition(handles);
  return { guest, host, vp: guest.vp0, memory: guest.memory };
}

const INPUT = 0x3000;

function post(
  vp: ReturnType<typeof setup>['vp'],
  memory: ReturnType<typeof setup>['memory'],
  fields: { connectionid: number; message_type?: number; payload_size?: number },
  gpa = INPUT,
): HvStatus {
  hvInputPostMessage.writeInto(memory.u8, gpa, {
    connectionid: fields.connectionid,
    message_type: fields.message_type ?? 1,
    payload_size: fields.payload_size ?? 8,
    payload: new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]),
  });
  return Number(vp.hypercall(BigInt(HvCallCode.PostMessage), BigInt(gpa)) & 0xffffn);
}

describe('HvPostMessage', () => {
  it('delivers to the port connected at the connection id, with the real statuses otherwise', () => {
    const { host, vp, memory } = setup();
    const received: { connectionId: number; messageType: number; payload: number[] }[] = [];
    host.ports.openMessagePort(1, (m) =>
      received.push({
        connectionId: m.connectionId,
        messageType: m.messageType,
        payload: [...m.payload],
      }),
    );
    assert.equal(post(vp, memory, { connectionid: 1 }), HvStatus.Success);
    assert.equal(
      post(vp, memory, { connectionid: 4 }),
      HvStatus.InvalidConnectionId,
      'no port at 4',
    );
    assert.equal(
      post(vp, memory, { connectionid: 1, payload_size: 241 }),
      HvStatus.InvalidParameter,
    );
    assert.equal(post(vp, memory, { connectionid: 1, message_type: 0 }), HvStatus.InvalidParameter);
    assert.equal(
      post(vp, memory, { connectionid: 1, message_type: 0x80000001 }),
      HvStatus.InvalidParameter,
    );
    assert.equal(
      post(vp, memory, { connectionid: 1 }, INPUT + 4),
      HvStatus.InvalidAlignment,
      'not 8-aligned',
    );
    assert.equal(
      post(vp, memory, { connectionid: 1 }, 0x3f08),
      HvStatus.InvalidAlignment,
      'crosses a page',
    );
    assert.equal(
      Number(vp.hypercall(BigInt(HvCallCode.PostMessage), BigInt(memory.size)) & 0xffffn),
      HvStatus.InvalidParameter,
      'input outside guest memory',
    );
    assert.equal(Number(vp.hypercall(0x99n, 0n) & 0xffffn), HvStatus.InvalidHypercallCode);
    assert.equal(
      Number(vp.hypercall(BigInt(HvCallCode.PostMessage) | HV_HYPERCALL_FAST_BIT, 0n) & 0xffffn),
      HvStatus.InvalidHypercallInput,
    );
    host.ports.poll();
    assert.deepEqual(received, [
      { connectionId: 1, messageType: 1, payload: [1, 2, 3, 4, 5, 6, 7, 8] },
    ]);
  });

  it('refuses with INSUFFICIENT_BUFFERS once the port holds 16 messages', () => {
    const { host, vp, memory } = setup();
    let count = 0;
    host.ports.openMessagePort(1, () => count++);
    for (let i = 0; i < 16; i++)
      assert.equal(post(vp, memory, { connectionid: 1 }), HvStatus.Success);
    assert.equal(post(vp, memory, { connectionid: 1 }), HvStatus.InsufficientBuffers);
    host.ports.poll();
    assert.equal(count, 16);
    assert.equal(
      post(vp, memory, { connectionid: 1 }),
      HvStatus.Success,
      'room again after draining',
    );
  });

  it('the guest retries INSUFFICIENT_BUFFERS the way vmbus_post_msg does', async () => {
    const { guest, host } = setup();
    let count = 0;
    host.ports.openMessagePort(1, () => count++);
    const allocator = new PageAllocator(16, guest.memory.pageCount - 16);
    const connection = new MessageConnection(guest, allocator);
    const message = new Uint8Array(8);
    message[0] = 3; // REQUESTOFFERS
    for (let i = 0; i < 16; i++) await connection.post(message);
    // The 17th is refused until the host drains; the guest keeps retrying.
    setTimeout(() => host.ports.poll(), 30);
    await connection.post(message);
    assert.ok(connection.stats.postRetries > 0);
    host.ports.poll();
    assert.equal(count, 17);
  });

  it('fails INITIATE_CONTACT at once on a connection id nobody listens to', async () => {
    const { guest } = setup();
    const connection = new MessageConnection(
      guest,
      new PageAllocator(16, guest.memory.pageCount - 16),
    );
    const initiate = new Uint8Array(40);
    initiate[0] = 14;
    await assert.rejects(connection.post(initiate, 4), /no port at connection id 4/);
    assert.equal(connection.stats.postRetries, 0);
  });
});

describe('HvSignalEvent', () => {
  it('sets the event port of the connection id, and checks its input', () => {
    const { host, vp } = setup();
    let signals = 0;
    host.ports.openEventPort(0x2001, () => signals++);
    const signal = (input: bigint): number =>
      Number(vp.hypercall(BigInt(HvCallCode.SignalEvent) | HV_HYPERCALL_FAST_BIT, input) & 0xffffn);
    assert.equal(signal(0x2001n), HvStatus.Success);
    assert.equal(signal(0x2001n), HvStatus.Success, 'second signal coalesces');
    assert.equal(signal(0x2002n), HvStatus.InvalidConnectionId);
    assert.equal(signal(0x2001n | (5n << 48n)), HvStatus.InvalidHypercallInput, 'reserved bits');
    assert.equal(
      signal(0x2001n | (3000n << 32n)),
      HvStatus.InvalidParameter,
      'flag number >= 2048',
    );
    host.ports.poll();
    assert.equal(signals, 1, 'one dispatch for coalesced signals');
    host.ports.openMessagePort(1, () => {});
    assert.equal(signal(1n), HvStatus.InvalidConnectionId, 'a message port is not an event port');
  });
});

describe('SynIC message delivery', () => {
  it('queues behind a busy slot with MessagePending and redelivers on EOM', () => {
    const { guest, host, vp } = setup();
    const connection = new MessageConnection(
      guest,
      new PageAllocator(16, guest.memory.pageCount - 16),
    );
    assert.ok(connection);
    for (let i = 1; i <= 3; i++) host.synic.postMessage(0, 2, 1, new Uint8Array([i]));
    assert.equal(host.synic.pendingMessages(0, 2), 2);
    const slot = new Uint8Array(256);
    // The slot holds message 1 with MessagePending set.
    const gpa = vp.messageSlotGpa(2)!;
    assert.equal(guest.memory.u8[gpa + 5]! & 1, 1, 'msg_pending set');
    assert.ok(vp.takeMessage(2, slot));
    assert.equal(slot[16], 1);
    // takeMessage wrote EOM; the hypervisor redelivers on its next wake-up.
    host.ports.poll();
    assert.ok(vp.takeMessage(2, slot));
    assert.equal(slot[16], 2);
    host.ports.poll();
    assert.ok(vp.takeMessage(2, slot));
    assert.equal(slot[16], 3);
    assert.equal(guest.memory.u8[gpa + 5]! & 1, 0, 'no more pending');
    assert.equal(vp.takeMessage(2, slot), false);
  });

  it('raises a SINT for an event flag only when the flag was clear', () => {
    const { guest, host, vp } = setup();
    new MessageConnection(guest, new PageAllocator(16, guest.memory.pageCount - 16));
    vp.takeInterrupts();
    assert.equal(host.synic.signalEvent(0, 2, 37), true);
    assert.equal(host.synic.signalEvent(0, 2, 37), false, 'already set: no interrupt');
    assert.equal(vp.takeInterrupts(), 1 << 2);
    const flags: number[] = [];
    vp.takeEventFlags(2, 2048, (f) => flags.push(f));
    assert.deepEqual(flags, [37]);
    assert.equal(host.synic.signalEvent(0, 2, 37), true, 'clear again after the guest took it');
    assert.equal(host.synic.stats.eventsCoalesced, 1);
  });
});
