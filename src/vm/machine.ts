/**
 * A virtual machine: creates the partition, starts the host and guest
 * workers (they share only guest memory and the hypervisor's state), waits
 * until the guest has negotiated and bound its drivers, reports status, and
 * shuts down cleanly — the guest unloads the VMBus first, then the host
 * stops.
 */
import type { Worker } from 'node:worker_threads';
import { createPartition } from '../hv/partition.ts';
import type { VmConfig } from './config.ts';
import { canConfigureNetwork } from './network/ip.ts';
import { leftovers, releaseOwned } from './network/owned.ts';
import type { GuestStatus, HostStatus, VmStatus } from './status.ts';
import { startTsWorker } from './worker-launch.ts';
import type { FromWorker, ToWorker } from './worker-messages.ts';

/** Namespaces and bridges an earlier run of this VM left behind when it was killed. */
async function reclaimNetwork(vmName: string, onLog?: (line: string) => void): Promise<void> {
  if (!canConfigureNetwork()) return;
  const left = await leftovers(vmName);
  if (left.length === 0) return;
  const log = (line: string) => onLog?.(line);
  const { removed, kept } = await releaseOwned(vmName, left, log);
  if (removed.length > 0) log(`network: reclaimed ${removed.join(', ')} from an earlier run`);
  if (kept.length > 0) log(`network: left ${kept.join(', ')} in use`);
}

export class VmError extends Error {
  override readonly name = 'VmError';
}

type Side = 'host' | 'guest';

interface WorkerLink {
  readonly side: Side;
  readonly worker: Worker;
  readonly waiting: Map<number, (message: FromWorker) => void>;
  exited: boolean;
  commands: readonly string[];
}

export interface VmOptions {
  /** Log lines from the workers (dropped guest messages, device errors). */
  readonly onLog?: (line: string) => void;
  /** Called if a worker dies unexpectedly. */
  readonly onFailure?: (error: Error) => void;
  /** How long to wait for the guest to come up, in ms. */
  readonly bootTimeoutMs?: number;
  /** The guest asked the VM to stop (its shutdown service): restart or not, and the exit code. */
  readonly onStopRequest?: (request: { restart: boolean; exitCode: number }) => void;
}

export class VirtualMachine {
  private nextId = 1;
  private readonly startedAt = Date.now();
  private stopping = false;
  private failure: Error | undefined;

  private constructor(
    readonly config: VmConfig,
    private readonly host: WorkerLink,
    private readonly guest: WorkerLink,
    private readonly options: VmOptions,
  ) {}

  /** Boots the VM; resolves once the guest negotiated VMBus and probed its drivers. */
  static async start(config: VmConfig, options: VmOptions = {}): Promise<VirtualMachine> {
    await reclaimNetwork(config.name, options.onLog);
    const handles = createPartition({ memoryBytes: config.memory, vpCount: config.vcpus });
    const workerData = { handles, config };
    const link = (side: Side): WorkerLink => ({
      side,
      worker: startTsWorker(new URL(`./${side}-main.ts`, import.meta.url), workerData),
      waiting: new Map(),
      exited: false,
      commands: [],
    });
    const host = link('host');
    let hostReady: FromWorker;
    try {
      hostReady = await VirtualMachine.firstMessage(host, 'ready', options.bootTimeoutMs ?? 30_000);
    } catch (error) {
      await host.worker.terminate();
      throw error;
    }
    if (hostReady.type === 'ready') host.commands = hostReady.commands;
    const guest = link('guest');
    const vm = new VirtualMachine(config, host, guest, options);
    const guestReady = VirtualMachine.firstMessage(guest, 'ready', options.bootTimeoutMs ?? 30_000);
    vm.wire(host);
    vm.wire(guest);
    try {
      const ready = await guestReady;
      if (ready.type === 'ready') guest.commands = ready.commands;
    } catch (error) {
      await vm.terminate();
      throw error;
    }
    return vm;
  }

  /** Waits for the first message of a type (or a failure / exit) from a worker at boot. */
  private static firstMessage(
    link: WorkerLink,
    type: FromWorker['type'],
    timeoutMs: number,
  ): Promise<FromWorker> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        reject(new VmError(`${link.side} worker did not start within ${timeoutMs} ms`));
      }, timeoutMs);
      const onMessage = (message: FromWorker): void => {
        if (message.type === type) {
          cleanup();
          resolve(message);
        } else if (message.type === 'failed') {
          cleanup();
          reject(new VmError(`${link.side} failed to start: ${message.error}`));
        }
      };
      const onError = (error: Error): void => {
        cleanup();
        reject(new VmError(`${link.side} worker crashed while starting: ${error.message}`));
      };
      const onExit = (code: number): void => {
        cleanup();
        reject(new VmError(`${link.side} worker exited with code ${code} while starting`));
      };
      const cleanup = (): void => {
        clearTimeout(timer);
        link.worker.off('message', onMessage);
        link.worker.off('error', onError);
        link.worker.off('exit', onExit);
      };
      link.worker.on('message', onMessage);
      link.worker.on('error', onError);
      link.worker.on('exit', onExit);
    });
  }

  private wire(link: WorkerLink): void {
    link.worker.on('message', (message: FromWorker) => {
      if (message.type === 'log') {
        this.options.onLog?.(message.text);
      } else if (message.type === 'request-stop') {
        this.options.onStopRequest?.({ restart: message.restart, exitCode: message.exitCode });
      } else if (
        message.type === 'status' ||
        message.type === 'stopped' ||
        message.type === 'result'
      ) {
        const resolve = link.waiting.get(message.id);
        link.waiting.delete(message.id);
        resolve?.(message);
      } else if (message.type === 'failed') {
        this.fail(new VmError(`${link.side}: ${message.error}`));
      }
    });
    link.worker.on('error', (error) =>
      this.fail(new VmError(`${link.side} worker crashed: ${error.message}`)),
    );
    link.worker.on('exit', (code) => {
      link.exited = true;
      for (const resolve of link.waiting.values())
        resolve({ type: 'failed', error: `exited with ${code}` });
      link.waiting.clear();
      if (!this.stopping)
        this.fail(new VmError(`${link.side} worker exited unexpectedly with code ${code}`));
    });
  }

  private fail(error: Error): void {
    if (this.failure) return;
    this.failure = error;
    this.options.onFailure?.(error);
  }

  get failed(): Error | undefined {
    return this.failure;
  }

  private request(
    link: WorkerLink,
    message:
      | { type: 'status' }
      | { type: 'stop' }
      | { type: 'command'; name: string; args: Record<string, unknown> },
    timeoutMs = 10_000,
  ): Promise<FromWorker> {
    if (link.exited) return Promise.reject(new VmError(`${link.side} worker is not running`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        link.waiting.delete(id);
        reject(new VmError(`${link.side} did not answer ${message.type} within ${timeoutMs} ms`));
      }, timeoutMs);
      link.waiting.set(id, (answer) => {
        clearTimeout(timer);
        if (answer.type === 'failed') reject(new VmError(`${link.side}: ${answer.error}`));
        else resolve(answer);
      });
      link.worker.postMessage({ ...message, id } as ToWorker);
    });
  }

  /** Control commands the devices answer, by name. */
  commands(): string[] {
    return [...this.host.commands, ...this.guest.commands].sort();
  }

  /** Runs a device's control command in whichever worker answers it. */
  async command(
    name: string,
    args: Record<string, unknown>,
    timeoutMs = 120_000,
  ): Promise<unknown> {
    const link = this.host.commands.includes(name)
      ? this.host
      : this.guest.commands.includes(name)
        ? this.guest
        : undefined;
    if (!link)
      throw new VmError(
        `unknown command ${name}; this VM answers: ${this.commands().join(', ') || 'none'}`,
      );
    const answer = await this.request(link, { type: 'command', name, args }, timeoutMs);
    if (answer.type !== 'result') throw new VmError(`${link.side} answered ${answer.type}`);
    if (!answer.ok) throw new VmError(answer.error);
    return answer.result;
  }

  async status(): Promise<VmStatus> {
    const [host, guest] = await Promise.all([
      this.request(this.host, { type: 'status' }),
      this.request(this.guest, { type: 'status' }),
    ]);
    return {
      name: this.config.name,
      uptimeMs: Date.now() - this.startedAt,
      vcpus: this.config.vcpus,
      memoryBytes: this.config.memory,
      host: (host as { status: HostStatus }).status,
      guest: (guest as { status: GuestStatus }).status,
    };
  }

  /**
   * Clean shutdown: the guest stops its drivers and sends UNLOAD (the host
   * closes every channel and answers), then the host stops.
   */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    try {
      if (!this.guest.exited) await this.request(this.guest, { type: 'stop' }, 20_000);
      if (!this.host.exited) await this.request(this.host, { type: 'stop' }, 20_000);
    } finally {
      await this.terminate();
    }
  }

  private async terminate(): Promise<void> {
    this.stopping = true;
    await Promise.all([this.guest.worker.terminate(), this.host.worker.terminate()]);
  }
}
