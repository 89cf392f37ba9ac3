/**
 * Control messages between the VM's main thread and its host and guest
 * workers (over worker MessagePorts; never on the data path).
 */
import type { PartitionHandles } from '../hv/partition.ts';
import type { VmConfig } from './config.ts';
import type { GuestStatus, HostStatus } from './status.ts';

export interface WorkerInit {
  readonly handles: PartitionHandles;
  readonly config: VmConfig;
}

export type ToWorker =
  | { type: 'status'; id: number }
  | { type: 'stop'; id: number }
  | { type: 'command'; id: number; name: string; args: Record<string, unknown> };

export type FromWorker =
  | { type: 'ready'; version?: number; commands: string[] }
  | { type: 'status'; id: number; status: HostStatus | GuestStatus }
  | { type: 'stopped'; id: number }
  | { type: 'result'; id: number; ok: true; result: unknown }
  | { type: 'result'; id: number; ok: false; error: string }
  | { type: 'log'; text: string }
  | { type: 'failed'; error: string }
  /** The guest asks the VM to stop (shutdown service), with the exit code to use. */
  | { type: 'request-stop'; restart: boolean; exitCode: number };
