/**
 * The vocabulary between the VMBus server state machine and the task that
 * runs it: its options, the actions it asks for, and what it reports.
 */
import type { OpenRequest } from '../device.ts';
import type { Gpadl } from '../gpadl.ts';

export interface ServerOptions {
  /** Versions this host accepts. Default: every version. */
  readonly versions?: readonly number[];
  readonly vpCount: number;
  readonly guestPageCount: number;
  /** Offer channels with a dedicated interrupt (their own connection id). Default true. */
  readonly dedicatedInterrupts?: boolean;
}

export type ServerAction =
  | {
      readonly kind: 'send';
      readonly vp: number;
      readonly sint: number;
      readonly payload: Uint8Array;
    }
  | {
      readonly kind: 'open-channel';
      readonly relid: number;
      readonly deviceId: number;
      readonly request: OpenRequest;
      readonly gpadl: Gpadl;
      /** Pages of the guest-to-host ring (header + data); the host-to-guest ring follows. */
      readonly downstreamPageOffset: number;
      /** Connection id the guest signals this channel on. */
      readonly connectionId: number;
    }
  | { readonly kind: 'close-channel'; readonly relid: number; readonly deviceId: number }
  | { readonly kind: 'modify-channel'; readonly relid: number; readonly targetVp: number }
  | { readonly kind: 'connected'; readonly version: number; readonly messageConnectionId: number }
  | { readonly kind: 'disconnected' }
  | { readonly kind: 'dropped'; readonly reason: string };

export type ChannelPhase = 'offered' | 'opening' | 'open' | 'closing';

export interface ServerStats {
  messagesIn: number;
  messagesOut: number;
  dropped: number;
  lastDropReasons: string[];
  negotiations: number;
  unloads: number;
}

export interface ChannelSummary {
  readonly relid: number;
  readonly deviceId: number;
  readonly subchannelIndex: number;
  readonly classId: string;
  readonly instanceId: string;
  readonly phase: ChannelPhase;
  readonly rescinded: boolean;
  readonly targetVp: number;
}
