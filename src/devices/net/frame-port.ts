/**
 * A frame port: where one side of a NIC meets the world outside the bus.
 * On the host it is the NIC's backend (a TAP device, a loopback); in the
 * guest it is the operating system's side of its netvsc NIC (a TAP named
 * eth0 in the VM's namespace). A port moves
 * Ethernet frames; the offload facts travel beside them in the virtio-net
 * header's terms (Linux include/uapi/linux/virtio_net.h), which
 * is what a TAP opened with IFF_VNET_HDR speaks, so frames pass between the
 * TAP and RNDIS without the host touching their bytes.
 */

/** virtio_net_hdr.gso_type */
export enum GsoType {
  /** 0 */ None = 0,
  /** 1 */ TcpV4 = 1,
  /** 3 */ Udp = 3,
  /** 4 */ TcpV6 = 4,
}

/** How a frame's checksum and segmentation stand, as a virtio-net header says it. */
export interface FrameOffload {
  /** VIRTIO_NET_HDR_F_NEEDS_CSUM: the checksum from csumStart is still to be computed. */
  needsChecksum: boolean;
  /** VIRTIO_NET_HDR_F_DATA_VALID: the receiver may trust the checksums. */
  dataValid: boolean;
  csumStart: number;
  csumOffset: number;
  gsoType: GsoType;
  /** Payload bytes per segment of a large send. */
  gsoSize: number;
  /** Bytes of headers in front of the payload. */
  headerLength: number;
}

export function noOffload(): FrameOffload {
  return {
    needsChecksum: false,
    dataValid: false,
    csumStart: 0,
    csumOffset: 0,
    gsoType: GsoType.None,
    gsoSize: 0,
    headerLength: 0,
  };
}

/** What a port can take from the NIC without the NIC doing the work first. */
export interface PortOffloads {
  /** Frames whose TCP/UDP checksum is left to the port (needsChecksum). */
  readonly checksum: boolean;
  /** Large TCP sends the port segments itself (gsoType TcpV4/TcpV6). */
  readonly segmentation: boolean;
}

/** Frames from the port into the NIC: false when the NIC cannot take this one now (wait for `resume`). */
export type FrameSink = (frame: Uint8Array, offload: FrameOffload) => boolean;

export interface FramePort {
  readonly name: string;
  readonly offloads: PortOffloads;
  /** Carrier: whether the far side is there (a TAP that is up). */
  readonly link: boolean;
  /** Starts delivering frames; `onLink` hears carrier changes. */
  start(sink: FrameSink, onLink: (up: boolean) => void): void;
  /** The NIC can take frames again after the sink said no. */
  resume(): void;
  /** A frame out of the NIC (a view valid only during the call; checksums and segmentation as `offloads` allow). */
  send(frame: Uint8Array, offload: FrameOffload): void;
  /**
   * Whether the port may hand the NIC frames of up to 64 KiB (TCP GSO with a
   * partial checksum) instead of MTU-sized ones; ports that cannot leave it out.
   */
  acceptLarge?(on: boolean): void;
  /** Counters for status. */
  stats(): Record<string, number>;
  close(): Promise<void>;
}
