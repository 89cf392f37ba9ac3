/**
 * The host side of a VM's NIC: a TAP device, in a namespace of its own when
 * asked (created when missing), joined to a Linux bridge when asked
 * (created when missing, as Hyper-V creates an internal switch, and how
 * libvirt and QEMU join several VMs), with an address on the bridge or the
 * TAP when asked. What this creates is recorded (owned.ts) and removed when
 * the NIC closes, unless another VM still uses it.
 */
import type { FramePort } from '../../devices/net/frame-port.ts';
import { TapDevice } from '../../devices/net/tap-device.ts';
import {
  addAddress,
  addBridge,
  addNetns,
  configureLink,
  linkExists,
  moveLink,
  netnsExists,
} from './ip.ts';
import { type OwnedResource, releaseOwned, useShared } from './owned.ts';

export interface HostSideSpec {
  readonly vmName: string;
  readonly tap: string;
  readonly netns?: string;
  readonly bridge?: string;
  /** CIDR for the bridge (when there is one) or the TAP. */
  readonly address?: string;
  readonly mtu: number;
  readonly log: (message: string) => void;
}

export interface HostSide {
  readonly port: FramePort;
  readonly description: string;
  close(): Promise<void>;
}

export async function openHostSide(spec: HostSideSpec): Promise<HostSide> {
  const owned: OwnedResource[] = [];
  let tap: TapDevice | undefined;
  try {
    const { netns, bridge } = spec;
    if (netns) {
      const used = await useShared(
        spec.vmName,
        { kind: 'netns', name: netns },
        () => netnsExists(netns),
        () => addNetns(netns),
      );
      if (used) owned.push(used);
    }
    if (bridge) {
      const used = await useShared(
        spec.vmName,
        { kind: 'bridge', name: bridge, ...(netns ? { netns } : {}) },
        () => linkExists(bridge, netns),
        () => addBridge(bridge, netns),
      );
      if (used) owned.push(used);
    }
    if (await linkExists(spec.tap, spec.netns)) {
      throw new Error(
        `a link named ${spec.tap} already exists${spec.netns ? ` in ${spec.netns}` : ''}`,
      );
    }
    // The kernel segments and sums what it hands this TAP (frames for the guest stay within
    // the MTU); frames from the guest go in with their offloads for the kernel to finish.
    tap = new TapDevice({
      name: spec.tap,
      accept: { checksum: false, segmentation: false },
      log: spec.log,
    });
    if (spec.netns) await moveLink(tap.name, spec.netns);
    await configureLink(
      tap.name,
      { mtu: spec.mtu, ...(spec.bridge ? { master: spec.bridge } : {}) },
      spec.netns,
    );
    if (spec.address) await addAddress(spec.bridge ?? tap.name, spec.address, spec.netns);
  } catch (error) {
    await tap?.close().catch(() => {});
    await releaseOwned(spec.vmName, owned, spec.log);
    throw new Error(`host side of the NIC (TAP ${spec.tap}): ${(error as Error).message}`);
  }
  const where = [
    `TAP ${tap.name}`,
    spec.bridge ? `on bridge ${spec.bridge}` : '',
    spec.netns ? `in namespace ${spec.netns}` : '',
    spec.address ? `at ${spec.address}` : '',
  ]
    .filter(Boolean)
    .join(' ');
  const opened = tap;
  return {
    port: opened,
    description: where,
    async close() {
      await opened.close();
      const { removed, kept } = await releaseOwned(spec.vmName, owned, spec.log);
      if (removed.length > 0) spec.log(`network: removed ${removed.join(', ')}`);
      if (kept.length > 0) spec.log(`network: left ${kept.join(', ')} in use`);
    },
  };
}
