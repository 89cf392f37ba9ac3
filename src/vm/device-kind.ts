/**
 * A kind of device a VM config can name (`devices: - type: <kind>`). Each
 * kind lives in src/vm/devices/<kind>.ts and says how to validate its config
 * entry, what the host runs for it, what the guest registers, and which
 * control commands it answers on each side. vm/ assembles kinds without
 * knowing their insides.
 */
import type { z } from 'zod';
import type { VmbusClient } from '../vmbus/client/vmbus-client.ts';
import type { VmbusDevice } from '../vmbus/device.ts';
import type { HostBus } from '../vmbus/server/host-bus.ts';

/** A control command handler: JSON-able arguments in, JSON-able result out. */
export type CommandHandler = (args: Record<string, unknown>) => Promise<unknown> | unknown;

export interface HostContext {
  readonly bus: HostBus;
  readonly vmName: string;
  /** Directory relative paths of the config resolve against (the config file's). */
  readonly baseDir: string;
  readonly log: (message: string) => void;
}

export interface GuestContext {
  readonly client: VmbusClient;
  readonly vmName: string;
  /** Directory relative paths of the config resolve against (the config file's). */
  readonly baseDir: string;
  readonly log: (message: string) => void;
  /** Asks the VM to stop (a guest-initiated shutdown, e.g. by the shutdown service). */
  readonly requestStop: (reason: { restart: boolean; exitCode: number }) => void;
}

/** What the host runs for one config entry. */
export interface HostPart {
  /** VMBus devices to offer at boot. */
  readonly devices: readonly VmbusDevice[];
  readonly commands?: Readonly<Record<string, CommandHandler>>;
  status(): Record<string, unknown>;
  close(): Promise<void>;
}

/** What the guest runs for all config entries of one kind. */
export interface GuestPart {
  readonly commands?: Readonly<Record<string, CommandHandler>>;
  status(): Record<string, unknown>;
  /** Called before the guest unloads the VMBus. */
  stop(): Promise<void>;
}

export interface DeviceKind<C extends { type: string }> {
  readonly type: C['type'];
  /** Validates one `devices:` entry (an object schema with `type: z.literal(kind)`). */
  readonly schema: z.ZodType<C, unknown>;
  createHost(config: C, context: HostContext): Promise<HostPart>;
  /** Registers the guest drivers for every entry of this kind (called once per kind present). */
  createGuest(configs: readonly C[], context: GuestContext): Promise<GuestPart>;
  /** Commands available even when no entry of this kind is configured (e.g. hot add). */
  readonly hostCommands?: (context: HostContext) => Readonly<Record<string, CommandHandler>>;
}
