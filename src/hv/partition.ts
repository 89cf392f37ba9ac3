import { GuestMemory } from './guest-memory.ts';
import { GuestVp } from './guest-vp.ts';
import { HostPorts } from './host-ports.ts';
import { Hypercalls } from './hypercalls.ts';
import { PAGE_SIZE } from './protocol.ts';
import { SharedState } from './shared-state.ts';
import { SynicDelivery } from './synic-delivery.ts';

/**
 * What a worker needs to join a partition: the guest memory and the
 * hypervisor state, both SharedArrayBuffers (they cross postMessage shared,
 * not copied).
 */
export interface PartitionHandles {
  readonly memory: SharedArrayBuffer;
  readonly state: SharedArrayBuffer;
}

export interface PartitionConfig {
  /** Guest memory size in bytes (a multiple of 4 KiB). */
  readonly memoryBytes: number;
  readonly vpCount?: number;
}

/** Creates a partition's shared buffers. Call once, then hand the handles to each side. */
export function createPartition(config: PartitionConfig): PartitionHandles {
  if (config.memoryBytes <= 0 || config.memoryBytes % PAGE_SIZE !== 0) {
    throw new Error(`guest memory must be a positive multiple of ${PAGE_SIZE} bytes`);
  }
  const memory = GuestMemory.create(config.memoryBytes);
  const state = SharedState.create(config.vpCount ?? 1);
  return { memory: memory.buffer, state: state.buffer };
}

/** The partition as the guest sees it: its memory and its virtual processors. */
export class GuestPartition {
  readonly memory: GuestMemory;
  readonly state: SharedState;
  readonly vps: readonly GuestVp[];

  constructor(handles: PartitionHandles) {
    this.memory = new GuestMemory(handles.memory);
    this.state = new SharedState(handles.state);
    const hypercalls = new Hypercalls(this.memory, this.state);
    this.vps = Array.from(
      { length: this.state.vpCount },
      (_, i) => new GuestVp(i, this.memory, this.state, hypercalls),
    );
  }

  get vp0(): GuestVp {
    return this.vps[0]!;
  }
}

/**
 * The partition as the host (the root partition's VMBus server and device
 * providers) sees it: guest memory for GPADL-mapped buffers, its ports, and
 * SynIC delivery into the guest.
 */
export class HostPartition {
  readonly memory: GuestMemory;
  readonly state: SharedState;
  readonly ports: HostPorts;
  readonly synic: SynicDelivery;

  constructor(handles: PartitionHandles) {
    this.memory = new GuestMemory(handles.memory);
    this.state = new SharedState(handles.state);
    this.ports = new HostPorts(this.state);
    this.synic = new SynicDelivery(this.memory, this.state);
    this.ports.onWake = () => this.synic.handleEndOfMessage();
  }

  start(): void {
    this.ports.start();
  }

  async stop(): Promise<void> {
    await this.ports.stop();
  }
}
