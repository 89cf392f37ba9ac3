import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  HV_MESSAGE_PAYLOAD_BYTE_COUNT,
  HV_SYNIC_SINT_COUNT,
  HvCallCode,
  HvMsr,
  HvStatus,
} from '../../src/hv/protocol.ts';
import { FIRST_GPADL_HANDLE } from '../../src/vmbus/gpadl.ts';
import {
  CHANNELMSG_COUNT,
  ChannelFlags,
  ChannelMessageType,
  DeviceClass,
  GPADL_BODY_MAX_PFNS,
  GPADL_HEADER_FIXED_BYTES,
  GPADL_HEADER_MAX_PFNS,
  MAX_CHANNEL_RELIDS,
  MAX_SIZE_CHANNEL_MESSAGE,
  MAX_USER_DEFINED_BYTES,
  MESSAGE_SPECS,
  VMBUS_EVENT_CONNECTION_ID,
  VMBUS_MESSAGE_CONNECTION_ID,
  VMBUS_MESSAGE_CONNECTION_ID_4,
  VMBUS_MESSAGE_SINT,
  VmbusVersion,
} from '../../src/vmbus/protocol.ts';
import { PacketType, RING_HEADER_SIZE } from '../../src/vmbus/ring-protocol.ts';
import { guidToBytes } from '../../src/wire/index.ts';
import { oracleConstant, oracleSection } from './oracle.ts';

const n = (section: string, name: string): number => Number(oracleConstant(section, name));

describe('constants match the values measured from Linux', () => {
  it('channel message types and the guest minimum sizes', () => {
    const table = oracleSection('vmbus_channel_messages').guest_rx_message_table as {
      name: string;
      msgtype: number;
      handler_type: number;
      min_payload_len: number;
    }[];
    assert.equal(CHANNELMSG_COUNT, n('vmbus_channel_messages', 'CHANNELMSG_COUNT'));
    for (const entry of table) {
      assert.equal(n('vmbus_channel_messages', entry.name), entry.msgtype);
      // Every message Linux accepts with a minimum length: we require the same.
      if (entry.min_payload_len > 0) {
        const spec = MESSAGE_SPECS.get(entry.msgtype as ChannelMessageType);
        assert.ok(spec, `${entry.name} has a spec`);
        assert.equal(spec.minSize, entry.min_payload_len, entry.name);
        assert.equal(spec.direction, 'host-to-guest');
      }
    }
    const names: [keyof typeof ChannelMessageType, string][] = [
      ['OfferChannel', 'CHANNELMSG_OFFERCHANNEL'],
      ['RescindChannelOffer', 'CHANNELMSG_RESCIND_CHANNELOFFER'],
      ['RequestOffers', 'CHANNELMSG_REQUESTOFFERS'],
      ['AllOffersDelivered', 'CHANNELMSG_ALLOFFERS_DELIVERED'],
      ['OpenChannel', 'CHANNELMSG_OPENCHANNEL'],
      ['OpenChannelResult', 'CHANNELMSG_OPENCHANNEL_RESULT'],
      ['CloseChannel', 'CHANNELMSG_CLOSECHANNEL'],
      ['GpadlHeader', 'CHANNELMSG_GPADL_HEADER'],
      ['GpadlBody', 'CHANNELMSG_GPADL_BODY'],
      ['GpadlCreated', 'CHANNELMSG_GPADL_CREATED'],
      ['GpadlTeardown', 'CHANNELMSG_GPADL_TEARDOWN'],
      ['GpadlTorndown', 'CHANNELMSG_GPADL_TORNDOWN'],
      ['RelidReleased', 'CHANNELMSG_RELID_RELEASED'],
      ['InitiateContact', 'CHANNELMSG_INITIATE_CONTACT'],
      ['VersionResponse', 'CHANNELMSG_VERSION_RESPONSE'],
      ['Unload', 'CHANNELMSG_UNLOAD'],
      ['UnloadResponse', 'CHANNELMSG_UNLOAD_RESPONSE'],
      ['TlConnectRequest', 'CHANNELMSG_TL_CONNECT_REQUEST'],
      ['ModifyChannel', 'CHANNELMSG_MODIFYCHANNEL'],
      ['TlConnectResult', 'CHANNELMSG_TL_CONNECT_RESULT'],
      ['ModifyChannelResponse', 'CHANNELMSG_MODIFYCHANNEL_RESPONSE'],
    ];
    for (const [ours, linux] of names)
      assert.equal(ChannelMessageType[ours], n('vmbus_channel_messages', linux), linux);
  });

  it('versions, connection ids, SINT and limits', () => {
    const versions: [VmbusVersion, string][] = [
      [VmbusVersion.Ws2008, 'VERSION_WS2008'],
      [VmbusVersion.Win7, 'VERSION_WIN7'],
      [VmbusVersion.Win8, 'VERSION_WIN8'],
      [VmbusVersion.Win8_1, 'VERSION_WIN8_1'],
      [VmbusVersion.Win10, 'VERSION_WIN10'],
      [VmbusVersion.Win10V4_1, 'VERSION_WIN10_V4_1'],
      [VmbusVersion.Win10V5, 'VERSION_WIN10_V5'],
      [VmbusVersion.Win10V5_1, 'VERSION_WIN10_V5_1'],
      [VmbusVersion.Win10V5_2, 'VERSION_WIN10_V5_2'],
      [VmbusVersion.Win10V5_3, 'VERSION_WIN10_V5_3'],
    ];
    for (const [ours, linux] of versions) assert.equal(ours, n('vmbus_versions', linux), linux);
    assert.equal(VMBUS_MESSAGE_CONNECTION_ID, n('vmbus_versions', 'VMBUS_MESSAGE_CONNECTION_ID'));
    assert.equal(
      VMBUS_MESSAGE_CONNECTION_ID_4,
      n('vmbus_versions', 'VMBUS_MESSAGE_CONNECTION_ID_4'),
    );
    assert.equal(VMBUS_EVENT_CONNECTION_ID, n('synic', 'VMBUS_EVENT_CONNECTION_ID'));
    assert.equal(VMBUS_MESSAGE_SINT, n('synic', 'VMBUS_MESSAGE_SINT'));
    assert.equal(MAX_SIZE_CHANNEL_MESSAGE, n('vmbus_channel_messages', 'MAX_SIZE_CHANNEL_MESSAGE'));
    assert.equal(MAX_USER_DEFINED_BYTES, n('vmbus_channel_messages', 'MAX_USER_DEFINED_BYTES'));
    assert.equal(MAX_CHANNEL_RELIDS, n('vmbus_channel_messages', 'MAX_CHANNEL_RELIDS'));
    assert.equal(
      ChannelFlags.NamedPipeMode,
      n('vmbus_channel_messages', 'VMBUS_CHANNEL_NAMED_PIPE_MODE'),
    );
    assert.equal(
      ChannelFlags.TlnpiProviderOffer,
      n('vmbus_channel_messages', 'VMBUS_CHANNEL_TLNPI_PROVIDER_OFFER'),
    );
    assert.equal(HV_MESSAGE_PAYLOAD_BYTE_COUNT, n('synic', 'HV_MESSAGE_PAYLOAD_BYTE_COUNT'));
    assert.equal(HV_SYNIC_SINT_COUNT, n('synic', 'HV_SYNIC_SINT_COUNT'));
    assert.equal(RING_HEADER_SIZE, n('vmbus_ring', 'RING_HEADER_SIZE'));
  });

  it('GPADL message limits and handles', () => {
    assert.equal(GPADL_HEADER_MAX_PFNS, n('gpadl', 'GPADL_HEADER_MAX_PFNS'));
    assert.equal(GPADL_BODY_MAX_PFNS, n('gpadl', 'GPADL_BODY_MAX_PFNS'));
    assert.equal(GPADL_HEADER_FIXED_BYTES, n('gpadl', 'GPADL_HEADER_FIXED_BYTES'));
    assert.equal(FIRST_GPADL_HANDLE, n('gpadl', 'VMBUS_NEXT_GPADL_HANDLE_INIT'));
  });

  it('packet types', () => {
    const types: [PacketType, string][] = [
      [PacketType.DataInband, 'VM_PKT_DATA_INBAND'],
      [PacketType.DataUsingTransferPages, 'VM_PKT_DATA_USING_XFER_PAGES'],
      [PacketType.DataUsingGpadl, 'VM_PKT_DATA_USING_GPADL'],
      [PacketType.DataUsingGpaDirect, 'VM_PKT_DATA_USING_GPA_DIRECT'],
      [PacketType.Completion, 'VM_PKT_COMP'],
      [PacketType.CancelRequest, 'VM_PKT_CANCEL_REQUEST'],
      [PacketType.AdditionalData, 'VM_PKT_ADDITIONAL_DATA'],
    ];
    for (const [ours, linux] of types) assert.equal(ours, n('vmbus_packet', linux), linux);
  });

  it('hypercall codes, statuses and SynIC MSRs', () => {
    assert.equal(HvCallCode.PostMessage, n('hypercall', 'HVCALL_POST_MESSAGE'));
    assert.equal(HvCallCode.SignalEvent, n('hypercall', 'HVCALL_SIGNAL_EVENT'));
    const statuses: [HvStatus, string][] = [
      [HvStatus.Success, 'HV_STATUS_SUCCESS'],
      [HvStatus.InvalidHypercallCode, 'HV_STATUS_INVALID_HYPERCALL_CODE'],
      [HvStatus.InvalidHypercallInput, 'HV_STATUS_INVALID_HYPERCALL_INPUT'],
      [HvStatus.InvalidAlignment, 'HV_STATUS_INVALID_ALIGNMENT'],
      [HvStatus.InvalidParameter, 'HV_STATUS_INVALID_PARAMETER'],
      [HvStatus.InsufficientMemory, 'HV_STATUS_INSUFFICIENT_MEMORY'],
      [HvStatus.InvalidPortId, 'HV_STATUS_INVALID_PORT_ID'],
      [HvStatus.InvalidConnectionId, 'HV_STATUS_INVALID_CONNECTION_ID'],
      [HvStatus.InsufficientBuffers, 'HV_STATUS_INSUFFICIENT_BUFFERS'],
    ];
    for (const [ours, linux] of statuses) assert.equal(ours, n('hypercall', linux), linux);
    assert.equal(HvMsr.Simp, n('synic', 'HV_X64_MSR_SIMP'));
    assert.equal(HvMsr.Siefp, n('synic', 'HV_X64_MSR_SIEFP'));
    assert.equal(HvMsr.Eom, n('synic', 'HV_X64_MSR_EOM'));
    assert.equal(HvMsr.Scontrol, n('synic', 'HV_X64_MSR_SCONTROL'));
    assert.equal(HvMsr.Sint0, n('synic', 'HV_X64_MSR_SINT0'));
  });

  it('device class GUIDs, in text and on the wire', () => {
    const classes = oracleSection('guids').device_classes as Record<
      string,
      { canonical: string; wire_bytes_hex: string }
    >;
    for (const [name, entry] of Object.entries(classes)) {
      const ours = (DeviceClass as Record<string, string>)[name];
      assert.equal(ours, entry.canonical, name);
      assert.equal(Buffer.from(guidToBytes(ours!)).toString('hex'), entry.wire_bytes_hex, name);
    }
  });
});
