import { randomUUID } from 'node:crypto';
import { resolve } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { callVm, socketFor, type TargetOptions, targetOptions, withVm } from './control-client.ts';

/**
 * `hvkit nic attach|detach|list`: hot-add and hot-remove NICs on a running
 * VM. Attach tells the guest where the new NIC goes (its namespace, name and
 * address), has the host offer it, and waits until the guest's interface is
 * up; detach rescinds it and waits until the guest let go.
 */

function integer(min: number, max: number, what: string) {
  return (text: string): number => {
    const n = Number(text);
    if (!/^\d+$/.test(text) || n < min || n > max)
      throw new InvalidArgumentError(`${what} is an integer ${min}..${max}`);
    return n;
  };
}

interface GuestNicView {
  index: number;
  mac: string;
  state: string;
  netns: string | null;
  name: string | null;
}

async function waitFor(
  socket: string,
  done: (views: GuestNicView[]) => boolean,
  timeoutMs: number,
) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const views = (await callVm(socket, 'nic-guest-sides')) as GuestNicView[];
    if (done(views)) return views;
    if (Date.now() > deadline) return undefined;
    await new Promise((r) => setTimeout(r, 100));
  }
}

interface AttachOptions extends TargetOptions {
  mac?: string;
  channels: number;
  mtu: number;
  tap?: string;
  bridge?: string;
  hostNetns?: string;
  hostAddress?: string;
  loopback?: boolean;
  netns?: string;
  name?: string;
  address?: string;
  gateway?: string;
  capture?: string;
  timeout: number;
}

function attachCommand(): Command {
  const command = new Command('attach')
    .description('add a NIC to a running VM')
    .option('--mac <mac>', 'MAC address (default: from the VM name and NIC index)')
    .option('--channels <n>', 'channels: primary plus sub-channels', integer(1, 64, 'channels'), 2)
    .option('--mtu <n>', 'MTU', integer(68, 9000, 'the MTU'), 1500)
    .option('--tap <name>', 'host-side TAP name')
    .option('--bridge <name>', 'join the host-side TAP to this bridge (created when missing)')
    .option('--host-netns <name>', 'namespace of the host-side TAP (created when missing)')
    .option('--host-address <cidr>', 'address of the host side (on the bridge, else the TAP)')
    .option('--loopback', 'a loopback backend instead of a TAP')
    .option('--netns <name>', "the guest's namespace (default: named after the VM)")
    .option('--name <ifname>', "the guest interface's name (default: eth<N>)")
    .option('--address <cidr>', "the guest interface's address")
    .option('--gateway <ip>', "the guest's default gateway")
    .option('--capture <file>', 'write a pcapng capture of the NIC')
    .option(
      '--timeout <seconds>',
      'how long to wait for the guest',
      integer(1, 3600, 'the timeout'),
      30,
    );
  for (const option of targetOptions()) command.addOption(option);
  return command.action((options: AttachOptions) =>
    withVm(async () => {
      const socket = socketFor(options);
      const instanceId = randomUUID();
      const { nic } = (await callVm(socket, 'nic-next')) as { nic: number };
      const guest = {
        ...(options.netns ? { netns: options.netns } : {}),
        ...(options.name ? { name: options.name } : {}),
        ...(options.address ? { address: options.address } : {}),
        ...(options.gateway ? { gateway: options.gateway } : {}),
      };
      await callVm(socket, 'nic-expect', { instanceId, index: nic, mtu: options.mtu, guest });
      const host = options.loopback
        ? { backend: 'loopback' }
        : {
            ...(options.tap ? { tap: options.tap } : {}),
            ...(options.bridge ? { bridge: options.bridge } : {}),
            ...(options.hostNetns ? { netns: options.hostNetns } : {}),
            ...(options.hostAddress ? { address: options.hostAddress } : {}),
          };
      const attached = (await callVm(socket, 'nic-attach', {
        instanceId,
        channels: options.channels,
        mtu: options.mtu,
        host,
        ...(options.mac ? { mac: options.mac } : {}),
        ...(options.capture ? { capture: resolve(options.capture) } : {}),
      })) as { nic: number; mac: string };
      const views = await waitFor(
        socket,
        (v) => v.some((n) => n.index === attached.nic && n.state === 'ready'),
        options.timeout * 1000,
      );
      const mine = views?.find((n) => n.index === attached.nic);
      if (!mine)
        throw new Error(
          `nic${attached.nic} (${attached.mac}) was offered, but the guest did not bring it up in ${options.timeout}s`,
        );
      console.log(
        `nic${mine.index} ${mine.mac} attached` +
          (mine.name ? `: ${mine.name} in namespace ${mine.netns}` : ' (no guest TAP)'),
      );
    }),
  );
}

interface DetachOptions extends TargetOptions {
  timeout: number;
}

function detachCommand(): Command {
  const command = new Command('detach')
    .description('remove a NIC from a running VM')
    .argument('<nic>', 'the NIC index (see hvkit nic list)', integer(0, 1023, 'a NIC'))
    .option(
      '--timeout <seconds>',
      'how long to wait for the guest',
      integer(1, 3600, 'the timeout'),
      30,
    );
  for (const option of targetOptions()) command.addOption(option);
  return command.action((nic: number, options: DetachOptions) =>
    withVm(async () => {
      const socket = socketFor(options);
      const result = (await callVm(socket, 'nic-detach', { nic })) as {
        mac: string;
        guestClosed: boolean;
      };
      const gone = await waitFor(
        socket,
        (v) => !v.some((n) => n.index === nic),
        options.timeout * 1000,
      );
      if (!gone)
        throw new Error(
          `nic${nic} was rescinded, but the guest still has it after ${options.timeout}s`,
        );
      console.log(`nic${nic} ${result.mac} detached`);
    }),
  );
}

function listCommand(): Command {
  const command = new Command('list').description("list a running VM's NICs, host and guest side");
  for (const option of targetOptions()) command.addOption(option);
  return command.action((options: TargetOptions) =>
    withVm(async () => {
      const socket = socketFor(options);
      const host = (await callVm(socket, 'nic-list')) as { nic: number; mac: string }[];
      const guest = (await callVm(socket, 'nic-guest-sides')) as GuestNicView[];
      if (host.length === 0) console.log('no NICs');
      for (const h of host) {
        const g = guest.find((v) => v.index === h.nic);
        const where = g?.name
          ? `${g.name} in namespace ${g.netns}`
          : g
            ? 'no guest TAP'
            : 'not bound in the guest';
        console.log(`nic${h.nic} ${h.mac} ${g?.state ?? '-'} ${where}`);
      }
    }),
  );
}

export function nicCommand(): Command {
  return new Command('nic')
    .description('add, remove and list the NICs of a running VM')
    .addCommand(attachCommand())
    .addCommand(detachCommand())
    .addCommand(listCommand());
}
