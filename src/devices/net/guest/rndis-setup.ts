/**
 * The guest's RNDIS bring-up, in the order of Linux's rndis_filter_device_add:
 * INITIALIZE (adopting the host's packets per message and alignment),
 * MAXIMUM_FRAME_SIZE (a smaller host MTU wins), 802_3_PERMANENT_ADDRESS,
 * FRIENDLY_NAME, TCP_OFFLOAD_HARDWARE_CAPABILITIES (the query carries an
 * ndis_offload header sized for the NVSP version) and SET
 * TCP_OFFLOAD_PARAMETERS for what both sides can do, MEDIA_CONNECT_STATUS,
 * and from NVSP 5 LINK_SPEED and RECEIVE_SCALE_CAPABILITIES. After the
 * sub-channels open, RECEIVE_SCALE_PARAMETERS (disable, then the table and
 * key: rndis_filter_set_rss_param), and on open the packet filter.
 *
 * Every answer is read as hostile: sizes checked before values are used.
 */
import { NvspVersion } from '../protocol.ts';
import type { ControlMessage } from '../rndis-control.ts';
import { buildInitializeRequest, buildQueryRequest, buildSetRequest } from '../rndis-control.ts';
import {
  NDIS_OFFLOAD_ENCAP_8023,
  NDIS_OFFLOAD_PARAMETERS_REVISION_3,
  NDIS_OFFLOAD_SIZE,
  NDIS_OFFLOAD_SIZE_6_0,
  NDIS_OFFLOAD_SIZE_6_1,
  NDIS_RSS_PARAM_FLAG_DISABLE_RSS,
  NdisHash,
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
  oidName,
  RndisMessageType,
  RndisStatus,
  VERSION_4_OFFLOAD_SIZE,
} from '../rndis-protocol.ts';
import type { InitStep } from './nvsp-handshake.ts';
import { NetvscError } from './nvsp-handshake.ts';
import type { RndisClient } from './rndis-client.ts';

/** Linux's default RSS key (netvsc_hash_key: the key of Microsoft's RSS specification). */
export const DEFAULT_RSS_KEY = Uint8Array.of(
  0x6d,
  0x5a,
  0x56,
  0xda,
  0x25,
  0x5b,
  0x0e,
  0xc2,
  0x41,
  0x67,
  0x25,
  0x3d,
  0x43,
  0xa3,
  0x8f,
  0xb0,
  0xd0,
  0xca,
  0x2b,
  0xcb,
  0xae,
  0x7b,
  0x30,
  0xb4,
  0x77,
  0xcb,
  0x2d,
  0xa3,
  0x80,
  0x30,
  0xf2,
  0x0c,
  0x6a,
  0x42,
  0xb7,
  0x3b,
  0xbe,
  0xac,
  0x01,
  0xfa,
);

/** The offloads the guest turned on (what the host offered and the guest wants). */
export interface GuestOffloads {
  tcp4: boolean;
  udp4: boolean;
  tcp6: boolean;
  udp6: boolean;
  lso4: boolean;
  lso6: boolean;
  /** Largest large send the host takes (bytes), 0 without LSO. */
  lsoMaxSize: number;
  /** The host coalesces received TCP segments (RSC) for this guest. */
  rsc: boolean;
}

export function noGuestOffloads(): GuestOffloads {
  return {
    tcp4: false,
    udp4: false,
    tcp6: false,
    udp6: false,
    lso4: false,
    lso6: false,
    lsoMaxSize: 0,
    rsc: false,
  };
}

export interface RndisFacts {
  maxPacketsPerMessage: number;
  alignment: number;
  mtu: number;
  mac: Uint8Array;
  friendlyName: string;
  offloads: GuestOffloads;
  link: boolean;
  /** Bits per second (0 when the host did not say). */
  linkSpeed: number;
  /** Receive queues the host's RSS offers (0 without RSS). */
  rssQueues: number;
}

const NDIS_TXCSUM_ALL_TCP4 = NdisTxCsumCap.tcp4 | NdisTxCsumCap.tcp4Options;
const NDIS_TXCSUM_ALL_TCP6 = NdisTxCsum6Cap.tcp6 | NdisTxCsum6Cap.tcp6Options | NdisTxCsum6Cap.ext;
const NDIS_LSOV2_CAP_IP6 = NdisLsov2Cap.ip6Ext | NdisLsov2Cap.tcp6Options;

/** What the guest asks to offload (its port may do less). */
export interface OffloadWish {
  readonly checksum: boolean;
  readonly lso: boolean;
  /** Receive segment coalescing (NVSP 6.1; Linux's LRO feature). */
  readonly rsc?: boolean;
}

export class RndisSetup {
  constructor(
    private readonly rndis: RndisClient,
    private readonly version: number,
    private readonly steps: InitStep[],
  ) {}

  private async query(oid: number, input?: Uint8Array): Promise<ControlMessage> {
    const answer = await this.rndis.request(RndisMessageType.Query, (id) =>
      buildQueryRequest(id, oid, input),
    );
    this.steps.push({ step: `QUERY ${oidName(oid)}`, status: answer.status });
    return answer;
  }

  private async mustQuery(oid: number, input?: Uint8Array): Promise<Uint8Array> {
    const answer = await this.query(oid, input);
    if (answer.status !== RndisStatus.Success) {
      throw new NetvscError(
        `the host refused QUERY ${oidName(oid)}: status 0x${(answer.status >>> 0).toString(16)}`,
      );
    }
    return answer.info;
  }

  async set(oid: number, value: Uint8Array): Promise<number> {
    const answer = await this.rndis.request(RndisMessageType.Set, (id) =>
      buildSetRequest(id, oid, value),
    );
    this.steps.push({ step: `SET ${oidName(oid)}`, status: answer.status });
    return answer.status;
  }

  async bringUp(mtu: number, wish: OffloadWish): Promise<RndisFacts> {
    const init = await this.rndis.request(RndisMessageType.Initialize, (id) =>
      buildInitializeRequest(id, 0x4000),
    );
    this.steps.push({ step: 'INITIALIZE', status: init.status });
    if (init.status !== RndisStatus.Success || !init.init) {
      throw new NetvscError(
        `the host refused RNDIS INITIALIZE: status 0x${(init.status >>> 0).toString(16)}`,
      );
    }
    const facts: RndisFacts = {
      maxPacketsPerMessage: Math.max(1, Math.min(64, init.init.maxPacketsPerMessage)),
      // pkt_alignment_factor is a power of two's exponent; the host's own is 3 (8 bytes).
      alignment: 1 << Math.min(12, init.init.alignmentFactor),
      mtu,
      mac: new Uint8Array(6),
      friendlyName: '',
      offloads: noGuestOffloads(),
      link: true,
      linkSpeed: 0,
      rssQueues: 0,
    };
    const frame = await this.query(Oid.GenMaximumFrameSize);
    if (frame.status === RndisStatus.Success && frame.info.length === 4) {
      const hostMtu = u32(frame.info);
      if (hostMtu >= 68 && hostMtu < facts.mtu) facts.mtu = hostMtu;
    }
    const mac = await this.mustQuery(Oid.Ieee8023PermanentAddress);
    if (mac.length !== 6)
      throw new NetvscError(`the host's MAC address is ${mac.length} bytes, not 6`);
    facts.mac = mac.slice();
    const name = await this.query(Oid.GenFriendlyName);
    if (name.status === RndisStatus.Success) facts.friendlyName = utf16(name.info.subarray(0, 512));
    facts.offloads = await this.offloads(wish);
    const link = await this.query(Oid.GenMediaConnectStatus);
    if (link.status === RndisStatus.Success && link.info.length >= 4)
      facts.link = u32(link.info) === 0;
    if (this.version < NvspVersion.V5) return facts;
    const speed = await this.query(Oid.GenLinkSpeed);
    if (speed.status === RndisStatus.Success && speed.info.length >= 4)
      facts.linkSpeed = u32(speed.info) * 100;
    const input = new Uint8Array(ndisRecvScaleCap.size);
    ndisRecvScaleCap.writeInto(input, 0, {
      hdr: { type: NdisObjectType.rssCapabilities, rev: 2, size: ndisRecvScaleCap.size },
      cap_flag: 0,
      num_int_msg: 0,
      num_recv_que: 0,
      num_indirect_tabent: 0,
    });
    const rss = await this.query(Oid.GenReceiveScaleCapabilities, input);
    if (rss.status === RndisStatus.Success && rss.info.length >= ndisRecvScaleCap.size) {
      facts.rssQueues = ndisRecvScaleCap.read(rss.info).num_recv_que;
    }
    return facts;
  }

  /** The hardware offload query and the SET of what both sides can do (rndis_netdev_set_hwcaps). */
  private async offloads(wish: OffloadWish): Promise<GuestOffloads> {
    const v = this.version;
    const size =
      v >= NvspVersion.V5
        ? NDIS_OFFLOAD_SIZE
        : v >= NvspVersion.V4
          ? NDIS_OFFLOAD_SIZE_6_1
          : NDIS_OFFLOAD_SIZE_6_0;
    const revision =
      v >= NvspVersion.V5 ? NDIS_OFFLOAD_PARAMETERS_REVISION_3 : v >= NvspVersion.V4 ? 2 : 1;
    const header = Uint8Array.of(NdisObjectType.offload, revision, size & 0xff, size >> 8);
    const input = new Uint8Array(size);
    input.set(header);
    const caps = await this.mustQuery(Oid.TcpOffloadHardwareCapabilities, input);
    if (caps.length < 4 || caps[0] !== NdisObjectType.offload) {
      throw new NetvscError('the host answered the offload query without an ndis_offload object');
    }
    const declared = caps[2]! | (caps[3]! << 8);
    if (declared > caps.length || declared < NDIS_OFFLOAD_SIZE_6_0) {
      throw new NetvscError(
        `the host's ndis_offload says ${declared} bytes in a ${caps.length}-byte answer`,
      );
    }
    const padded = new Uint8Array(ndisOffload.size);
    padded.set(caps.subarray(0, Math.min(declared, ndisOffload.size)));
    const hw = ndisOffload.read(padded);
    const on = noGuestOffloads();
    const params = new Uint8Array(ndisOffloadParams.size);
    const enable = OffloadParam.txRxEnabled;
    let lsoMax = 62780;
    if (wish.checksum && (hw.csum.ip4_txcsum & NDIS_TXCSUM_ALL_TCP4) === NDIS_TXCSUM_ALL_TCP4) {
      on.tcp4 = true;
      params[5] = enable;
      if (wish.lso && hw.lsov2.ip4_encap & NDIS_OFFLOAD_ENCAP_8023 && hw.lsov2.ip4_maxsz > 0) {
        on.lso4 = true;
        params[11] = OffloadParam.lsov2Enabled;
        lsoMax = Math.min(lsoMax, hw.lsov2.ip4_maxsz);
      }
      if (hw.csum.ip4_txcsum & NdisTxCsumCap.udp4 && v > NvspVersion.V4) {
        on.udp4 = true;
        params[6] = enable;
      }
    }
    if (wish.checksum && (hw.csum.ip6_txcsum & NDIS_TXCSUM_ALL_TCP6) === NDIS_TXCSUM_ALL_TCP6) {
      on.tcp6 = true;
      params[7] = enable;
      if (
        wish.lso &&
        hw.lsov2.ip6_encap & NDIS_OFFLOAD_ENCAP_8023 &&
        (hw.lsov2.ip6_opts & NDIS_LSOV2_CAP_IP6) === NDIS_LSOV2_CAP_IP6 &&
        hw.lsov2.ip6_maxsz > 0
      ) {
        on.lso6 = true;
        params[12] = OffloadParam.lsov2Enabled;
        lsoMax = Math.min(lsoMax, hw.lsov2.ip6_maxsz);
      }
      if (hw.csum.ip6_txcsum & NdisTxCsum6Cap.udp6 && v > NvspVersion.V4) {
        on.udp6 = true;
        params[8] = enable;
      }
    }
    on.lsoMaxSize = on.lso4 || on.lso6 ? lsoMax : 0;
    // RSC when the host can do it for both IP versions (rndis_netdev_set_hwcaps); the
    // parameters' rsc bytes exist only in the full object (NVSP 5 on).
    if ((wish.rsc ?? true) && v >= NvspVersion.V61 && hw.rsc[0] && hw.rsc[1]) {
      on.rsc = true;
      params[ndisOffloadParams.offsetOf('rsc_ip_v4')] = OffloadParam.rscEnabled;
      params[ndisOffloadParams.offsetOf('rsc_ip_v6')] = OffloadParam.rscEnabled;
    }
    // Up to NVSP 4 only the first 22 bytes go, and no UDP checksum offload.
    const length = v <= NvspVersion.V4 ? VERSION_4_OFFLOAD_SIZE : ndisOffloadParams.size;
    params[0] = NdisObjectType.default;
    params[1] = NDIS_OFFLOAD_PARAMETERS_REVISION_3;
    params[2] = length & 0xff;
    params[3] = length >> 8;
    const status = await this.set(Oid.TcpOffloadParameters, params.subarray(0, length));
    if (status !== RndisStatus.Success) {
      throw new NetvscError(
        `the host refused the offload parameters: status 0x${(status >>> 0).toString(16)}`,
      );
    }
    return on;
  }

  /** RSS over `channels` channels: disable, then the table (entry i: i mod channels) and key. */
  async setRss(
    channels: number,
    key: Uint8Array = DEFAULT_RSS_KEY,
    entries = 128,
  ): Promise<number[]> {
    const table = Array.from({ length: entries }, (_, i) => i % channels);
    const disabled = await this.set(Oid.GenReceiveScaleParameters, rssParameters(table, key, true));
    if (disabled !== RndisStatus.Success) return [];
    const status = await this.set(Oid.GenReceiveScaleParameters, rssParameters(table, key, false));
    return status === RndisStatus.Success ? table : [];
  }

  async setPacketFilter(filter: number): Promise<boolean> {
    const value = new Uint8Array(4);
    new DataView(value.buffer).setUint32(0, filter, true);
    return (await this.set(Oid.GenCurrentPacketFilter, value)) === RndisStatus.Success;
  }
}

/** ndis_recv_scale_param followed by the table (u32 entries) and the key (rndis_set_rss_param_msg). */
export function rssParameters(
  table: readonly number[],
  key: Uint8Array,
  disable: boolean,
): Uint8Array {
  const tableAt = ndisRecvScaleParam.size;
  const keyAt = tableAt + 4 * table.length;
  const bytes = new Uint8Array(keyAt + key.length);
  ndisRecvScaleParam.writeInto(bytes, 0, {
    hdr: { type: NdisObjectType.rssParameters, rev: 2, size: ndisRecvScaleParam.size },
    flag: disable ? NDIS_RSS_PARAM_FLAG_DISABLE_RSS : 0,
    base_cpu_number: 0,
    hashinfo:
      NdisHash.toeplitz | NdisHash.ipv4 | NdisHash.tcpIpv4 | NdisHash.ipv6 | NdisHash.tcpIpv6,
    indirect_tabsize: 4 * table.length,
    indirect_taboffset: tableAt,
    hashkey_size: key.length,
    hashkey_offset: keyAt,
    processor_masks_offset: 0,
    num_processor_masks: 0,
    processor_masks_entry_size: 0,
  });
  const view = new DataView(bytes.buffer);
  table.forEach((entry, i) => {
    view.setUint32(tableAt + 4 * i, entry, true);
  });
  bytes.set(key, keyAt);
  return bytes;
}

function u32(bytes: Uint8Array): number {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0, true);
}

/** A UTF-16LE string up to its first NUL. */
function utf16(bytes: Uint8Array): string {
  let out = '';
  for (let i = 0; i + 1 < bytes.length; i += 2) {
    const c = bytes[i]! | (bytes[i + 1]! << 8);
    if (c === 0) break;
    out += String.fromCharCode(c);
  }
  return out;
}
