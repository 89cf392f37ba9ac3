/**
 * IC version negotiation, both ends. The host sends its framework and
 * service version lists; the guest walks its own lists newest first and
 * takes the first version the host also offers, answering in place with
 * counts 1/1 and the two versions, or counts 0/0 when nothing matches.
 *
 * The guest's answer follows Linux vmbus_prep_negotiate_resp()
 * (drivers/hv/channel_mgmt.c) byte for byte, including its quirk: when no
 * framework matches (or the counts are invalid), the version slots carry the
 * host's counts as majors with minor 0; when the framework matched but no
 * service did, slot 0 is the framework and slot 1 the host's service count.
 */

import { buildIcMessage, setMessageSize } from './framing.ts';
import {
  IC_VERSION_NEGOTIATION_MAX_VER_COUNT,
  ICMSG_HDR,
  ICMSG_NEGOTIATE_RESP_ICMSGSIZE,
  IcMessageType,
  icmsgNegotiate,
  icVersion,
  negotiatePacketSize,
  versionText,
} from './protocol.ts';

const COUNTS_BYTES = icmsgNegotiate.offsetOf('reserved');
const VERSIONS_AT = ICMSG_HDR + icmsgNegotiate.offsetOf('icversion_data');

export interface NegotiatedVersions {
  readonly framework: number;
  readonly service: number;
}

export type GuestNegotiation =
  | { readonly ok: true; readonly versions: NegotiatedVersions }
  | { readonly ok: false; readonly reason: string };

function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * The guest's answer to a NEGOTIATE message, written into `message` (the
 * received bytes). `message` may be longer than what arrived (`length`):
 * Linux writes the two version slots even past the received length (into its
 * larger buffer), but only `length` bytes go back.
 */
export function answerNegotiate(
  message: Uint8Array,
  length: number,
  frameworkVersions: readonly number[],
  serviceVersions: readonly number[],
): GuestNegotiation {
  if (length < ICMSG_HDR + COUNTS_BYTES) {
    return {
      ok: false,
      reason: `negotiate message of ${length} bytes has no version counts (needs ${ICMSG_HDR + COUNTS_BYTES})`,
    };
  }
  if (message.length < VERSIONS_AT + 2 * icVersion.size) {
    throw new RangeError(`negotiate buffer of ${message.length} bytes cannot hold the answer`);
  }
  setMessageSize(message, ICMSG_NEGOTIATE_RESP_ICMSGSIZE);
  const v = viewOf(message);
  const hostFrameworks = v.getUint16(ICMSG_HDR, true);
  const hostServices = v.getUint16(ICMSG_HDR + 2, true);
  let frameworkMajor = hostFrameworks;
  let frameworkMinor = 0;
  let serviceMajor = hostServices;
  let serviceMinor = 0;
  let found = false;
  let reason = '';
  const entry = (i: number): number => v.getUint32(VERSIONS_AT + 4 * i, true);
  const asVersion = (raw: number): number => (((raw & 0xffff) << 16) | (raw >>> 16)) >>> 0;

  if (
    hostFrameworks > IC_VERSION_NEGOTIATION_MAX_VER_COUNT ||
    hostServices > IC_VERSION_NEGOTIATION_MAX_VER_COUNT ||
    negotiatePacketSize(hostFrameworks, hostServices) > length
  ) {
    reason = `invalid negotiate message: ${hostFrameworks} framework and ${hostServices} service versions in ${length} bytes`;
  } else {
    const offeredFrameworks = Array.from({ length: hostFrameworks }, (_, i) => asVersion(entry(i)));
    const offeredServices = Array.from({ length: hostServices }, (_, i) =>
      asVersion(entry(hostFrameworks + i)),
    );
    const framework = frameworkVersions.find((f) => offeredFrameworks.includes(f));
    if (framework === undefined) {
      reason = `no common framework version: host offers ${list(offeredFrameworks)}, guest supports ${list(frameworkVersions)}`;
    } else {
      frameworkMajor = framework >>> 16;
      frameworkMinor = framework & 0xffff;
      const service = serviceVersions.find((s) => offeredServices.includes(s));
      if (service === undefined) {
        reason = `no common service version: host offers ${list(offeredServices)}, guest supports ${list(serviceVersions)}`;
      } else {
        serviceMajor = service >>> 16;
        serviceMinor = service & 0xffff;
        found = true;
      }
    }
  }
  v.setUint16(ICMSG_HDR, found ? 1 : 0, true);
  v.setUint16(ICMSG_HDR + 2, found ? 1 : 0, true);
  v.setUint16(VERSIONS_AT, frameworkMajor, true);
  v.setUint16(VERSIONS_AT + 2, frameworkMinor, true);
  v.setUint16(VERSIONS_AT + 4, serviceMajor, true);
  v.setUint16(VERSIONS_AT + 6, serviceMinor, true);
  if (!found) return { ok: false, reason };
  return {
    ok: true,
    versions: {
      framework: ((frameworkMajor << 16) | frameworkMinor) >>> 0,
      service: ((serviceMajor << 16) | serviceMinor) >>> 0,
    },
  };
}

function list(versions: readonly number[]): string {
  return versions.length === 0 ? '(none)' : versions.map(versionText).join(', ');
}

/** The host's NEGOTIATE request offering these versions. */
export function buildNegotiate(
  frameworkVersions: readonly number[],
  serviceVersions: readonly number[],
): Uint8Array {
  if (
    frameworkVersions.length > IC_VERSION_NEGOTIATION_MAX_VER_COUNT ||
    serviceVersions.length > IC_VERSION_NEGOTIATION_MAX_VER_COUNT
  ) {
    throw new RangeError('at most 100 framework and 100 service versions can be offered');
  }
  const count = frameworkVersions.length + serviceVersions.length;
  const body = new Uint8Array(icmsgNegotiate.size + count * icVersion.size);
  const v = viewOf(body);
  v.setUint16(0, frameworkVersions.length, true);
  v.setUint16(2, serviceVersions.length, true);
  [...frameworkVersions, ...serviceVersions].forEach((ver, i) => {
    v.setUint16(icmsgNegotiate.size + 4 * i, ver >>> 16, true);
    v.setUint16(icmsgNegotiate.size + 4 * i + 2, ver & 0xffff, true);
  });
  return buildIcMessage(
    {
      type: IcMessageType.Negotiate,
      // The framework and service the host would like; the answer decides.
      framework: frameworkVersions.at(-1) ?? 0,
      messageVersion: serviceVersions.at(-1) ?? 0,
    },
    body,
  );
}

/**
 * The host reads the guest's answer (the body after the IC header). Checks
 * the counts and that the chosen versions are ones the host offered.
 */
export function readNegotiateAnswer(
  body: Uint8Array,
  frameworkVersions: readonly number[],
  serviceVersions: readonly number[],
): NegotiatedVersions | string {
  if (body.length < icmsgNegotiate.size) {
    return `negotiate answer of ${body.length} bytes is shorter than icmsg_negotiate (${icmsgNegotiate.size})`;
  }
  const v = viewOf(body);
  const frameworks = v.getUint16(0, true);
  const services = v.getUint16(2, true);
  if (frameworks === 0 && services === 0) {
    return `the guest supports none of the offered versions (framework ${list(frameworkVersions)}; service ${list(serviceVersions)})`;
  }
  if (frameworks !== 1 || services !== 1) {
    return `negotiate answer has counts ${frameworks}/${services}, expected 1/1`;
  }
  if (body.length < icmsgNegotiate.size + 2 * icVersion.size) {
    return `negotiate answer of ${body.length} bytes has no version slots`;
  }
  const at = icmsgNegotiate.size;
  const framework = ((v.getUint16(at, true) << 16) | v.getUint16(at + 2, true)) >>> 0;
  const service = ((v.getUint16(at + 4, true) << 16) | v.getUint16(at + 6, true)) >>> 0;
  if (!frameworkVersions.includes(framework)) {
    return `the guest chose framework ${versionText(framework)}, which was not offered`;
  }
  if (!serviceVersions.includes(service)) {
    return `the guest chose service version ${versionText(service)}, which was not offered`;
  }
  return { framework, service };
}
