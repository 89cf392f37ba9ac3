/**
 * GPADLs (guest physical address descriptor lists): how the guest tells the
 * host which of its pages make up a buffer. The guest sends GPADL_HEADER with
 * the start of the range list and as many GPADL_BODY messages as it takes to
 * send the rest (Linux drivers/hv/channel.c create_gpadl_header); the host
 * assembles the list, checks it, answers GPADL_CREATED, and keeps a table of
 * established GPADLs whose pages devices may map. A GPADL is torn down only
 * after every view of it has been released.
 */
import { PAGE_SIZE } from '../hv/protocol.ts';
import {
  ChannelMessageType,
  GPADL_BODY_MAX_PFNS,
  GPADL_HEADER_MAX_PFNS,
  gpadlBodyMessage,
  gpadlHeaderMessage,
  MAX_SIZE_CHANNEL_MESSAGE,
} from './protocol.ts';

const TWO_32 = 0x1_0000_0000;
/** Largest range list the host accepts (16 Mi pages = 64 GiB), bounding memory use. */
export const MAX_GPADL_PAGES = 1 << 24;

/** Linux hands out GPADL handles from a counter starting here (vmbus_connection.next_gpadl_handle). */
export const FIRST_GPADL_HANDLE = 0xe1e10;

/**
 * Builds the GPADL_HEADER and GPADL_BODY messages for a buffer made of whole
 * pages, as Linux does: one range covering all pages (byte_offset 0,
 * byte_count = pages * 4096), range_buflen covering the whole list, up to 26
 * PFNs in the header and 28 per body, msgnumber left 0.
 */
export function buildGpadlMessages(
  childRelid: number,
  handle: number,
  pfns: readonly number[],
): Uint8Array[] {
  if (pfns.length === 0) throw new RangeError('a GPADL needs at least one page');
  const rangeBytes = 8 + 8 * pfns.length;
  if (rangeBytes > 0xffff) {
    throw new RangeError(
      `${pfns.length} pages do not fit one GPADL range list (range_buflen is 16 bits)`,
    );
  }
  const messages: Uint8Array[] = [];
  const headerPfns = Math.min(pfns.length, GPADL_HEADER_MAX_PFNS);
  const header = new Uint8Array(gpadlHeaderMessage.size + 8 + 8 * headerPfns);
  gpadlHeaderMessage.writeInto(header, 0, {
    header: { msgtype: ChannelMessageType.GpadlHeader },
    child_relid: childRelid,
    gpadl: handle,
    range_buflen: rangeBytes,
    rangecount: 1,
  });
  const hv = new DataView(header.buffer);
  let at = gpadlHeaderMessage.size;
  hv.setUint32(at, pfns.length * PAGE_SIZE, true);
  hv.setUint32(at + 4, 0, true);
  at += 8;
  for (let i = 0; i < headerPfns; i++, at += 8) writePfn(hv, at, pfns[i]!);
  messages.push(header);

  for (let next = headerPfns; next < pfns.length; next += GPADL_BODY_MAX_PFNS) {
    const count = Math.min(GPADL_BODY_MAX_PFNS, pfns.length - next);
    const body = new Uint8Array(gpadlBodyMessage.size + 8 * count);
    gpadlBodyMessage.writeInto(body, 0, {
      header: { msgtype: ChannelMessageType.GpadlBody },
      msgnumber: 0,
      gpadl: handle,
    });
    const bv = new DataView(body.buffer);
    for (let i = 0; i < count; i++) writePfn(bv, gpadlBodyMessage.size + 8 * i, pfns[next + i]!);
    messages.push(body);
  }
  return messages;
}

function writePfn(view: DataView, at: number, pfn: number): void {
  view.setUint32(at, (pfn % TWO_32) >>> 0, true);
  view.setUint32(at + 4, Math.floor(pfn / TWO_32), true);
}

/** One range of an established GPADL. */
export interface GpadlRange {
  readonly byteCount: number;
  readonly byteOffset: number;
  readonly pfns: readonly number[];
}

export interface Gpadl {
  readonly handle: number;
  readonly childRelid: number;
  readonly ranges: readonly GpadlRange[];
  /** All PFNs of all ranges, in order. */
  readonly pfns: readonly number[];
}

type Assembling = {
  readonly handle: number;
  readonly childRelid: number;
  readonly rangeCount: number;
  /** u64 values of the range list still expected. */
  remaining: number;
  readonly values: number[];
};

type Entry = {
  readonly gpadl: Gpadl;
  views: number;
  teardownRequested: boolean;
};

export type GpadlEvent =
  | { kind: 'created'; childRelid: number; handle: number; status: number }
  | { kind: 'pending' }
  | { kind: 'invalid'; reason: string };

/**
 * The host's table of GPADLs: assembles header + body messages, validates
 * them (page numbers inside guest memory, a range list that parses to
 * exactly the announced length), and counts views so that teardown waits for
 * the last one.
 */
export class GpadlTable {
  private readonly assembling = new Map<number, Assembling>();
  private readonly established = new Map<number, Entry>();

  constructor(private readonly guestPageCount: number) {}

  get size(): number {
    return this.established.size;
  }

  has(handle: number): boolean {
    return this.established.has(handle) || this.assembling.has(handle);
  }

  get(handle: number): Gpadl | undefined {
    return this.established.get(handle)?.gpadl;
  }

  all(): Gpadl[] {
    return [...this.established.values()].map((e) => e.gpadl);
  }

  viewCount(handle: number): number {
    return this.established.get(handle)?.views ?? 0;
  }

  /** GPADL_HEADER. The message is the whole SynIC payload (header included). */
  header(message: Uint8Array): GpadlEvent {
    if (message.length < gpadlHeaderMessage.size || message.length > MAX_SIZE_CHANNEL_MESSAGE) {
      return { kind: 'invalid', reason: `GPADL_HEADER of ${message.length} bytes` };
    }
    const h = gpadlHeaderMessage.read(message);
    const dataBytes = message.length - gpadlHeaderMessage.size;
    if (dataBytes % 8 !== 0) {
      return {
        kind: 'invalid',
        reason: `GPADL_HEADER carries ${dataBytes} bytes of ranges, not a multiple of 8`,
      };
    }
    if (this.has(h.gpadl)) {
      return { kind: 'created', childRelid: h.child_relid, handle: h.gpadl, status: 0xc0000001 };
    }
    if (h.rangecount === 0 || h.range_buflen % 8 !== 0 || h.range_buflen < 16 * h.rangecount) {
      return {
        kind: 'invalid',
        reason: `GPADL ${h.gpadl}: range_buflen ${h.range_buflen} cannot hold ${h.rangecount} ranges`,
      };
    }
    const total = h.range_buflen / 8;
    const carried = dataBytes / 8;
    if (carried > total) {
      return {
        kind: 'invalid',
        reason: `GPADL ${h.gpadl}: header carries ${carried} values, list has ${total}`,
      };
    }
    const values: number[] = [];
    const view = new DataView(message.buffer, message.byteOffset, message.length);
    for (let i = 0; i < carried; i++) values.push(readU64(view, gpadlHeaderMessage.size + 8 * i));
    const state: Assembling = {
      handle: h.gpadl,
      childRelid: h.child_relid,
      rangeCount: h.rangecount,
      remaining: total - carried,
      values,
    };
    if (state.remaining > 0) {
      this.assembling.set(h.gpadl, state);
      return { kind: 'pending' };
    }
    return this.finish(state);
  }

  /** GPADL_BODY: continues the list of a GPADL whose header arrived. */
  body(message: Uint8Array): GpadlEvent {
    if (message.length < gpadlBodyMessage.size + 8 || message.length > MAX_SIZE_CHANNEL_MESSAGE) {
      return { kind: 'invalid', reason: `GPADL_BODY of ${message.length} bytes` };
    }
    const b = gpadlBodyMessage.read(message);
    const state = this.assembling.get(b.gpadl);
    if (!state) return { kind: 'invalid', reason: `GPADL_BODY for unknown GPADL ${b.gpadl}` };
    const dataBytes = message.length - gpadlBodyMessage.size;
    const carried = Math.floor(dataBytes / 8);
    if (dataBytes % 8 !== 0 || carried > state.remaining) {
      this.assembling.delete(b.gpadl);
      return {
        kind: 'created',
        childRelid: state.childRelid,
        handle: state.handle,
        status: 0xc0000001,
      };
    }
    const view = new DataView(message.buffer, message.byteOffset, message.length);
    for (let i = 0; i < carried; i++)
      state.values.push(readU64(view, gpadlBodyMessage.size + 8 * i));
    state.remaining -= carried;
    if (state.remaining > 0) return { kind: 'pending' };
    this.assembling.delete(b.gpadl);
    return this.finish(state);
  }

  private finish(state: Assembling): GpadlEvent {
    const fail = {
      kind: 'created' as const,
      childRelid: state.childRelid,
      handle: state.handle,
      status: 0xc0000001,
    };
    const ranges: GpadlRange[] = [];
    const all: number[] = [];
    let at = 0;
    for (let r = 0; r < state.rangeCount; r++) {
      const head = state.values[at++];
      if (head === undefined) return fail;
      const byteCount = head % TWO_32;
      const byteOffset = Math.floor(head / TWO_32);
      if (byteCount === 0 || byteOffset >= PAGE_SIZE) return fail;
      const npfn = Math.ceil((byteOffset + byteCount) / PAGE_SIZE);
      if (at + npfn > state.values.length || all.length + npfn > MAX_GPADL_PAGES) return fail;
      const pfns = state.values.slice(at, at + npfn);
      at += npfn;
      if (pfns.some((pfn) => pfn >= this.guestPageCount)) return fail;
      ranges.push({ byteCount, byteOffset, pfns });
      all.push(...pfns);
    }
    if (at !== state.values.length) return fail;
    this.established.set(state.handle, {
      gpadl: { handle: state.handle, childRelid: state.childRelid, ranges, pfns: all },
      views: 0,
      teardownRequested: false,
    });
    return { kind: 'created', childRelid: state.childRelid, handle: state.handle, status: 0 };
  }

  /** Takes a view of a GPADL's pages (a mapped ring or buffer). */
  acquire(handle: number): Gpadl | undefined {
    const entry = this.established.get(handle);
    if (!entry || entry.teardownRequested) return undefined;
    entry.views++;
    return entry.gpadl;
  }

  /**
   * Releases a view. Returns true when this was the last view of a GPADL
   * whose teardown was waiting: the caller now sends GPADL_TORNDOWN.
   */
  release(handle: number): boolean {
    const entry = this.established.get(handle);
    if (!entry || entry.views === 0) return false;
    entry.views--;
    if (entry.views === 0 && entry.teardownRequested) {
      this.established.delete(handle);
      return true;
    }
    return false;
  }

  /**
   * GPADL_TEARDOWN: 'done' when the GPADL is gone now, 'deferred' when views
   * remain (release() reports completion), 'unknown' for a handle we never
   * established.
   */
  teardown(handle: number): 'done' | 'deferred' | 'unknown' {
    const entry = this.established.get(handle);
    if (!entry) {
      // A teardown of one still being assembled abandons it.
      return this.assembling.delete(handle) ? 'done' : 'unknown';
    }
    if (entry.views > 0) {
      entry.teardownRequested = true;
      return 'deferred';
    }
    this.established.delete(handle);
    return 'done';
  }

  /** Drops every GPADL (UNLOAD): returns the handles removed. */
  clear(): number[] {
    const handles = [...this.established.keys()];
    this.established.clear();
    this.assembling.clear();
    return handles;
  }
}

function readU64(view: DataView, at: number): number {
  return view.getUint32(at, true) + view.getUint32(at + 4, true) * TWO_32;
}

/**
 * Why a GPADL cannot hold a channel's two rings split at
 * `downstreamPageOffset` pages, or undefined when it can: one page-aligned
 * range, and each ring at least its header page plus one data page.
 */
export function ringGpadlProblem(gpadl: Gpadl, downstreamPageOffset: number): string | undefined {
  const pages = gpadl.pfns.length;
  if (downstreamPageOffset < 2 || pages - downstreamPageOffset < 2) {
    return `downstream page offset ${downstreamPageOffset} splits ${pages} pages badly`;
  }
  if (gpadl.ranges.length !== 1 || gpadl.ranges[0]!.byteOffset !== 0) {
    return 'ring GPADL must be one page-aligned range';
  }
  return undefined;
}
