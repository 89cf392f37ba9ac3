/**
 * A kind of device a VM config can name (`devices: - type: <kind>`). Each
 * kind lives in src/vm/devices/<kind>.ts and says how to validate its config
 * entry, what the host runs for it, what the guest registers, and which
 * control commands it answers on each side. vm/ assembles kinds without
 * knowing their insides.
 */
import { z } from 'zod';
import type { VmbusClient } from '../vmbus/client/vmbus-client.ts';
import type { VmbusDevice } from '../vmbus/device.ts';
import type { HostBus } from '../vmbus/server/host-bus.ts';
import type { GuestNetwork } from './guest-network.ts';

/** A control command handler: JSON-able arguments in, JSON-able result out. */
export type CommandHandler = (args: Record<string, unknown>) => Promise<unknown> | unknown;

/**
 * A control command whose arguments are checked by a zod schema first: bad
 * arguments are refused with the field and the reason, and `run` sees them
 * typed and with their defaults.
 */
export function command<S extends z.ZodType<object, unknown>>(
  args: S,
  run: (args: z.output<S>) => Promise<unknown> | unknown,
): CommandHandler {
  return (raw) => {
    const parsed = args.safeParse(raw);
    if (!parsed.success) {
      const problems = parsed.error.issues.map((issue) =>
        issue.path.length > 0 ? `${issue.path.join('.')}: ${issue.message}` : issue.message,
      );
      throw new Error(`invalid arguments: ${problems.join('; ')}`);
    }
    return run(parsed.data);
  };
}

/** A non-negative whole number, as control commands take them. */
export const count = z.number().int().min(0);

export interface HostContext {
  readonly bus: HostBus;
  readonly vmName: string;
  /** Directory relative paths of the config resolve against (the config file's). */
  readonly baseDir: string;
  readonly log: (message: string) => void;
  /** Takes a part a command created while the VM runs (hot add): its status shows, it closes at stop. */
  readonly adopt: (part: HostPart) => void;
  /** Lets go of an adopted part (after the command that removed it closed it). */
  readonly release: (part: HostPart) => void;
}

export interface GuestContext {
  readonly client: VmbusClient;
  readonly vmName: string;
  /** Directory relative paths of the config resolve against (the config file's). */
  readonly baseDir: string;
  readonly log: (message: string) => void;
  /** The interfaces the guest's NICs made, for the services that report or set addresses (KVP). */
  readonly network: GuestNetwork;
  /** Asks the VM to stop (a guest-initiated shutdown, e.g. by the shutdown service). */
  readonly requestStop: (reason: { restart: boolean; exitCode: number }) => void;
}

/** What a part reports: plain data (it crosses workers and the control socket) with a one-line summary. */
export interface DeviceStatus {
  readonly type: string;
  /** One line for `hvkit status`. */
  readonly summary: string;
  readonly [field: string]: unknown;
}

/** What the host runs for one config entry. */
export interface HostPart {
  /** VMBus devices to offer at boot. */
  readonly devices: readonly VmbusDevice[];
  readonly commands?: Readonly<Record<string, CommandHandler>>;
  status(): DeviceStatus;
  close(): Promise<void>;
}

/** What the guest runs for all config entries of one kind. */
export interface GuestPart {
  readonly commands?: Readonly<Record<string, CommandHandler>>;
  status(): DeviceStatus;
  /** Called before the guest unloads the VMBus. */
  stop(): Promise<void>;
}

export interface DeviceKind<C extends { type: string }, H extends HostPart = HostPart> {
  readonly type: C['type'];
  /** Validates one `devices:` entry (an object schema with `type: z.literal(kind)`). */
  readonly schema: z.ZodType<C, unknown>;
  /** `index` counts this kind's entries in config order (0 for the first). */
  createHost(config: C, context: HostContext, index: number): Promise<H>;
  /**
   * Registers the guest drivers for every entry of this kind (called once per
   * kind present, or always for a hot-pluggable kind: devices may arrive later).
   */
  createGuest(configs: readonly C[], context: GuestContext): Promise<GuestPart>;
  /** Whether a device of this kind can be added to a running VM (the guest binds it then). */
  readonly hotPluggable?: boolean;
  /**
   * Commands available even when no entry of this kind is configured (e.g.
   * hot add); they see the parts this kind created, in config order.
   */
  readonly hostCommands?: (
    context: HostContext,
    parts: readonly H[],
  ) => Readonly<Record<string, CommandHandler>>;
}
