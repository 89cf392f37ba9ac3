/**
 * The status a running VM reports: what each side knows of the bus and its
 * channels. Plain data (it crosses worker boundaries and the control socket).
 */
import { deviceClassName, versionString } from '../vmbus/protocol.ts';

export interface ChannelCounters {
  packetsSent: number;
  bytesSent: number;
  packetsReceived: number;
  bytesReceived: number;
  signalsSent: number;
  signalsSuppressed: number;
  interrupts: number;
  ringFull: number;
  badPackets: number;
}

export interface ChannelView {
  relid: number;
  classId: string;
  subchannelIndex: number;
  state: string;
  outboundUsed?: number;
  outboundSize?: number;
  inboundUsed?: number;
  inboundSize?: number;
  counters?: ChannelCounters;
  error?: string;
  driver?: string;
}

export interface HostStatus {
  version: number;
  state: string;
  messagesIn: number;
  messagesOut: number;
  dropped: number;
  lastDropReasons: string[];
  channels: ChannelView[];
  hypervisor: { posts: number; postsRefused: number; signals: number };
  devices: Record<string, unknown>[];
}

export interface GuestStatus {
  version: number;
  messageConnectionId: number;
  messagesIn: number;
  messagesOut: number;
  dropped: number;
  interrupts: number;
  channels: ChannelView[];
  devices: Record<string, unknown>[];
}

export interface VmStatus {
  name: string;
  uptimeMs: number;
  vcpus: number;
  memoryBytes: number;
  host: HostStatus;
  guest: GuestStatus;
}

/** A channel as a side reports it: its identity plus, when open, rings and counters. */
export function channelView(
  base: { relid: number; classId: string; subchannelIndex: number; state: string },
  open: {
    occupancy?: {
      outboundUsed: number;
      outboundSize: number;
      inboundUsed: number;
      inboundSize: number;
    };
    stats?: ChannelCounters;
    error?: string;
    driver?: string;
  },
): ChannelView {
  return {
    ...base,
    ...(open.occupancy ? { ...open.occupancy } : {}),
    ...(open.stats ? { counters: { ...open.stats } } : {}),
    ...(open.error ? { error: open.error } : {}),
    ...(open.driver ? { driver: open.driver } : {}),
  };
}

function human(bytes: number): string {
  if (bytes >= 1024 ** 3) return `${(bytes / 1024 ** 3).toFixed(1)}G`;
  if (bytes >= 1024 ** 2) return `${(bytes / 1024 ** 2).toFixed(1)}M`;
  if (bytes >= 1024) return `${(bytes / 1024).toFixed(1)}K`;
  return `${bytes}`;
}

/**
 * One line for a device's status: its `summary` when it gives one, else its
 * scalar fields as key=value.
 */
function describeDevice(device: Record<string, unknown>): string {
  if (typeof device.summary === 'string') return device.summary;
  const type = typeof device.type === 'string' ? device.type : 'device';
  const fields = Object.entries(device)
    .filter(
      ([k, v]) =>
        k !== 'type' && (typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean'),
    )
    .map(([k, v]) => `${k}=${v}`);
  return `${type}: ${fields.join(' ')}`;
}

/** Renders the status as the table `hvkit run` shows. */
export function formatStatus(status: VmStatus): string {
  const { host, guest } = status;
  const lines: string[] = [];
  const version = guest.version ? versionString(guest.version) : 'not connected';
  lines.push(
    `${status.name}: up ${(status.uptimeMs / 1000).toFixed(1)}s, ${status.vcpus} vCPU, ${human(status.memoryBytes)} memory`,
  );
  lines.push(
    `VMBus ${version}` +
      (guest.version ? ` (messages on connection id ${guest.messageConnectionId})` : '') +
      `; host: ${host.state}, ${host.messagesIn} messages in, ${host.messagesOut} out, ${host.dropped} dropped;` +
      ` hypervisor: ${host.hypervisor.posts} posts, ${host.hypervisor.signals} guest signals`,
  );
  lines.push(
    [
      'relid'.padEnd(6),
      'class'.padEnd(12),
      'sub'.padEnd(4),
      'state'.padEnd(8),
      'guest->host ring'.padEnd(17),
      'host->guest ring'.padEnd(17),
      'packets out/in'.padEnd(18),
      'bytes out/in'.padEnd(16),
      'signals sent/suppressed',
    ].join(' '),
  );
  const hostByRelid = new Map(host.channels.map((c) => [c.relid, c]));
  for (const c of guest.channels) {
    const h = hostByRelid.get(c.relid);
    const ring = (used?: number, size?: number): string =>
      used === undefined || size === undefined ? '-' : `${human(used)}/${human(size)}`;
    const k = c.counters;
    const hk = h?.counters;
    lines.push(
      [
        String(c.relid).padEnd(6),
        (deviceClassName(c.classId) ?? c.classId.slice(0, 8)).padEnd(12),
        String(c.subchannelIndex).padEnd(4),
        c.state.padEnd(8),
        ring(c.outboundUsed, c.outboundSize).padEnd(17),
        ring(c.inboundUsed, c.inboundSize).padEnd(17),
        (k ? `${k.packetsSent}/${k.packetsReceived}` : '-').padEnd(18),
        (k ? `${human(k.bytesSent)}/${human(k.bytesReceived)}` : '-').padEnd(16),
        k
          ? `guest ${k.signalsSent}/${k.signalsSuppressed}, host ${hk ? `${hk.signalsSent}/${hk.signalsSuppressed}` : '-'}`
          : '-',
      ].join(' ') + (c.error ? `  ERROR ${c.error}` : ''),
    );
  }
  if (guest.channels.length === 0) lines.push('(no channels offered)');
  for (const [side, devices] of [
    ['host', host.devices],
    ['guest', guest.devices],
  ] as const) {
    for (const device of devices) lines.push(`${side} ${describeDevice(device)}`);
  }
  for (const reason of host.lastDropReasons.slice(-3)) lines.push(`host dropped: ${reason}`);
  return lines.join('\n');
}
