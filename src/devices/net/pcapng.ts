/**
 * A pcapng capture of a NIC's frames (the PCAP Next Generation format,
 * draft-ietf-opsawg-pcapng): one section header, one Ethernet interface,
 * then an enhanced packet block per frame with its time in microseconds and
 * its direction (inbound: towards the guest; outbound: from it). Blocks are
 * gathered in memory and written in batches, so a busy NIC costs one write
 * per few hundred frames; `close` writes what is left.
 */
import { closeSync, openSync, writeSync } from 'node:fs';

const SECTION_HEADER = 0x0a0d0d0a;
const INTERFACE_DESCRIPTION = 0x1;
const ENHANCED_PACKET = 0x6;
const BYTE_ORDER_MAGIC = 0x1a2b3c4d;
const LINKTYPE_ETHERNET = 1;
const OPT_END = 0;
const IF_NAME = 2;
const IF_TSRESOL = 9;
const EPB_FLAGS = 2;
const FLUSH_BYTES = 256 * 1024;
const FLUSH_MS = 200;

const pad4 = (n: number): number => (n + 3) & ~3;

export type CaptureDirection = 'to-guest' | 'to-host';

export class PcapngWriter {
  private readonly fd: number;
  private buffer = new Uint8Array(FLUSH_BYTES * 2);
  private view = new DataView(this.buffer.buffer);
  private used = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private closed = false;
  frames = 0;
  bytes = 0;
  /** Write failures (the capture stops at the first). */
  error = '';

  constructor(
    readonly path: string,
    interfaceName: string,
  ) {
    this.fd = openSync(path, 'w');
    this.sectionHeader();
    this.interfaceDescription(interfaceName);
    this.flush();
  }

  private room(n: number): void {
    if (this.used + n <= this.buffer.length) return;
    const bigger = new Uint8Array(Math.max(this.buffer.length * 2, this.used + n));
    bigger.set(this.buffer.subarray(0, this.used));
    this.buffer = bigger;
    this.view = new DataView(bigger.buffer);
  }

  private sectionHeader(): void {
    const length = 28;
    this.room(length);
    const v = this.view;
    const at = this.used;
    v.setUint32(at, SECTION_HEADER, true);
    v.setUint32(at + 4, length, true);
    v.setUint32(at + 8, BYTE_ORDER_MAGIC, true);
    v.setUint16(at + 12, 1, true);
    v.setUint16(at + 14, 0, true);
    // Section length unknown: -1.
    v.setBigInt64(at + 16, -1n, true);
    v.setUint32(at + 24, length, true);
    this.used += length;
  }

  private interfaceDescription(name: string): void {
    const nameBytes = new TextEncoder().encode(name);
    const options = 4 + pad4(nameBytes.length) + 4 + 4 + 4;
    const length = 16 + options + 4;
    this.room(length);
    const v = this.view;
    let at = this.used;
    v.setUint32(at, INTERFACE_DESCRIPTION, true);
    v.setUint32(at + 4, length, true);
    v.setUint16(at + 8, LINKTYPE_ETHERNET, true);
    v.setUint16(at + 10, 0, true);
    v.setUint32(at + 12, 0, true);
    at += 16;
    v.setUint16(at, IF_NAME, true);
    v.setUint16(at + 2, nameBytes.length, true);
    this.buffer.fill(0, at + 4, at + 4 + pad4(nameBytes.length));
    this.buffer.set(nameBytes, at + 4);
    at += 4 + pad4(nameBytes.length);
    // Microseconds (10^-6), the default, said explicitly.
    v.setUint16(at, IF_TSRESOL, true);
    v.setUint16(at + 2, 1, true);
    v.setUint32(at + 4, 6, true);
    at += 8;
    v.setUint32(at, OPT_END, true);
    at += 4;
    v.setUint32(at, length, true);
    this.used += length;
  }

  /** Adds one frame (copied now: the caller may reuse its bytes). */
  write(direction: CaptureDirection, frame: Uint8Array, timeMs = Date.now()): void {
    if (this.closed || this.error) return;
    const data = pad4(frame.length);
    const length = 28 + data + 8 + 4 + 4;
    this.room(length);
    const v = this.view;
    let at = this.used;
    const micros = BigInt(Math.round(timeMs * 1000));
    v.setUint32(at, ENHANCED_PACKET, true);
    v.setUint32(at + 4, length, true);
    v.setUint32(at + 8, 0, true);
    v.setUint32(at + 12, Number(micros >> 32n), true);
    v.setUint32(at + 16, Number(micros & 0xffff_ffffn), true);
    v.setUint32(at + 20, frame.length, true);
    v.setUint32(at + 24, frame.length, true);
    at += 28;
    this.buffer.set(frame, at);
    this.buffer.fill(0, at + frame.length, at + data);
    at += data;
    v.setUint16(at, EPB_FLAGS, true);
    v.setUint16(at + 2, 4, true);
    v.setUint32(at + 4, direction === 'to-guest' ? 1 : 2, true);
    at += 8;
    v.setUint32(at, OPT_END, true);
    v.setUint32(at + 4, length, true);
    this.used += length;
    this.frames++;
    this.bytes += frame.length;
    if (this.used >= FLUSH_BYTES) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), FLUSH_MS);
  }

  /** Writes what is gathered. */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.used === 0 || this.error) return;
    try {
      let done = 0;
      while (done < this.used) done += writeSync(this.fd, this.buffer, done, this.used - done);
    } catch (error) {
      this.error = (error as Error).message;
    }
    this.used = 0;
  }

  close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    closeSync(this.fd);
  }
}
