import type { GuestOffer } from '../device.ts';
import {
  ChannelFlags,
  type offerChannelMessage,
  VMBUS_EVENT_CONNECTION_ID,
  VmbusVersion,
} from '../protocol.ts';

/**
 * An OFFERCHANNEL as the guest keeps it. Before Windows 7 the offer's
 * connection id and dedicated-interrupt flag are not valid: such channels
 * signal connection id 2 (Linux vmbus_onoffer).
 */
export function decodeOffer(
  m: ReturnType<typeof offerChannelMessage.read>,
  version: number,
): GuestOffer {
  const modern = version >= VmbusVersion.Win7;
  const pipe = (m.offer.chn_flags & ChannelFlags.NamedPipeMode) !== 0;
  return {
    relid: m.child_relid,
    classId: m.offer.if_type,
    instanceId: m.offer.if_instance,
    subchannelIndex: m.offer.sub_channel_index,
    channelFlags: m.offer.chn_flags,
    mmioMegabytes: m.offer.mmio_megabytes,
    userDefined: pipe ? m.offer.u.pipe.user_def : m.offer.u.std.user_def,
    pipeMode: pipe ? m.offer.u.pipe.pipe_mode : 0,
    connectionId: modern ? m.connection_id : VMBUS_EVENT_CONNECTION_ID,
    dedicatedInterrupt: modern && m.is_dedicated_interrupt === 1,
    monitorId: m.monitorid,
    monitorAllocated: m.monitor_allocated === 1,
  };
}
