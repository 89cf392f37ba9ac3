/**
 * The synthetic NIC as a VM device kind. Each `type: nic` entry is one NIC:
 * the host offers a netvsp whose frames go to a TAP device (or the
 * loopback), the guest's netvsc binds to it and presents it as eth0 in the
 * VM's namespace. NICs can be added and removed while the VM runs (control
 * commands nic-attach / nic-detach; `hvkit nic attach|detach`).
 *
 * ```yaml
 * devices:
 *   - type: nic
 *     mac: "00:15:5d:00:00:01"     # default: from the VM name and index
 *     channels: 2                  # primary + sub-channels (vRSS)
 *     mtu: 1500
 *     host: { tap: hvk0, bridge: hvbr0, netns: hostside, address: 192.0.2.1/24 }
 *     guest: { netns: demo, address: 192.0.2.2/24, gateway: 192.0.2.1 }
 *     capture: nic0.pcapng         # optional
 * ```
 */
import { z } from 'zod';
import { command, count, type DeviceKind } from '../device-kind.ts';
import { type NicConfig, nicHostSchema, nicInstanceId, nicSchema } from './nic-config.ts';
import { createNicGuest } from './nic-guest.ts';
import { createNicHost, type NicHostPart } from './nic-host.ts';

const attachArgs = z.object({
  instanceId: z.string().uuid(),
  mac: z.string().optional(),
  channels: z.number().int().min(1).max(64).default(2),
  mtu: z.number().int().min(68).max(9000).default(1500),
  host: nicHostSchema.optional(),
  capture: z.string().min(1).optional(),
});

const detachArgs = z.object({ nic: count });

/** How long a detach waits for the guest to close the NIC's channels. */
const DETACH_WAIT_MS = 10_000;

const hostCommands: NonNullable<DeviceKind<NicConfig, NicHostPart>['hostCommands']> = (
  context,
  configured,
) => {
  const live: NicHostPart[] = [...configured];
  const describe = (p: NicHostPart) => ({
    nic: p.index,
    mac: p.mac,
    instanceId: p.vsp.offer.instanceId,
  });
  return {
    'nic-list': () => live.map(describe),
    /** The next free NIC index (hot add asks first, so the guest can be told where the NIC goes). */
    'nic-next': () => ({ nic: live.reduce((n, p) => Math.max(n, p.index + 1), 0) }),
    'nic-attach': command(attachArgs, async (args) => {
      const index = live.reduce((n, p) => Math.max(n, p.index + 1), 0);
      const parsed = nicSchema.safeParse({
        type: 'nic',
        channels: args.channels,
        mtu: args.mtu,
        host: args.host ?? {},
        ...(args.mac ? { mac: args.mac } : {}),
        ...(args.capture ? { capture: args.capture } : {}),
      });
      if (!parsed.success)
        throw new Error(
          parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '),
        );
      const part = await createNicHost(parsed.data, context, index, args.instanceId);
      live.push(part);
      context.adopt(part);
      context.bus.addDevice(part.vsp);
      return describe(part);
    }),
    'nic-detach': command(detachArgs, async (args) => {
      const part = live.find((p) => p.index === args.nic);
      if (!part) {
        throw new Error(
          live.length === 0
            ? 'this VM has no NIC'
            : `no nic${args.nic}; this VM has ${live.map((p) => `nic${p.index}`).join(', ')}`,
        );
      }
      const id = context.bus.deviceIdOf(part.vsp);
      if (id !== undefined) context.bus.removeDevice(id);
      // The guest closes the rescinded channels; the backend goes after that.
      const deadline = Date.now() + DETACH_WAIT_MS;
      while (part.vsp.openChannels > 0 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      const waited = part.vsp.openChannels === 0;
      live.splice(live.indexOf(part), 1);
      await part.close();
      context.release(part);
      context.log(
        `nic${part.index}: detached${waited ? '' : ' (the guest did not close its channels in time)'}`,
      );
      return { ...describe(part), guestClosed: waited };
    }),
  };
};

export const nicKind: DeviceKind<NicConfig, NicHostPart> = {
  type: 'nic',
  schema: nicSchema,
  hotPluggable: true,
  createHost: (config, context, index) =>
    createNicHost(config, context, index, nicInstanceId(context.vmName, index)),
  hostCommands,
  createGuest: (configs, context) => createNicGuest(configs, context),
};
