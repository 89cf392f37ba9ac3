/**
 * OFFERCHANNEL for one channel of a device. From Windows 7 on, offers carry
 * the channel's own connection id (relid | SINT << 12, as OpenVMM forms it)
 * and, when the host gives channels dedicated interrupts, say so; before
 * that the guest signals connection id 2 and flags the interrupt page.
 */
import type { OfferParameters } from '../device.ts';
import {
  ChannelFlags,
  ChannelMessageType,
  channelConnectionId,
  MAX_PIPE_USER_DEFINED_BYTES,
  MAX_USER_DEFINED_BYTES,
  offerChannelMessage,
  VmbusVersion,
} from '../protocol.ts';

export function offerChannelPayload(
  offer: OfferParameters,
  relid: number,
  subchannelIndex: number,
  version: number,
  dedicatedInterrupts: boolean,
): Uint8Array {
  const pipe = offer.pipeMode !== undefined;
  const userDefined = offer.userDefined ?? new Uint8Array(0);
  const modern = version >= VmbusVersion.Win7;
  return offerChannelMessage.write({
    header: { msgtype: ChannelMessageType.OfferChannel },
    offer: {
      if_type: offer.classId,
      if_instance: offer.instanceId,
      chn_flags: (offer.channelFlags ?? 0) | (pipe ? ChannelFlags.NamedPipeMode : 0),
      mmio_megabytes: offer.mmioMegabytes ?? 0,
      u: pipe
        ? {
            pipe: {
              pipe_mode: offer.pipeMode!,
              user_def: userDefined.subarray(0, MAX_PIPE_USER_DEFINED_BYTES),
            },
          }
        : { std: { user_def: userDefined.subarray(0, MAX_USER_DEFINED_BYTES) } },
      sub_channel_index: subchannelIndex,
    },
    child_relid: relid,
    monitorid: 0,
    monitor_allocated: 0,
    is_dedicated_interrupt: modern && dedicatedInterrupts ? 1 : 0,
    connection_id: modern ? channelConnectionId(relid) : 0,
  });
}
