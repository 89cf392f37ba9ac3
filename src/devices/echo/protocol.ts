/**
 * hvkit's echo test device: a VMBus device class of the project's own that
 * exercises the whole path before real devices exist. The guest sends
 * in-band packets asking for a completion; the host answers each with a
 * completion carrying the same payload and transaction id. Packets that ask
 * for no completion are consumed silently (a sink, for throughput tests).
 */
import { DeviceClass } from '../../vmbus/protocol.ts';

export const ECHO_CLASS_ID = DeviceClass.hvkit_echo;
/** Default ring sizes (each includes its 4 KiB header page). */
export const ECHO_RING_BYTES = 64 * 1024;
/** Largest payload the echo driver sends in one packet. */
export const ECHO_MAX_PAYLOAD = 16 * 1024;
