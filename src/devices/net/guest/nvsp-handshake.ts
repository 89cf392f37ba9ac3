/**
 * The guest's NVSP handshake on the primary channel, in Linux's order
 * (netvsc.c: netvsc_connect_vsp, negotiate_nvsp_ver, netvsc_init_buf):
 * INIT with min = max for each version of the order until the host accepts
 * one; from NVSP 2 on NDIS_CONFIG (the MTU plus the Ethernet header, and the
 * capability bits), then NDIS_VERSION, neither answered; then the receive
 * buffer's GPADL (id 0xCAFE) and the send buffer's (id 0), each answered
 * with the layout the host chose, which is checked as Linux checks it before
 * any of it is used.
 */
import { NvspReader, nvspMessage } from '../nvsp-message.ts';
import {
  NETVSC_MTU_MIN,
  NETVSC_RECEIVE_BUFFER_ID,
  NETVSC_SEND_BUFFER_ID,
  NvspMessageType,
  NvspStatus,
  NvspVersion,
  ndisVersionFor,
  nvspTypeName,
  nvspVersionString,
  VscCapability,
} from '../protocol.ts';
import type { NetvscChannel } from './netvsc-channel.ts';

/** One step of the handshake as the guest took it (for tests and status). */
export interface InitStep {
  readonly step: string;
  readonly status?: number;
  readonly value?: number;
}

export class NetvscError extends Error {
  override readonly name = 'NetvscError';
}

const reader = new NvspReader();

function expectType(answer: Uint8Array, type: NvspMessageType): void {
  if (!reader.load(answer) || reader.type !== type) {
    throw new NetvscError(
      `the host answered with NVSP ${reader.type < 0 ? `${answer.length} bytes` : nvspTypeName(reader.type)}, not ${nvspTypeName(type)}`,
    );
  }
}

/** INIT for each version in turn; resolves with the one the host accepted. */
export async function negotiateVersion(
  primary: NetvscChannel,
  order: readonly number[],
  timeoutMs: number,
  steps: InitStep[],
): Promise<number> {
  let lastStatus: number = NvspStatus.None;
  for (const version of order) {
    const answer = await primary.request(
      nvspMessage(NvspMessageType.Init, version, version),
      timeoutMs,
    );
    expectType(answer, NvspMessageType.InitComplete);
    // nvsp_message_init_complete: negotiated_protocol_ver, max_mdl_chain_len, status.
    const status = reader.has(12) ? reader.u32(8) : NvspStatus.Failure;
    steps.push({ step: 'INIT', status, value: version });
    lastStatus = status;
    if (status === NvspStatus.Success) return version;
  }
  throw new NetvscError(
    `the host refused every NVSP version offered (${order.map(nvspVersionString).join(', ')}); last status ${lastStatus}`,
  );
}

/** NDIS_CONFIG (from NVSP 2) and NDIS_VERSION; returns the NDIS version sent. */
export function sendNdisSettings(
  primary: NetvscChannel,
  version: number,
  mtu: number,
  steps: InitStep[],
  coalesce = true,
): number {
  if (version >= NvspVersion.V2) {
    let capability = VscCapability.ieee8021q;
    // The teaming bit makes the host send link-speed changes (NVSP 5).
    if (version >= NvspVersion.V5) capability |= VscCapability.teaming;
    // Received TCP segments coalesced by the host (RSC), from NVSP 6.1.
    if (version >= NvspVersion.V61 && coalesce) capability |= VscCapability.rsc;
    const lo = Number(capability & 0xffff_ffffn);
    const hi = Number(capability >> 32n);
    primary.post(nvspMessage(NvspMessageType.SendNdisConfig, mtu + 14, 0, lo, hi));
    steps.push({ step: 'NDIS_CONFIG', value: mtu + 14 });
  }
  const ndis = ndisVersionFor(version);
  primary.post(nvspMessage(NvspMessageType.SendNdisVersion, ndis >>> 16, ndis & 0xffff));
  steps.push({ step: 'NDIS_VERSION', value: ndis });
  return ndis;
}

export interface ReceiveLayout {
  readonly sectionSize: number;
  readonly sectionCount: number;
}

/** SEND_RECV_BUF: the host's one section, checked to fit the buffer. */
export async function postReceiveBuffer(
  primary: NetvscChannel,
  gpadl: number,
  bufferBytes: number,
  timeoutMs: number,
  steps: InitStep[],
): Promise<ReceiveLayout> {
  const answer = await primary.request(
    nvspMessage(NvspMessageType.SendReceiveBuffer, gpadl, NETVSC_RECEIVE_BUFFER_ID),
    timeoutMs,
  );
  expectType(answer, NvspMessageType.SendReceiveBufferComplete);
  const status = reader.has(4) ? reader.u32(0) : NvspStatus.Failure;
  steps.push({ step: 'SEND_RECV_BUF', status });
  if (status !== NvspStatus.Success) {
    throw new NetvscError(`the host refused the receive buffer: status ${status}`);
  }
  if (!reader.has(24)) throw new NetvscError('the receive buffer completion has no section');
  const sections = reader.u32(4);
  const offset = reader.u32(8);
  const sectionSize = reader.u32(12);
  const sectionCount = reader.u32(16);
  if (sections !== 1 || offset !== 0) {
    throw new NetvscError(
      `the host described ${sections} receive sections at offset ${offset}, not one at 0`,
    );
  }
  if (
    sectionSize < NETVSC_MTU_MIN ||
    sectionSize * sectionCount > bufferBytes ||
    sectionCount < 1
  ) {
    throw new NetvscError(
      `receive sections of ${sectionSize} bytes x ${sectionCount} do not fit the ${bufferBytes}-byte buffer`,
    );
  }
  return { sectionSize, sectionCount };
}

/** SEND_SEND_BUF: the section size the host will read frames from. */
export async function postSendBuffer(
  primary: NetvscChannel,
  gpadl: number,
  bufferBytes: number,
  timeoutMs: number,
  steps: InitStep[],
): Promise<number> {
  const answer = await primary.request(
    nvspMessage(NvspMessageType.SendSendBuffer, gpadl, NETVSC_SEND_BUFFER_ID),
    timeoutMs,
  );
  expectType(answer, NvspMessageType.SendSendBufferComplete);
  const status = reader.has(4) ? reader.u32(0) : NvspStatus.Failure;
  steps.push({ step: 'SEND_SEND_BUF', status });
  if (status !== NvspStatus.Success) {
    throw new NetvscError(`the host refused the send buffer: status ${status}`);
  }
  const sectionSize = reader.has(8) ? reader.u32(4) : 0;
  if (sectionSize < NETVSC_MTU_MIN || sectionSize > bufferBytes) {
    throw new NetvscError(`a send section of ${sectionSize} bytes does not fit the buffer`);
  }
  return sectionSize;
}

/** SUBCHANNEL ALLOCATE: how many the host granted (never more than asked). */
export async function allocateSubchannels(
  primary: NetvscChannel,
  wanted: number,
  timeoutMs: number,
  steps: InitStep[],
): Promise<number> {
  const answer = await primary.request(
    nvspMessage(NvspMessageType.Subchannel, 1, wanted),
    timeoutMs,
  );
  expectType(answer, NvspMessageType.Subchannel);
  const status = reader.has(4) ? reader.u32(0) : NvspStatus.Failure;
  const granted = reader.has(8) ? reader.u32(4) : 0;
  steps.push({ step: 'SUBCHANNEL', status, value: granted });
  if (status !== NvspStatus.Success) return 0;
  return Math.min(granted, wanted);
}
