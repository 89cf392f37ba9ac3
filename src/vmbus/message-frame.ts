/**
 * The first checks every channel message gets, on either side, before
 * anything reads its fields: a length within one SynIC payload, a known
 * type travelling in the right direction, and at least the minimum size of
 * that type (Linux's channel_message_table checks on the guest side; the
 * host applies the same rule to the guest).
 */
import {
  type ChannelMessageType,
  channelMessageHeader,
  channelMessageName,
  type Direction,
  MAX_SIZE_CHANNEL_MESSAGE,
  MESSAGE_SPECS,
  type MessageSpec,
} from './protocol.ts';

export type FrameCheck =
  | { readonly ok: true; readonly type: ChannelMessageType; readonly spec: MessageSpec }
  | { readonly ok: false; readonly reason: string };

export function checkMessageFrame(payload: Uint8Array, direction: Direction): FrameCheck {
  if (payload.length < channelMessageHeader.size || payload.length > MAX_SIZE_CHANNEL_MESSAGE) {
    return { ok: false, reason: `channel message of ${payload.length} bytes` };
  }
  const type = channelMessageHeader.read(payload).msgtype;
  const spec = MESSAGE_SPECS.get(type);
  if (spec?.direction !== direction) {
    return { ok: false, reason: `${channelMessageName(type)} is not a ${direction} message` };
  }
  if (payload.length < spec.minSize) {
    return {
      ok: false,
      reason: `${channelMessageName(type)} of ${payload.length} bytes < ${spec.minSize}`,
    };
  }
  return { ok: true, type, spec };
}
