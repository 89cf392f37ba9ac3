/**
 * The guest part of the NIC kind: the netvsc driver for every NIC the host
 * offers (configured or hot-added), each presented, once up, as a TAP in the
 * guest's namespace (network/guest-side.ts). Without root the NICs still
 * come up, with nowhere to put their frames (status says so).
 */
import { z } from 'zod';
import { NetvscDriver, type NetvscNic } from '../../devices/net/guest/netvsc.ts';
import { LINUX_NVSP_VERSION_ORDER } from '../../devices/net/protocol.ts';
import { tapUnavailable } from '../../devices/net/tap-device.ts';
import { command, count, type GuestContext, type GuestPart } from '../device-kind.ts';
import { type GuestSide, openGuestSide } from '../network/guest-side.ts';
import { canConfigureNetwork } from '../network/ip.ts';
import { formatBytes } from '../units.ts';
import {
  type NicConfig,
  nicGuestSchema,
  nicInstanceId,
  type ResolvedGuest,
  resolveGuest,
  tapName,
} from './nic-config.ts';

interface Placement {
  readonly index: number;
  /** The config said nothing about the guest side (the built-in defaults apply). */
  readonly defaulted: boolean;
  readonly guest: ResolvedGuest;
  readonly mtu: number;
  readonly offloads: boolean;
}

const expectArgs = z.object({
  instanceId: z.string().uuid(),
  index: count,
  mtu: z.number().int().min(68).max(9000).default(1500),
  offloads: z.boolean().default(true),
  guest: nicGuestSchema.default({}),
});

/** A guest NIC's place in the namespace, for `hvkit exec` and KVP. */
export interface GuestNicView {
  readonly index: number;
  readonly mac: string;
  readonly state: string;
  readonly netns: string | null;
  readonly name: string | null;
}

export async function createNicGuest(
  configs: readonly NicConfig[],
  context: GuestContext,
): Promise<GuestPart> {
  const { vmName, log } = context;
  const ids = configs.map((_, i) => nicInstanceId(vmName, i));
  const expected = new Map<string, Placement>();
  const placed = new Map<NetvscNic, Placement>();
  const sides = new Map<NetvscNic, GuestSide>();
  const problems = new Map<NetvscNic, string>();
  const withTap = canConfigureNetwork() && tapUnavailable() === undefined;
  let unplanned = 0;

  const placementFor = (instanceId: string): Placement => {
    const i = ids.indexOf(instanceId);
    if (i >= 0) {
      const config = configs[i]!;
      return {
        index: i,
        defaulted: config.guest === undefined && config.host === undefined,
        guest: resolveGuest(config, vmName, i),
        mtu: config.mtu,
        offloads: config.offloads,
      };
    }
    const hot = expected.get(instanceId);
    if (hot) return hot;
    // A NIC nobody announced: the next free eth, no address.
    const index = configs.length + 100 + unplanned++;
    return {
      index,
      defaulted: true,
      guest: resolveGuest(undefined, vmName, index),
      mtu: 1500,
      offloads: true,
    };
  };

  const driver = new NetvscDriver((device) => {
    const placement = placementFor(device.offer.instanceId);
    const config = configs[placement.index];
    return {
      versionOrder: config?.guest_versions ?? LINUX_NVSP_VERSION_ORDER,
      mtu: placement.mtu,
      offloads: { checksum: placement.offloads, lso: placement.offloads },
      receiveBufferBytes: config?.receive_buffer ?? 16 * 1024 * 1024,
      sendBufferBytes: config?.send_buffer ?? 1024 * 1024,
      ...(config ? { channels: config.channels } : {}),
      log,
      onUp: async (nic) => {
        if (!withTap) {
          placed.set(nic, placement);
          problems.set(nic, 'no guest TAP (needs root and the native addon): frames go nowhere');
          log(`netvsc: nic${placement.index} is up without a guest TAP (needs root)`);
          return;
        }
        const { guest } = placement;
        const open = openGuestSide({
          vmName,
          netns: guest.netns,
          name: guest.name,
          tapName: tapName(vmName, 'g', placement.index),
          mac: nic.macString,
          mtu: nic.mtu,
          gsoMaxSize: nic.offloads.lsoMaxSize,
          log,
          ...(guest.address ? { address: guest.address } : {}),
          ...(guest.gateway ? { gateway: guest.gateway } : {}),
        });
        let side: GuestSide;
        try {
          side = await open;
        } catch (error) {
          // The default VM's NIC gives way when another VM of its name holds the namespace.
          if (!placement.defaulted) throw error;
          placed.set(nic, placement);
          problems.set(nic, (error as Error).message);
          log(`netvsc: nic${placement.index}: ${(error as Error).message}; no guest TAP`);
          return;
        }
        sides.set(nic, side);
        placed.set(nic, placement);
        nic.attachPort(side.port);
        context.network.add({ mac: nic.macString, name: guest.name, netns: guest.netns });
        await context.network.refresh();
        log(
          `netvsc: nic${placement.index} is ${guest.name} in namespace ${guest.netns}${guest.address ? ` at ${guest.address}` : ''}`,
        );
      },
      onDown: async (nic) => {
        context.network.remove(nic.macString);
        const side = sides.get(nic);
        sides.delete(nic);
        placed.delete(nic);
        problems.delete(nic);
        await side?.close().catch((error: Error) => log(`netvsc: ${error.message}`));
      },
    };
  });
  context.client.registerDriver(driver);
  // Addresses change (KVP's SET_IP_INFO, or someone with `hvkit exec ip addr`): read them again now and then.
  const refresher = setInterval(() => {
    if (sides.size > 0) void context.network.refresh();
  }, 2000);
  refresher.unref();

  const views = (): GuestNicView[] =>
    [...driver.nics.values()].map((nic) => {
      const side = sides.get(nic);
      // 'ready' once its guest side is in place too.
      const where = placed.get(nic);
      return {
        index: where?.index ?? -1,
        mac: nic.macString,
        state: nic.state === 'ready' && !where ? 'starting' : nic.state,
        netns: side?.netns ?? null,
        name: side?.name ?? null,
      };
    });

  return {
    commands: {
      'nic-expect': command(expectArgs, (args) => {
        const guest = resolveGuest({ guest: args.guest }, vmName, args.index);
        expected.set(args.instanceId, {
          index: args.index,
          defaulted: false,
          guest,
          mtu: args.mtu,
          offloads: args.offloads,
        });
        return { index: args.index, netns: guest.netns, name: guest.name };
      }),
      'nic-guest-sides': () => views(),
    },
    status: () => {
      const nics = [...driver.nics.values()].map((nic) => {
        const side = sides.get(nic);
        const index = placed.get(nic)?.index ?? -1;
        return {
          nic: index,
          netns: side?.netns ?? null,
          name: side?.name ?? null,
          problem: problems.get(nic) ?? null,
          ...nic.describe(),
          channelCounters: nic.channelCounters(),
        };
      });
      const failures = [...driver.failures.entries()].map(([instanceId, error]) => ({
        instanceId,
        error,
      }));
      const text = nics
        .map((n) => {
          const where = n.name ? `${n.name} in ${n.netns}` : 'no guest TAP';
          return (
            `nic${n.nic} ${where} NVSP ${n.nvsp}/NDIS ${n.ndis} ${n.channels}ch: ` +
            `tx ${n.txFrames} (${formatBytes(n.txBytes)}), rx ${n.rxFrames} (${formatBytes(n.rxBytes)}); ${n.mac}`
          );
        })
        .concat(failures.map((f) => `probe failed: ${f.error}`))
        .join('; ');
      return { type: 'netvsc', summary: `netvsc: ${text || 'no NICs'}`, nics, failures };
    },
    stop: async () => {
      clearInterval(refresher);
    },
  };
}
