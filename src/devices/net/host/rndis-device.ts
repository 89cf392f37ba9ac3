/**
 * The host's RNDIS device: what Hyper-V's NIC answers on the control path —
 * INITIALIZE, QUERY and SET of the OIDs Linux's rndis_filter.c uses,
 * KEEPALIVE, RESET and HALT. It keeps what the guest set: the packet
 * filter, the offloads it turned on, and the RSS key and indirection table
 * that pick the channel a received frame goes to.
 *
 * The guest is hostile: every information buffer is bounded before it is
 * read (the RSS table and key inside the SET's buffer, table entries inside
 * the channels that exist); a bad SET is answered INVALID_DATA and changes
 * nothing.
 */

import { NvspVersion } from '../protocol.ts';
import type { ControlMessage } from '../rndis-control.ts';
import {
  buildInitializeComplete,
  buildQueryComplete,
  buildResetComplete,
  buildStatusComplete,
} from '../rndis-control.ts';
import {
  NDIS_OFFLOAD_ENCAP_8023,
  NDIS_OFFLOAD_PARAMETERS_REVISION_3,
  NDIS_OFFLOAD_SIZE,
  NDIS_OFFLOAD_SIZE_6_0,
  NDIS_OFFLOAD_SIZE_6_1,
  NDIS_RSS_PARAM_FLAG_DISABLE_RSS,
  NdisLsov2Cap,
  NdisObjectType,
  NdisTxCsum6Cap,
  NdisTxCsumCap,
  ndisOffload,
  ndisOffloadParams,
  ndisRecvScaleCap,
  ndisRecvScaleParam,
  OffloadParam,
  Oid,
  RndisMessageType,
  RndisStatus,
} from '../rndis-protocol.ts';

/** Largest TCP send the guest may hand over in one LSOv2 packet (what Hyper-V offers). */
export const LSO_MAX_SIZE = 62780;

export interface RndisDeviceOptions {
  readonly mac: Uint8Array;
  readonly mtu: number;
  /** Link speed in bits per second. */
  readonly linkSpeed: number;
  readonly friendlyName: string;
  /** Channels the NIC can spread received frames over (primary + sub-channels). */
  readonly maxChannels: number;
}

export interface OffloadState {
  tcp4Checksum: boolean;
  udp4Checksum: boolean;
  tcp6Checksum: boolean;
  udp6Checksum: boolean;
  lso4: boolean;
  lso6: boolean;
  /** Receive segment coalescing the guest turned on (NVSP 6.1 guests). */
  rsc4: boolean;
  rsc6: boolean;
}

export class RndisDevice {
  state: 'uninitialized' | 'initialized' | 'halted' = 'uninitialized';
  packetFilter = 0;
  readonly offloads: OffloadState = {
    tcp4Checksum: false,
    udp4Checksum: false,
    tcp6Checksum: false,
    udp6Checksum: false,
    lso4: false,
    lso6: false,
    rsc4: false,
    rsc6: false,
  };
  /** RSS as the guest set it: the key, and channel indices by hash (empty: off). */
  rssKey: Uint8Array = new Uint8Array(0);
  rssTable: Uint16Array = new Uint16Array(0);
  /** Channels the guest opened; RSS entries must name one of these. */
  channels = 1;
  link = true;
  readonly oids: number[] = [];
  /** Control messages refused (malformed or out of order). */
  refused = 0;

  constructor(
    private readonly options: RndisDeviceOptions,
    /** The negotiated NVSP version (it sizes the offload object). */
    private readonly nvspVersion: () => number,
  ) {}

  /** Answers one control message; undefined for HALT, which has no answer. */
  handle(m: ControlMessage): Uint8Array | undefined {
    switch (m.type) {
      case RndisMessageType.Initialize:
        this.state = 'initialized';
        return buildInitializeComplete(m.reqId, RndisStatus.Success, {
          maxPacketsPerMessage: 8,
          maxTransferSize: 0x4000,
          alignmentFactor: 3,
        });
      case RndisMessageType.Query:
        this.record(m.oid);
        return this.query(m);
      case RndisMessageType.Set:
        this.record(m.oid);
        return buildStatusComplete(RndisMessageType.SetComplete, m.reqId, this.set(m));
      case RndisMessageType.Keepalive:
        return buildStatusComplete(
          RndisMessageType.KeepaliveComplete,
          m.reqId,
          RndisStatus.Success,
        );
      case RndisMessageType.Reset:
        this.packetFilter = 0;
        return buildResetComplete(RndisStatus.Success);
      case RndisMessageType.Halt:
        this.state = 'halted';
        this.packetFilter = 0;
        return undefined;
      default:
        this.refused++;
        return undefined;
    }
  }

  private record(oid: number): void {
    if (this.oids.length < 256) this.oids.push(oid);
  }

  private query(m: ControlMessage): Uint8Array {
    const ok = (info: Uint8Array) => buildQueryComplete(m.reqId, RndisStatus.Success, info);
    const u32 = (value: number): Uint8Array => {
      const b = new Uint8Array(4);
      new DataView(b.buffer).setUint32(0, value >>> 0, true);
      return b;
    };
    switch (m.oid) {
      case Oid.GenMaximumFrameSize:
        return ok(u32(this.options.mtu));
      case Oid.Ieee8023PermanentAddress:
      case Oid.Ieee8023CurrentAddress:
        return ok(this.options.mac.slice(0, 6));
      case Oid.GenFriendlyName:
        return ok(utf16(this.options.friendlyName));
      case Oid.GenMediaConnectStatus:
        return ok(u32(this.link ? 0 : 1));
      case Oid.GenLinkSpeed:
        // In units of 100 bits per second.
        return ok(u32(Math.floor(this.options.linkSpeed / 100)));
      case Oid.GenCurrentPacketFilter:
        return ok(u32(this.packetFilter));
      case Oid.TcpOffloadHardwareCapabilities:
        return ok(this.hardwareOffloads());
      case Oid.GenReceiveScaleCapabilities:
        return ok(
          ndisRecvScaleCap.write({
            hdr: { type: NdisObjectType.rssCapabilities, rev: 2, size: ndisRecvScaleCap.size },
            cap_flag: 0,
            num_int_msg: 1,
            num_recv_que: this.options.maxChannels,
            num_indirect_tabent: 128,
          }),
        );
      default:
        return buildQueryComplete(m.reqId, RndisStatus.NotSupported, new Uint8Array(0));
    }
  }

  /** The offloads this NIC can do, in the object size the NVSP version expects. */
  private hardwareOffloads(): Uint8Array {
    const v = this.nvspVersion();
    const size =
      v >= NvspVersion.V5
        ? NDIS_OFFLOAD_SIZE
        : v >= NvspVersion.V4
          ? NDIS_OFFLOAD_SIZE_6_1
          : NDIS_OFFLOAD_SIZE_6_0;
    const revision =
      v >= NvspVersion.V5 ? NDIS_OFFLOAD_PARAMETERS_REVISION_3 : v >= NvspVersion.V4 ? 2 : 1;
    const tx4 =
      NdisTxCsumCap.ip4 |
      NdisTxCsumCap.ip4Options |
      NdisTxCsumCap.tcp4 |
      NdisTxCsumCap.tcp4Options |
      NdisTxCsumCap.udp4;
    const tx6 =
      NdisTxCsum6Cap.ext | NdisTxCsum6Cap.tcp6 | NdisTxCsum6Cap.tcp6Options | NdisTxCsum6Cap.udp6;
    const full = ndisOffload.write({
      header: { type: NdisObjectType.offload, revision, size },
      csum: {
        ip4_txenc: NDIS_OFFLOAD_ENCAP_8023,
        ip4_txcsum: tx4,
        ip4_rxenc: NDIS_OFFLOAD_ENCAP_8023,
        ip4_rxcsum: tx4,
        ip6_txenc: NDIS_OFFLOAD_ENCAP_8023,
        ip6_txcsum: tx6,
        ip6_rxenc: NDIS_OFFLOAD_ENCAP_8023,
        ip6_rxcsum: tx6,
      },
      lsov1: new Uint8Array(16),
      ipsecv1: new Uint8Array(28),
      lsov2: {
        ip4_encap: NDIS_OFFLOAD_ENCAP_8023,
        ip4_maxsz: LSO_MAX_SIZE,
        ip4_minsg: 2,
        ip6_encap: NDIS_OFFLOAD_ENCAP_8023,
        ip6_maxsz: LSO_MAX_SIZE,
        ip6_minsg: 2,
        ip6_opts: NdisLsov2Cap.ip6Ext | NdisLsov2Cap.tcp6Options,
      },
      flags: 0,
      ipsecv2: {
        encap: 0,
        caps: new Uint8Array(10),
        extseq: 0,
        udp_esp: 0,
        algos: new Uint8Array(8),
        sa_caps: 0,
      },
      // rsc.ip4, rsc.ip6: the host coalesces received TCP segments for guests that ask.
      rsc: Uint8Array.of(1, 1),
      encap_gre: new Uint8Array(8),
    });
    return full.subarray(0, size);
  }

  private set(m: ControlMessage): number {
    const v = new DataView(m.info.buffer, m.info.byteOffset, m.info.byteLength);
    switch (m.oid) {
      case Oid.GenCurrentPacketFilter:
        if (m.info.length < 4) return RndisStatus.InvalidLength;
        this.packetFilter = v.getUint32(0, true);
        return RndisStatus.Success;
      case Oid.TcpOffloadParameters:
        return this.setOffloads(m.info);
      case Oid.GenReceiveScaleParameters:
        return this.setRss(m.info);
      case Oid.GenRndisConfigParameter:
        // A MAC address change through "NetworkAddress": accepted, the MAC stays the host's.
        return RndisStatus.Success;
      default:
        return RndisStatus.NotSupported;
    }
  }

  /** ndis_offload_params: each byte 0 (no change), or a TX/RX or LSOv2 setting. */
  private setOffloads(info: Uint8Array): number {
    // Up to NVSP 4 Linux sends only the first 22 bytes, which hold every field used here.
    if (info.length < 13) return RndisStatus.InvalidLength;
    const csum = (value: number, current: boolean): boolean => {
      if (value === OffloadParam.noChange) return current;
      return value === OffloadParam.txRxEnabled || value === OffloadParam.txEnabledRxDisabled;
    };
    const lso = (value: number, current: boolean): boolean => {
      if (value === OffloadParam.noChange) return current;
      return value === OffloadParam.lsov2Enabled;
    };
    const o = this.offloads;
    o.tcp4Checksum = csum(info[5]!, o.tcp4Checksum);
    o.udp4Checksum = csum(info[6]!, o.udp4Checksum);
    o.tcp6Checksum = csum(info[7]!, o.tcp6Checksum);
    o.udp6Checksum = csum(info[8]!, o.udp6Checksum);
    o.lso4 = lso(info[11]!, o.lso4);
    o.lso6 = lso(info[12]!, o.lso6);
    const rsc4At = ndisOffloadParams.offsetOf('rsc_ip_v4');
    const rsc6At = ndisOffloadParams.offsetOf('rsc_ip_v6');
    if (info.length > rsc6At) {
      const rsc = (value: number, current: boolean): boolean =>
        value === OffloadParam.noChange ? current : value === OffloadParam.rscEnabled;
      o.rsc4 = rsc(info[rsc4At]!, o.rsc4);
      o.rsc6 = rsc(info[rsc6At]!, o.rsc6);
    }
    return RndisStatus.Success;
  }

  /** ndis_recv_scale_param with its indirection table and key (rndis_set_rss_param_msg). */
  private setRss(info: Uint8Array): number {
    if (info.length < ndisRecvScaleParam.size) return RndisStatus.InvalidLength;
    const p = ndisRecvScaleParam.read(info);
    if (p.flag & NDIS_RSS_PARAM_FLAG_DISABLE_RSS) {
      this.rssTable = new Uint16Array(0);
      return RndisStatus.Success;
    }
    const { indirect_taboffset: tableAt, indirect_tabsize: tableBytes } = p;
    const { hashkey_offset: keyAt, hashkey_size: keyBytes } = p;
    if (tableBytes % 4 !== 0 || tableBytes === 0 || tableBytes > 4 * 256)
      return RndisStatus.InvalidData;
    if (tableAt > info.length || tableBytes > info.length - tableAt) return RndisStatus.InvalidData;
    if (keyBytes !== 40 || keyAt > info.length || keyBytes > info.length - keyAt) {
      return RndisStatus.InvalidData;
    }
    const view = new DataView(info.buffer, info.byteOffset, info.byteLength);
    const table = new Uint16Array(tableBytes / 4);
    for (let i = 0; i < table.length; i++) {
      const entry = view.getUint32(tableAt + 4 * i, true);
      if (entry >= this.options.maxChannels) return RndisStatus.InvalidData;
      table[i] = entry;
    }
    this.rssTable = table;
    this.rssKey = info.slice(keyAt, keyAt + keyBytes);
    return RndisStatus.Success;
  }
}

function utf16(text: string): Uint8Array {
  const out = new Uint8Array(2 * text.length + 2);
  for (let i = 0; i < text.length; i++) {
    out[2 * i] = text.charCodeAt(i) & 0xff;
    out[2 * i + 1] = text.charCodeAt(i) >> 8;
  }
  return out;
}
