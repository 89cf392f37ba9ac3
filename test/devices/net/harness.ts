/**
 * A netvsp and a netvsc joined over one in-thread VMBus (test/vmbus's
 * harness), each end with a recording port: the host's backend and the
 * guest's operating-system side. The same device code the VM's workers run.
 */
import {
  type FrameOffload,
  type FramePort,
  type FrameSink,
  noOffload,
  type PortOffloads,
} from '../../../src/devices/net/frame-port.ts';
import {
  NetvscDriver,
  type NetvscNic,
  type NetvscOptions,
} from '../../../src/devices/net/guest/netvsc.ts';
import { NetvspDevice, type NetvspOptions } from '../../../src/devices/net/host/netvsp.ts';
import { makeBus, type TestBus } from '../../vmbus/harness.ts';

export interface SeenFrame {
  readonly frame: Uint8Array;
  readonly offload: FrameOffload;
}

/** A port that keeps what it is sent and lets a test inject frames. */
export class RecordingPort implements FramePort {
  readonly seen: SeenFrame[] = [];
  link = true;
  resumes = 0;
  private sink: FrameSink | undefined;
  private onLink: ((up: boolean) => void) | undefined;

  constructor(
    readonly name: string,
    readonly offloads: PortOffloads = { checksum: false, segmentation: false },
  ) {}

  start(sink: FrameSink, onLink: (up: boolean) => void): void {
    this.sink = sink;
    this.onLink = onLink;
  }

  get started(): boolean {
    return this.sink !== undefined;
  }

  /** A frame into the NIC; false when the NIC asked it to wait. */
  inject(frame: Uint8Array, offload: Partial<FrameOffload> = {}): boolean {
    if (!this.sink) throw new Error(`${this.name} is not started`);
    return this.sink(frame, { ...noOffload(), ...offload });
  }

  setLink(up: boolean): void {
    this.link = up;
    this.onLink?.(up);
  }

  resume(): void {
    this.resumes++;
  }

  send(frame: Uint8Array, offload: FrameOffload): void {
    this.seen.push({ frame: frame.slice(), offload: { ...offload } });
  }

  stats(): Record<string, number> {
    return { seen: this.seen.length };
  }

  async close(): Promise<void> {
    this.sink = undefined;
  }
}

export interface NetRig {
  readonly bus: TestBus;
  readonly vsp: NetvspDevice;
  readonly driver: NetvscDriver;
  readonly hostPort: RecordingPort;
  readonly guestPort: RecordingPort;
  /** The bound NIC (undefined when the probe failed). */
  readonly nic: NetvscNic | undefined;
  readonly guestLog: string[];
  close(): Promise<void>;
}

export interface NetRigOptions {
  readonly host?: Partial<NetvspOptions>;
  readonly guest?: NetvscOptions;
  readonly hostOffloads?: PortOffloads;
  readonly memoryBytes?: number;
}

export const TEST_MAC = Uint8Array.of(0x00, 0x15, 0x5d, 0x00, 0x00, 0x01);

export async function makeNetRig(options: NetRigOptions = {}): Promise<NetRig> {
  const bus = makeBus({ memoryBytes: options.memoryBytes ?? 64 * 1024 * 1024, vpCount: 2 });
  const hostPort = new RecordingPort('host', options.hostOffloads);
  const guestPort = new RecordingPort('guest');
  const vsp = new NetvspDevice({ mac: TEST_MAC, backend: hostPort, ...options.host });
  bus.host.addDevice(vsp);
  const guestLog: string[] = [];
  const driver = new NetvscDriver(() => ({
    receiveBufferBytes: 2 * 1024 * 1024,
    timeoutMs: 3000,
    log: (m) => guestLog.push(m),
    onUp: (nic) => nic.attachPort(guestPort),
    ...options.guest,
  }));
  bus.client.registerDriver(driver);
  await bus.client.connect();
  await bus.client.requestOffers();
  const nic = [...driver.nics.values()][0];
  return {
    bus,
    vsp,
    driver,
    hostPort,
    guestPort,
    nic,
    guestLog,
    async close() {
      await bus.client.unload().catch(() => {});
      await bus.close();
    },
  };
}
