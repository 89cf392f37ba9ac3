import { connect, type Socket } from 'node:net';

/**
 * A raw NBD peer over a socket, for driving the server byte by byte. Its
 * encoders are written here from the spec, independently of src/.
 */
export class RawPeer {
  private buffered = Buffer.alloc(0);
  private waiter: (() => void) | undefined;
  ended = false;

  private constructor(readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, d]);
      this.waiter?.();
    });
    const end = (): void => {
      this.ended = true;
      this.waiter?.();
    };
    socket.on('end', end);
    socket.on('close', end);
    socket.on('error', end);
  }

  static async connect(path: string): Promise<RawPeer> {
    const socket = connect({ path });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new RawPeer(socket);
  }

  /** Reads exactly n bytes; rejects if the server closes first or nothing comes within 10 s. */
  async read(n: number): Promise<Buffer> {
    const deadline = Date.now() + 10_000;
    while (this.buffered.length < n) {
      if (this.ended) throw new Error(`connection closed with ${this.buffered.length}/${n} bytes`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waiter = undefined;
      if (Date.now() >= deadline && this.buffered.length < n) {
        throw new Error(`timed out waiting for ${n} bytes (have ${this.buffered.length})`);
      }
    }
    const out = this.buffered.subarray(0, n);
    this.buffered = this.buffered.subarray(n);
    return out;
  }

  /** Resolves true when the server closes the connection within `ms`. */
  async closedWithin(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!this.ended && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    return this.ended;
  }

  write(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Reads the 18-byte greeting and answers with client flags. */
  async greet(clientFlags = 3): Promise<{ magic: bigint; opts: bigint; flags: number }> {
    const g = await this.read(18);
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(clientFlags);
    this.write(flags);
    return { magic: g.readBigUInt64BE(0), opts: g.readBigUInt64BE(8), flags: g.readUInt16BE(16) };
  }

  sendOption(option: number, data: Uint8Array = new Uint8Array(0), length = data.length): void {
    const h = Buffer.alloc(16);
    h.write('IHAVEOPT', 0, 'latin1');
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(length, 12);
    this.write(Buffer.concat([h, data]));
  }

  async optionReply(): Promise<{ magic: bigint; option: number; type: number; data: Buffer }> {
    const h = await this.read(20);
    const length = h.readUInt32BE(16);
    const data = length > 0 ? Buffer.from(await this.read(length)) : Buffer.alloc(0);
    return {
      magic: h.readBigUInt64BE(0),
      option: h.readUInt32BE(8),
      type: h.readUInt32BE(12),
      data,
    };
  }

  /** Runs NBD_OPT_GO for `name` and reads its replies up to the final one. */
  async go(name: string, structured: boolean): Promise<{ size: bigint; flags: number }> {
    if (structured) {
      this.sendOption(8);
      const r = await this.optionReply();
      if (r.type !== 1) throw new Error(`STRUCTURED_REPLY answered ${r.type}`);
    }
    this.sendOption(7, goData(name, [0, 3]));
    let size = -1n;
    let flags = 0;
    for (;;) {
      const r = await this.optionReply();
      if (r.type === 3 && r.data.readUInt16BE(0) === 0) {
        size = r.data.readBigUInt64BE(2);
        flags = r.data.readUInt16BE(10);
      } else if (r.type === 1) {
        return { size, flags };
      } else if (r.type !== 3) {
        throw new Error(`GO answered ${r.type.toString(16)}: ${r.data.toString()}`);
      }
    }
  }

  sendRequest(
    type: number,
    cookie: bigint,
    offset: bigint | number,
    length: number,
    flags = 0,
    payload?: Uint8Array,
    magic = 0x25609513,
  ): void {
    const h = Buffer.alloc(28);
    h.writeUInt32BE(magic, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(cookie, 8);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length, 24);
    this.write(payload ? Buffer.concat([h, payload]) : h);
  }

  /** Reads one simple reply (with `dataLength` bytes of data when error is 0). */
  async simpleReply(
    dataLength = 0,
  ): Promise<{ magic: number; error: number; cookie: bigint; data: Buffer }> {
    const h = await this.read(16);
    const error = h.readUInt32BE(4);
    const data =
      error === 0 && dataLength > 0 ? Buffer.from(await this.read(dataLength)) : Buffer.alloc(0);
    return { magic: h.readUInt32BE(0), error, cookie: h.readBigUInt64BE(8), data };
  }

  /** Reads one structured reply chunk. */
  async chunk(): Promise<{
    magic: number;
    flags: number;
    type: number;
    cookie: bigint;
    payload: Buffer;
  }> {
    const h = await this.read(20);
    const length = h.readUInt32BE(16);
    const payload = length > 0 ? Buffer.from(await this.read(length)) : Buffer.alloc(0);
    return {
      magic: h.readUInt32BE(0),
      flags: h.readUInt16BE(4),
      type: h.readUInt16BE(6),
      cookie: h.readBigUInt64BE(8),
      payload,
    };
  }
}

/** NBD_OPT_INFO / NBD_OPT_GO data for `name` and the listed information requests. */
export function goData(name: string, infos: readonly number[]): Buffer {
  const n = Buffer.from(name, 'utf8');
  const out = Buffer.alloc(4 + n.length + 2 + 2 * infos.length);
  out.writeUInt32BE(n.length, 0);
  n.copy(out, 4);
  out.writeUInt16BE(infos.length, 4 + n.length);
  infos.forEach((info, i) => {
    out.writeUInt16BE(info, 6 + n.length + 2 * i);
  });
  return out;
}
