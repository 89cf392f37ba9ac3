/**
 * The host part of one NIC: its netvsp, the backend its frames go to (a TAP
 * device through network/host-side.ts, or the loopback), and its capture.
 */
import { resolve } from 'node:path';
import type { FramePort } from '../../devices/net/frame-port.ts';
import { LoopbackBackend } from '../../devices/net/host/loopback-backend.ts';
import { NetvspDevice } from '../../devices/net/host/netvsp.ts';
import { PcapngWriter } from '../../devices/net/pcapng.ts';
import { nvspVersionString } from '../../devices/net/protocol.ts';
import { tapUnavailable } from '../../devices/net/tap-device.ts';
import type { HostContext, HostPart } from '../device-kind.ts';
import { openHostSide } from '../network/host-side.ts';
import { canConfigureNetwork } from '../network/ip.ts';
import { formatBytes } from '../units.ts';
import { defaultMac, type NicConfig, resolveHost } from './nic-config.ts';

export interface NicHostPart extends HostPart {
  readonly index: number;
  readonly vsp: NetvspDevice;
  readonly mac: string;
}

function macBytes(mac: string): Uint8Array {
  return Uint8Array.from(mac.split(':').map((b) => Number.parseInt(b, 16)));
}

export async function createNicHost(
  config: NicConfig,
  context: HostContext,
  index: number,
  instanceId: string,
): Promise<NicHostPart> {
  const root = canConfigureNetwork();
  const host = resolveHost(config, context.vmName, index, root);
  const mac = config.mac ?? defaultMac(context.vmName, index);
  let backend: FramePort | undefined;
  let where = 'loopback';
  let closeBackend: () => Promise<void> = async () => {};
  let fallback = '';
  if (host.backend === 'tap') {
    if (!root) {
      throw new Error(`nic${index}: a TAP backend needs root (or set host.backend: loopback)`);
    }
    const missing = tapUnavailable();
    if (missing) throw new Error(`nic${index}: ${missing}`);
    try {
      const side = await openHostSide({
        vmName: context.vmName,
        tap: host.tap,
        mtu: config.mtu,
        log: context.log,
        ...(host.netns ? { netns: host.netns } : {}),
        ...(host.bridge ? { bridge: host.bridge } : {}),
        ...(host.address ? { address: host.address } : {}),
      });
      backend = side.port;
      where = side.description;
      closeBackend = () => side.close();
    } catch (error) {
      // A NIC that chose nothing itself (the default VM's) gives way: another VM of the
      // same name may hold its namespaces. One the config placed fails loudly.
      if (config.host !== undefined) throw error;
      fallback = (error as Error).message;
      context.log(`nic${index}: ${fallback}; using the loopback backend instead`);
    }
  }
  if (!backend) {
    const loopback = new LoopbackBackend();
    backend = loopback;
    where = fallback ? 'loopback (the TAP could not be made)' : 'loopback';
    closeBackend = () => loopback.close();
  }
  let capture: PcapngWriter | undefined;
  try {
    if (config.capture)
      capture = new PcapngWriter(resolve(context.baseDir, config.capture), `nic${index}`);
  } catch (error) {
    await closeBackend();
    throw new Error(`nic${index}: capture ${config.capture}: ${(error as Error).message}`);
  }
  const vsp = new NetvspDevice({
    instanceId,
    mac: macBytes(mac),
    mtu: config.mtu,
    channels: config.channels,
    backend,
    log: context.log,
    ...(config.versions ? { versions: config.versions } : {}),
    ...(capture ? { tap: (direction, frame) => capture.write(direction, frame) } : {}),
  });
  context.log(`nic${index}: ${mac} on ${where}`);
  const summary = (): string => {
    const c = vsp.counters;
    const d = vsp.describe();
    const version = vsp.version ? `NVSP ${nvspVersionString(vsp.version)}` : 'not connected';
    const channels = vsp.channelCounters().map((ch) => ch.guestPackets + ch.hostMessages);
    // The figures first: a live view in a narrow terminal cuts lines at the end.
    return (
      `nic${index} ${version} ${d.channels}ch [${channels.join(', ')}]: ` +
      `from guest ${c.txFrames} (${formatBytes(c.txBytes)}, ${c.txLso} LSO), ` +
      `to guest ${c.rxFrames} (${formatBytes(c.rxBytes)}), ${c.rxDropped} dropped; ${mac} ${where}` +
      (capture ? `; capture ${capture.frames} frames` : '')
    );
  };
  return {
    index,
    vsp,
    mac,
    devices: [vsp],
    status: () => ({
      type: 'nic',
      summary: summary(),
      nic: index,
      mac,
      instanceId,
      backend: where,
      ...(fallback ? { fallback } : {}),
      ...vsp.describe(),
      channelCounters: vsp.channelCounters(),
      ...(capture
        ? { capture: { path: capture.path, frames: capture.frames, error: capture.error } }
        : {}),
    }),
    close: async () => {
      await closeBackend().catch((error: Error) => context.log(`nic${index}: ${error.message}`));
      capture?.close();
    },
  };
}
