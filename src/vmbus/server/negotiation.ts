/**
 * The host's answer to INITIATE_CONTACT, as Hyper-V gives it (Linux
 * drivers/hv/connection.c vmbus_negotiate_version expects it): a version the
 * host supports, requested on the right connection id (4 from 5.0, 1
 * before), is accepted; from 5.0 the answer names connection id 4 for all
 * further messages and goes to the SINT the guest asked for.
 */
import {
  ChannelMessageType,
  ConnectionState,
  initiateContactMessage,
  VMBUS_MESSAGE_CONNECTION_ID,
  VMBUS_MESSAGE_CONNECTION_ID_4,
  VMBUS_MESSAGE_SINT,
  VmbusVersion,
  versionResponseMessage,
} from '../protocol.ts';

export interface ConnectionInfo {
  readonly version: number;
  readonly targetVp: number;
  readonly sint: number;
  readonly messageConnectionId: number;
  /** Below 5.0: GPA of the guest's interrupt page (receive half, then send half at +2048). */
  readonly interruptPage: bigint;
  readonly monitorPage1: bigint;
  readonly monitorPage2: bigint;
}

export type ContactAnswer =
  /** Nowhere to answer: the message names a VP or SINT that does not exist. */
  | { readonly kind: 'invalid'; readonly reason: string }
  /** VERSION_RESPONSE to send; `connection` is set when the version was accepted. */
  | {
      readonly kind: 'answer';
      readonly vp: number;
      readonly sint: number;
      readonly payload: Uint8Array;
      readonly connection?: ConnectionInfo;
    };

/** Decides the answer to an INITIATE_CONTACT (the whole message, length already checked). */
export function answerInitiateContact(
  message: Uint8Array,
  connectionId: number,
  versions: readonly number[],
  vpCount: number,
  alreadyConnected: boolean,
): ContactAnswer {
  const m = initiateContactMessage.read(message);
  const requested = m.vmbus_version_requested;
  const v5 = requested >= VmbusVersion.Win10V5;
  const sint = v5 ? m.msg_sint : VMBUS_MESSAGE_SINT;
  const vp = m.target_vcpu;
  if (vp >= vpCount || sint >= 16) {
    return { kind: 'invalid', reason: `INITIATE_CONTACT targets VP ${vp} SINT ${sint}` };
  }
  const answer = (accepted: boolean, state: ConnectionState, connId: number): Uint8Array =>
    versionResponseMessage.write({
      header: { msgtype: ChannelMessageType.VersionResponse },
      version_supported: accepted ? 1 : 0,
      connection_state: state,
      msg_conn_id: connId,
    });
  if (alreadyConnected) {
    // A connected guest must UNLOAD before it negotiates again.
    return {
      kind: 'answer',
      vp,
      sint,
      payload: answer(false, ConnectionState.FailedUnknownFailure, 0),
    };
  }
  const rightPort = v5
    ? connectionId === VMBUS_MESSAGE_CONNECTION_ID_4
    : connectionId === VMBUS_MESSAGE_CONNECTION_ID;
  if (!versions.includes(requested) || !rightPort) {
    return { kind: 'answer', vp, sint, payload: answer(false, ConnectionState.Successful, 0) };
  }
  const messageConnectionId = v5 ? VMBUS_MESSAGE_CONNECTION_ID_4 : VMBUS_MESSAGE_CONNECTION_ID;
  return {
    kind: 'answer',
    vp,
    sint,
    payload: answer(true, ConnectionState.Successful, v5 ? messageConnectionId : 0),
    connection: {
      version: requested,
      targetVp: vp,
      sint,
      messageConnectionId,
      interruptPage: v5 ? 0n : m.interrupt_page,
      monitorPage1: m.monitor_page1,
      monitorPage2: m.monitor_page2,
    },
  };
}
