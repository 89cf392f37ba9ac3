import {
  ChannelMessageType,
  initiateContactMessage,
  VMBUS_MESSAGE_CONNECTION_ID,
  VMBUS_MESSAGE_CONNECTION_ID_4,
  VMBUS_MESSAGE_SINT,
  VmbusVersion,
} from '../protocol.ts';
import type { MessageConnection } from './message-connection.ts';

/**
 * INITIATE_CONTACT for one version, and the connection id it goes to, as
 * Linux's vmbus_negotiate_version() sends it: from 5.0 to connection id 4
 * naming the message SINT; before 5.0 to connection id 1 naming the
 * interrupt page.
 */
export function initiateContactFor(
  version: number,
  connection: MessageConnection,
): { message: Uint8Array; connectionId: number } {
  const v5 = version >= VmbusVersion.Win10V5;
  const message = initiateContactMessage.write({
    header: { msgtype: ChannelMessageType.InitiateContact },
    vmbus_version_requested: version,
    target_vcpu: 0,
    ...(v5
      ? { msg_sint: VMBUS_MESSAGE_SINT, msg_vtl: 0 }
      : { interrupt_page: BigInt(connection.interruptPageGpa) }),
    monitor_page1: BigInt(connection.monitorPage1Gpa),
    monitor_page2: BigInt(connection.monitorPage2Gpa),
  });
  return {
    message,
    connectionId: v5 ? VMBUS_MESSAGE_CONNECTION_ID_4 : VMBUS_MESSAGE_CONNECTION_ID,
  };
}
