import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { registeredStructs } from '../../../src/wire/index.ts';
import { loadAllProtocols, oracleSection } from '../../conformance/oracle.ts';

/**
 * The NIC's wire structs: every NVSP, RNDIS and NDIS struct the oracle
 * measured is declared (the unions Linux names only to size a message are
 * the exceptions), so the conformance test compares each one with Linux.
 */
const notDeclared = new Set([
  // Anonymous unions Linux names to size nvsp_message; nvsp_message declares the 36 bytes.
  'nvsp_message_init_uber',
  'nvsp_1_message_uber',
  'nvsp_2_message_uber',
  'nvsp_4_message_uber',
  'nvsp_5_message_uber',
  'nvsp_6_message_uber',
  'nvsp_all_messages',
  // The body union of rndis_message, declared inline as rndis_message.msg.
  'rndis_message_container',
]);

describe('NIC wire declarations', () => {
  before(async () => {
    await loadAllProtocols();
  });

  it('declare every nvsp_*, rndis_* and ndis_* struct of the oracle', () => {
    const declared = registeredStructs();
    const wanted = [
      ...Object.keys(oracleSection('netvsc_nvsp').structs ?? {}),
      ...Object.keys(oracleSection('rndis').structs ?? {}),
    ].filter((name) => !notDeclared.has(name));
    assert.ok(wanted.length >= 55, `only ${wanted.length} structs in the oracle's sections`);
    assert.deepEqual(
      wanted.filter((name) => !declared.has(name)),
      [],
    );
  });

  it('have the sizes Linux has for the messages netvsc sends', () => {
    const declared = registeredStructs();
    assert.equal(declared.get('nvsp_message')?.size, 40);
    assert.equal(declared.get('recv_comp_msg')?.size, 8);
    assert.equal(declared.get('rndis_message')?.size, 52);
    assert.equal(declared.get('rndis_packet')?.size, 36);
    assert.equal(declared.get('ndis_offload')?.size, 156);
  });
});

describe('NIC constants', () => {
  const nvsp = (name: string) => Number(oracleSection('netvsc_nvsp').constants?.[name]);
  const rndis = (name: string) => Number(oracleSection('rndis').constants?.[name]);

  it('match Linux for NVSP versions, message types and statuses', async () => {
    const p = await import('../../../src/devices/net/protocol.ts');
    assert.deepEqual([...p.LINUX_NVSP_VERSION_ORDER].reverse(), [
      ...(oracleSection('netvsc_nvsp').linux_nvsp_ver_list as number[]),
    ]);
    const types: [number, string][] = [
      [p.NvspMessageType.Init, 'NVSP_MSG_TYPE_INIT'],
      [p.NvspMessageType.InitComplete, 'NVSP_MSG_TYPE_INIT_COMPLETE'],
      [p.NvspMessageType.SendNdisVersion, 'NVSP_MSG1_TYPE_SEND_NDIS_VER'],
      [p.NvspMessageType.SendReceiveBuffer, 'NVSP_MSG1_TYPE_SEND_RECV_BUF'],
      [p.NvspMessageType.SendReceiveBufferComplete, 'NVSP_MSG1_TYPE_SEND_RECV_BUF_COMPLETE'],
      [p.NvspMessageType.RevokeReceiveBuffer, 'NVSP_MSG1_TYPE_REVOKE_RECV_BUF'],
      [p.NvspMessageType.SendSendBuffer, 'NVSP_MSG1_TYPE_SEND_SEND_BUF'],
      [p.NvspMessageType.SendSendBufferComplete, 'NVSP_MSG1_TYPE_SEND_SEND_BUF_COMPLETE'],
      [p.NvspMessageType.RevokeSendBuffer, 'NVSP_MSG1_TYPE_REVOKE_SEND_BUF'],
      [p.NvspMessageType.SendRndisPacket, 'NVSP_MSG1_TYPE_SEND_RNDIS_PKT'],
      [p.NvspMessageType.SendRndisPacketComplete, 'NVSP_MSG1_TYPE_SEND_RNDIS_PKT_COMPLETE'],
      [p.NvspMessageType.SendNdisConfig, 'NVSP_MSG2_TYPE_SEND_NDIS_CONFIG'],
      [p.NvspMessageType.SendVfAssociation, 'NVSP_MSG4_TYPE_SEND_VF_ASSOCIATION'],
      [p.NvspMessageType.SwitchDataPath, 'NVSP_MSG4_TYPE_SWITCH_DATA_PATH'],
      [p.NvspMessageType.Subchannel, 'NVSP_MSG5_TYPE_SUBCHANNEL'],
      [p.NvspMessageType.SendIndirectionTable, 'NVSP_MSG5_TYPE_SEND_INDIRECTION_TABLE'],
      [p.NvspStatus.Success, 'NVSP_STAT_SUCCESS'],
      [p.NvspStatus.Failure, 'NVSP_STAT_FAIL'],
      [p.NETVSC_RECEIVE_BUFFER_ID, 'NETVSC_RECEIVE_BUFFER_ID'],
      [p.NETVSC_SEND_SECTION_SIZE, 'NETVSC_SEND_SECTION_SIZE'],
      [p.NETVSC_RECV_SECTION_SIZE, 'NETVSC_RECV_SECTION_SIZE'],
      [p.NETVSC_MTU_MIN, 'NETVSC_MTU_MIN'],
      [p.VRSS_SEND_TAB_SIZE, 'VRSS_SEND_TAB_SIZE'],
      [p.VRSS_CHANNEL_MAX, 'VRSS_CHANNEL_MAX'],
      [p.NETVSC_MAX_XFER_PAGE_RANGES, 'NETVSC_MAX_XFER_PAGE_RANGES'],
      [p.NVSP_SUBCHANNEL_ALLOCATE, 'NVSP_SUBCHANNEL_ALLOCATE'],
      [p.ndisVersionFor(p.NvspVersion.V4), 'NDIS_VERSION_6_1'],
      [p.ndisVersionFor(p.NvspVersion.V5), 'NDIS_VERSION_6_30'],
    ];
    for (const [ours, name] of types) assert.equal(ours, nvsp(name), name);
  });

  it('match Linux for RNDIS messages, statuses, OIDs and per-packet info', async () => {
    const r = await import('../../../src/devices/net/rndis-protocol.ts');
    const pairs: [number, string][] = [
      [r.RndisMessageType.Packet, 'RNDIS_MSG_PACKET'],
      [r.RndisMessageType.Initialize, 'RNDIS_MSG_INIT'],
      [r.RndisMessageType.InitializeComplete, 'RNDIS_MSG_INIT_C'],
      [r.RndisMessageType.Halt, 'RNDIS_MSG_HALT'],
      [r.RndisMessageType.Query, 'RNDIS_MSG_QUERY'],
      [r.RndisMessageType.QueryComplete, 'RNDIS_MSG_QUERY_C'],
      [r.RndisMessageType.Set, 'RNDIS_MSG_SET'],
      [r.RndisMessageType.SetComplete, 'RNDIS_MSG_SET_C'],
      [r.RndisMessageType.Reset, 'RNDIS_MSG_RESET'],
      [r.RndisMessageType.ResetComplete, 'RNDIS_MSG_RESET_C'],
      [r.RndisMessageType.IndicateStatus, 'RNDIS_MSG_INDICATE'],
      [r.RndisMessageType.Keepalive, 'RNDIS_MSG_KEEPALIVE'],
      [r.RndisMessageType.KeepaliveComplete, 'RNDIS_MSG_KEEPALIVE_C'],
      [r.RndisStatus.Success, 'RNDIS_STATUS_SUCCESS'],
      [r.RndisStatus.MediaConnect, 'RNDIS_STATUS_MEDIA_CONNECT'],
      [r.RndisStatus.MediaDisconnect, 'RNDIS_STATUS_MEDIA_DISCONNECT'],
      [r.RndisStatus.NetworkChange, 'RNDIS_STATUS_NETWORK_CHANGE'],
      [r.RndisStatus.NotSupported, 'RNDIS_STATUS_NOT_SUPPORTED'],
      [r.RndisStatus.InvalidData, 'RNDIS_STATUS_INVALID_DATA'],
      [r.RndisStatus.InvalidLength, 'RNDIS_STATUS_INVALID_LENGTH'],
      [r.RndisStatus.BufferTooShort, 'RNDIS_STATUS_BUFFER_TOO_SHORT'],
      [r.RndisStatus.InvalidOid, 'RNDIS_STATUS_INVALID_OID'],
      [r.Oid.GenMaximumFrameSize, 'RNDIS_OID_GEN_MAXIMUM_FRAME_SIZE'],
      [r.Oid.GenLinkSpeed, 'RNDIS_OID_GEN_LINK_SPEED'],
      [r.Oid.GenCurrentPacketFilter, 'RNDIS_OID_GEN_CURRENT_PACKET_FILTER'],
      [r.Oid.GenMediaConnectStatus, 'RNDIS_OID_GEN_MEDIA_CONNECT_STATUS'],
      [r.Oid.GenFriendlyName, 'RNDIS_OID_GEN_FRIENDLY_NAME'],
      [r.Oid.GenRndisConfigParameter, 'RNDIS_OID_GEN_RNDIS_CONFIG_PARAMETER'],
      [r.Oid.Ieee8023PermanentAddress, 'RNDIS_OID_802_3_PERMANENT_ADDRESS'],
      [r.Oid.Ieee8023CurrentAddress, 'RNDIS_OID_802_3_CURRENT_ADDRESS'],
      [r.Oid.GenReceiveScaleCapabilities, 'OID_GEN_RECEIVE_SCALE_CAPABILITIES'],
      [r.Oid.GenReceiveScaleParameters, 'OID_GEN_RECEIVE_SCALE_PARAMETERS'],
      [r.Oid.TcpOffloadParameters, 'OID_TCP_OFFLOAD_PARAMETERS'],
      [r.Oid.TcpOffloadHardwareCapabilities, 'OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES'],
      [r.PpiType.TcpIpChecksum, 'TCPIP_CHKSUM_PKTINFO'],
      [r.PpiType.TcpLargeSend, 'TCP_LARGESEND_PKTINFO'],
      [r.PpiType.Ieee8021q, 'IEEE_8021Q_INFO'],
      [r.PpiType.HashValue, 'NBL_HASH_VALUE'],
      [r.RNDIS_PKTINFO_ID, 'RNDIS_PKTINFO_ID'],
      [r.NdisPacketType.directed, 'NDIS_PACKET_TYPE_DIRECTED'],
      [r.NdisPacketType.allMulticast, 'NDIS_PACKET_TYPE_ALL_MULTICAST'],
      [r.NdisPacketType.broadcast, 'NDIS_PACKET_TYPE_BROADCAST'],
      [r.NdisPacketType.promiscuous, 'NDIS_PACKET_TYPE_PROMISCUOUS'],
      [r.NdisObjectType.offload, 'NDIS_OBJECT_TYPE_OFFLOAD'],
      [r.NdisObjectType.rssCapabilities, 'NDIS_OBJECT_TYPE_RSS_CAPABILITIES'],
      [r.NdisObjectType.rssParameters, 'NDIS_OBJECT_TYPE_RSS_PARAMETERS'],
      [r.NdisObjectType.default, 'NDIS_OBJECT_TYPE_DEFAULT'],
      [r.NDIS_OFFLOAD_SIZE, 'NDIS_OFFLOAD_SIZE'],
      [r.NDIS_OFFLOAD_SIZE_6_0, 'NDIS_OFFLOAD_SIZE_6_0'],
      [r.NDIS_OFFLOAD_SIZE_6_1, 'NDIS_OFFLOAD_SIZE_6_1'],
      [r.VERSION_4_OFFLOAD_SIZE, 'VERSION_4_OFFLOAD_SIZE'],
      [r.NDIS_OFFLOAD_ENCAP_8023, 'NDIS_OFFLOAD_ENCAP_8023'],
      [r.NdisTxCsumCap.tcp4, 'NDIS_TXCSUM_CAP_TCP4'],
      [r.NdisTxCsumCap.udp4, 'NDIS_TXCSUM_CAP_UDP4'],
      [r.NdisTxCsum6Cap.tcp6, 'NDIS_TXCSUM_CAP_TCP6'],
      [r.NdisHash.toeplitz, 'NDIS_HASH_FUNC_TOEPLITZ'],
      [r.NdisHash.tcpIpv6, 'NDIS_HASH_TCP_IPV6'],
      [r.NDIS_RSS_PARAM_FLAG_DISABLE_RSS, 'NDIS_RSS_PARAM_FLAG_DISABLE_RSS'],
      [r.NETVSC_HASH_KEYLEN, 'NETVSC_HASH_KEYLEN'],
      [r.ITAB_NUM, 'ITAB_NUM'],
      [r.ITAB_NUM_MAX, 'ITAB_NUM_MAX'],
    ];
    for (const [ours, name] of pairs) assert.equal(ours >>> 0, rndis(name) >>> 0, name);
  });
});
