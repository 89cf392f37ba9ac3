/**
 * The guest's operating-system side of its NIC: a TAP device named like a
 * Linux guest's interface (eth0) inside a network namespace the VM owns —
 * as the guest's SCSI disks are presented over NBD, its NIC is presented to
 * the real Linux stack, so that ping, iperf3 and curl run as the guest's
 * programs. The TAP gets the MAC the host configured, the MTU and the
 * largest large send the NIC negotiated, and the address and gateway of the
 * config.
 */
import { TapDevice } from '../../devices/net/tap-device.ts';
import {
  addAddress,
  addDefaultRoute,
  addNetns,
  configureLink,
  linkExists,
  moveLink,
  netnsExists,
} from './ip.ts';
import { type OwnedResource, releaseOwned, useShared } from './owned.ts';

export interface GuestSideSpec {
  readonly vmName: string;
  readonly netns: string;
  /** The interface's name inside the namespace (eth0). */
  readonly name: string;
  /** A unique name for the TAP while it is created outside the namespace. */
  readonly tapName: string;
  readonly mac: string;
  readonly mtu: number;
  /** The NIC's LSO limit (0: no large sends). */
  readonly gsoMaxSize: number;
  readonly address?: string;
  readonly gateway?: string;
  readonly log: (message: string) => void;
}

export interface GuestSide {
  readonly port: TapDevice;
  readonly netns: string;
  readonly name: string;
  close(): Promise<void>;
}

export async function openGuestSide(spec: GuestSideSpec): Promise<GuestSide> {
  const owned: OwnedResource[] = [];
  let tap: TapDevice | undefined;
  try {
    const used = await useShared(
      spec.vmName,
      { kind: 'netns', name: spec.netns },
      () => netnsExists(spec.netns),
      () => addNetns(spec.netns),
    );
    if (used) owned.push(used);
    if (await linkExists(spec.name, spec.netns)) {
      throw new Error(`namespace ${spec.netns} already has a link named ${spec.name}`);
    }
    // The guest's stack may hand over partial checksums and TCP sends of up to 64 KiB:
    // the NIC delegates them to the host (or does them itself).
    tap = new TapDevice({
      name: spec.tapName,
      accept: { checksum: true, segmentation: spec.gsoMaxSize > 0 },
      log: spec.log,
    });
    await moveLink(tap.name, spec.netns);
    await configureLink(
      tap.name,
      {
        rename: spec.name,
        mac: spec.mac,
        mtu: spec.mtu,
        ...(spec.gsoMaxSize > 0 ? { gsoMaxSize: spec.gsoMaxSize } : {}),
      },
      spec.netns,
    );
    if (spec.address) await addAddress(spec.name, spec.address, spec.netns);
    if (spec.gateway) await addDefaultRoute(spec.gateway, spec.netns);
  } catch (error) {
    await tap?.close().catch(() => {});
    await releaseOwned(spec.vmName, owned, spec.log);
    throw new Error(
      `guest side of the NIC (${spec.name} in ${spec.netns}): ${(error as Error).message}`,
    );
  }
  const opened = tap;
  return {
    port: opened,
    netns: spec.netns,
    name: spec.name,
    async close() {
      await opened.close();
      await releaseOwned(spec.vmName, owned, spec.log);
    },
  };
}
