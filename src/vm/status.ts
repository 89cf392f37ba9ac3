/**
 * The status a running VM reports: what each side knows of the bus and its
 * channels. Plain data (it crosses worker boundaries and the control socket).
 */
import { deviceClassName, versionString } from '../vmbus/protocol.ts';
import type { ChannelStats } from '../vmbus/queue.ts';
import type { DeviceStatus } from './device-kind.ts';
import { formatBytes } from './units.ts';

/** A channel's counters as its end reports them (the one ChannelStats of vmbus/). */
export type ChannelCounters = ChannelStats;

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
  devices: DeviceStatus[];
}

export interface GuestStatus {
  version: number;
  messageConnectionId: number;
  messagesIn: number;
  messagesOut: number;
  dropped: number;
  interrupts: number;
  channels: ChannelView[];
  devices: DeviceStatus[];
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

/** A line cut to `width` columns (with an ellipsis), or kept whole without a width. */
function fit(line: string, width: number | undefined): string {
  if (width === undefined || line.length <= width) return line;
  return `${line.slice(0, Math.max(0, width - 1))}…`;
}

/**
 * Renders the status as the table `hvkit run` shows. With a width (a live
 * view in a terminal) every line fits it: below 132 columns the channel
 * table drops its ring and byte columns, and longer lines are cut.
 */
export function formatStatus(status: VmStatus, width?: number): string {
  return formatLines(status, width !== undefined && width < 132)
    .map((line) => fit(line, width))
    .join('\n');
}

function formatLines(status: VmStatus, compact: boolean): string[] {
  const { host, guest } = status;
  const lines: string[] = [];
  const version = guest.version ? versionString(guest.version) : 'not connected';
  lines.push(
    `${status.name}: up ${(status.uptimeMs / 1000).toFixed(1)}s, ${status.vcpus} vCPU, ${formatBytes(status.memoryBytes)} memory`,
  );
  lines.push(
    `VMBus ${version}` +
      (guest.version ? ` (messages on connection id ${guest.messageConnectionId})` : '') +
      `; host: ${host.state}, ${host.messagesIn} messages in, ${host.messagesOut} out, ${host.dropped} dropped;` +
      ` hypervisor: ${host.hypervisor.posts} posts, ${host.hypervisor.signals} guest signals`,
  );
  const columns = (cells: string[]): string =>
    // The compact table keeps relid, class, sub, state and packets.
    (compact ? [cells[0], cells[1], cells[2], cells[3], cells[6]] : cells).join(' ').trimEnd();
  lines.push(
    columns([
      'relid'.padEnd(6),
      'class'.padEnd(12),
      'sub'.padEnd(4),
      'state'.padEnd(8),
      'guest->host ring'.padEnd(17),
      'host->guest ring'.padEnd(17),
      'packets out/in'.padEnd(18),
      'bytes out/in'.padEnd(16),
      'signals sent/suppressed',
    ]),
  );
  const hostByRelid = new Map(host.channels.map((c) => [c.relid, c]));
  for (const c of guest.channels) {
    const h = hostByRelid.get(c.relid);
    const ring = (used?: number, size?: number): string =>
      used === undefined || size === undefined ? '-' : `${formatBytes(used)}/${formatBytes(size)}`;
    const k = c.counters;
    const hk = h?.counters;
    lines.push(
      columns([
        String(c.relid).padEnd(6),
        (deviceClassName(c.classId) ?? c.classId.slice(0, 8)).padEnd(12),
        String(c.subchannelIndex).padEnd(4),
        c.state.padEnd(8),
        ring(c.outboundUsed, c.outboundSize).padEnd(17),
        ring(c.inboundUsed, c.inboundSize).padEnd(17),
        (k ? `${k.packetsSent}/${k.packetsReceived}` : '-').padEnd(18),
        (k ? `${formatBytes(k.bytesSent)}/${formatBytes(k.bytesReceived)}` : '-').padEnd(16),
        k
          ? `guest ${k.signalsSent}/${k.signalsSuppressed}, host ${hk ? `${hk.signalsSent}/${hk.signalsSuppressed}` : '-'}`
          : '-',
      ]) + (c.error ? `  ERROR ${c.error}` : ''),
    );
  }
  if (guest.channels.length === 0) lines.push('(no channels offered)');
  for (const [side, devices] of [
    ['host', host.devices],
    ['guest', guest.devices],
  ] as const) {
    for (const device of devices) lines.push(`${side} ${device.summary}`);
  }
  for (const reason of host.lastDropReasons.slice(-3)) lines.push(`host dropped: ${reason}`);
  return lines;
}
