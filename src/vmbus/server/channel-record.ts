/** What the server knows of one offered channel, from offer to release. */
import type { OfferParameters } from '../device.ts';
import type { ChannelPhase, ChannelSummary } from './actions.ts';

export interface ChannelRecord {
  readonly relid: number;
  readonly deviceId: number;
  readonly offer: OfferParameters;
  readonly subchannelIndex: number;
  phase: ChannelPhase;
  /** The guest has been sent this offer (and not told it is gone). */
  offered: boolean;
  rescinded: boolean;
  relidReleased: boolean;
  closeAfterOpen: boolean;
  openId: number;
  targetVp: number;
  ringGpadl: number | undefined;
}

export function newChannelRecord(
  relid: number,
  deviceId: number,
  offer: OfferParameters,
  subchannelIndex: number,
): ChannelRecord {
  return {
    relid,
    deviceId,
    offer,
    subchannelIndex,
    phase: 'offered',
    offered: false,
    rescinded: false,
    relidReleased: false,
    closeAfterOpen: false,
    openId: 0,
    targetVp: 0,
    ringGpadl: undefined,
  };
}

export function channelSummary(record: ChannelRecord): ChannelSummary {
  return {
    relid: record.relid,
    deviceId: record.deviceId,
    subchannelIndex: record.subchannelIndex,
    classId: record.offer.classId,
    instanceId: record.offer.instanceId,
    phase: record.phase,
    rescinded: record.rescinded,
    targetVp: record.targetVp,
  };
}
