/**
 * The host's KVP service: GET, SET, DELETE and ENUMERATE on the guest's
 * pools and the IP operations, one transaction at a time, with keys and
 * values in UTF-16LE and sizes in bytes including the NUL. After
 * negotiation, and then periodically, it reads the guest's auto pool (OS,
 * addresses) the way Hyper-V does, for status displays.
 */
import { DeviceClass } from '../../../vmbus/protocol.ts';
import type { NegotiatedVersions } from '../negotiate.ts';
import {
  HOST_IC_VERSIONS,
  HV_KVP_EXCHANGE_MAX_KEY_SIZE,
  HV_KVP_EXCHANGE_MAX_VALUE_SIZE,
  hvKvpExchgMsgValue,
  hvKvpIpaddrValue,
  hvKvpIpMsg,
  hvKvpMsg,
  hvKvpMsgDelete,
  hvKvpMsgEnumerate,
  ICMSG_HDR,
  IcMessageType,
  IcStatus,
  KVP_POOL_COUNT,
  KvpOperation,
  KvpPool,
  KvpValueType,
  MAX_ADAPTER_ID_SIZE,
  statusName,
} from '../protocol.ts';
import { decodeUtf16z, encodeUtf16z } from '../utf16.ts';
import { hostOptions, IcError, type IcReply, type IcServiceOptions, IcVsp } from '../vsp.ts';
import type { IpInfo } from './ip-info.ts';

const BODY = hvKvpMsg.offsetOf('body');
const ENUM_INDEX = BODY + hvKvpMsgEnumerate.offsetOf('index');
const ENUM_DATA = BODY + hvKvpMsgEnumerate.offsetOf('data');
const DELETE_KEY_SIZE = BODY + hvKvpMsgDelete.offsetOf('key_size');
const DELETE_KEY = BODY + hvKvpMsgDelete.offsetOf('key');
const V_TYPE = hvKvpExchgMsgValue.offsetOf('value_type');
const V_KEY_SIZE = hvKvpExchgMsgValue.offsetOf('key_size');
const V_VALUE_SIZE = hvKvpExchgMsgValue.offsetOf('value_size');
const V_KEY = hvKvpExchgMsgValue.offsetOf('key');
const V_VALUE = hvKvpExchgMsgValue.offsetOf('value');
const IP = hvKvpIpMsg.offsetOf('kvp_ip_val');
const ip = (field: string): number => IP + hvKvpIpaddrValue.offsetOf(field);

/** Enumeration stops here even if the guest keeps answering. */
const MAX_ENUMERATE = 10_000;

export type KvpValue = string | { readonly u32: number } | { readonly u64: bigint };

export interface KvpEntry {
  readonly key: string;
  readonly value: string;
}

export interface KvpHostOptions extends IcServiceOptions {
  /** How often to re-read the auto pool (0: only after negotiation). */
  readonly refreshMs?: number;
  readonly timeoutMs?: number;
}

export class KvpVsp extends IcVsp {
  /** The guest's auto pool as last read. */
  auto: Record<string, string> = {};
  autoReadAt = 0;
  private timer: ReturnType<typeof setInterval> | undefined;

  constructor(private readonly kvp: KvpHostOptions = {}) {
    super(
      hostOptions(
        {
          name: 'kvp',
          classId: DeviceClass.kvp,
          messageType: IcMessageType.KvpExchange,
          frameworkVersions: HOST_IC_VERSIONS.framework,
          serviceVersions: HOST_IC_VERSIONS.kvp,
        },
        kvp,
      ),
    );
  }

  protected override ready(_versions: NegotiatedVersions): void {
    this.dispose();
    void this.refreshAuto();
    if (this.kvp.refreshMs) {
      this.timer = setInterval(() => void this.refreshAuto(), this.kvp.refreshMs);
      this.timer.unref();
    }
  }

  protected override closed(): void {
    this.dispose();
  }

  dispose(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Re-reads the auto pool; failures are logged (the status keeps the last good read). */
  async refreshAuto(): Promise<void> {
    try {
      const entries = await this.list(KvpPool.Auto);
      this.auto = Object.fromEntries(entries.map((e) => [e.key, e.value]));
      this.autoReadAt = Date.now();
    } catch (error) {
      this.log(`kvp: reading the auto pool: ${(error as Error).message}`);
    }
  }

  private checkPool(pool: number): void {
    if (!Number.isInteger(pool) || pool < 0 || pool >= KVP_POOL_COUNT) {
      throw new IcError(`KVP pool ${pool} does not exist (pools are 0..${KVP_POOL_COUNT - 1})`);
    }
  }

  private static text(what: string, text: string, limit: number): Uint8Array {
    const bytes = encodeUtf16z(text);
    if (bytes.length > limit) {
      throw new IcError(
        `${what} is ${bytes.length} bytes in UTF-16 with its NUL; KVP allows ${limit}`,
      );
    }
    return bytes;
  }

  private async operation(
    op: KvpOperation,
    pool: number,
    fill: (body: Uint8Array, view: DataView) => void,
  ): Promise<IcReply> {
    const message = this.message(hvKvpMsg.size);
    const body = message.subarray(ICMSG_HDR);
    body[0] = op;
    body[1] = pool;
    fill(body, new DataView(body.buffer, body.byteOffset, body.byteLength));
    const reply = await this.requestMessage(message, this.kvp.timeoutMs ?? 10_000);
    if (reply.body.length < hvKvpMsg.size && op !== KvpOperation.Delete) {
      throw new IcError(`KVP answer of ${reply.body.length} bytes is shorter than hv_kvp_msg`);
    }
    return reply;
  }

  private static readValue(reply: IcReply, at: number, withKey: boolean): KvpEntry {
    const view = new DataView(reply.body.buffer, reply.body.byteOffset, reply.body.byteLength);
    const keySize = view.getUint32(at + V_KEY_SIZE, true);
    const valueSize = view.getUint32(at + V_VALUE_SIZE, true);
    if (withKey && keySize > HV_KVP_EXCHANGE_MAX_KEY_SIZE) {
      throw new IcError(
        `the guest answered key_size ${keySize} (> ${HV_KVP_EXCHANGE_MAX_KEY_SIZE})`,
      );
    }
    if (valueSize > HV_KVP_EXCHANGE_MAX_VALUE_SIZE) {
      throw new IcError(
        `the guest answered value_size ${valueSize} (> ${HV_KVP_EXCHANGE_MAX_VALUE_SIZE})`,
      );
    }
    const type = view.getUint32(at + V_TYPE, true);
    const valueField = reply.body.subarray(
      at + V_VALUE,
      at + V_VALUE + HV_KVP_EXCHANGE_MAX_VALUE_SIZE,
    );
    let value: string;
    if (type === KvpValueType.U32) value = String(view.getUint32(at + V_VALUE, true));
    else if (type === KvpValueType.U64) value = String(view.getBigUint64(at + V_VALUE, true));
    else value = decodeUtf16z(valueField, valueSize);
    const key = withKey
      ? decodeUtf16z(
          reply.body.subarray(at + V_KEY, at + V_KEY + HV_KVP_EXCHANGE_MAX_KEY_SIZE),
          keySize,
        )
      : '';
    return { key, value };
  }

  /** The value of `key` in `pool`, or undefined when the guest has no such key. */
  async get(pool: number, key: string): Promise<string | undefined> {
    this.checkPool(pool);
    const keyBytes = KvpVsp.text('key', key, HV_KVP_EXCHANGE_MAX_KEY_SIZE);
    const reply = await this.operation(KvpOperation.Get, pool, (body, view) => {
      view.setUint32(BODY + V_KEY_SIZE, keyBytes.length, true);
      body.set(keyBytes, BODY + V_KEY);
    });
    if (reply.status === IcStatus.S_CONT) return undefined;
    if (reply.status !== IcStatus.S_OK) {
      throw new IcError(
        `GET ${JSON.stringify(key)} in pool ${pool}: the guest answered ${statusName(reply.status)}`,
      );
    }
    return KvpVsp.readValue(reply, BODY, false).value;
  }

  async set(pool: number, key: string, value: KvpValue): Promise<void> {
    this.checkPool(pool);
    const keyBytes = KvpVsp.text('key', key, HV_KVP_EXCHANGE_MAX_KEY_SIZE);
    const valueBytes =
      typeof value === 'string'
        ? KvpVsp.text('value', value, HV_KVP_EXCHANGE_MAX_VALUE_SIZE)
        : undefined;
    const reply = await this.operation(KvpOperation.Set, pool, (body, view) => {
      view.setUint32(BODY + V_KEY_SIZE, keyBytes.length, true);
      body.set(keyBytes, BODY + V_KEY);
      if (valueBytes) {
        view.setUint32(BODY + V_TYPE, KvpValueType.String, true);
        view.setUint32(BODY + V_VALUE_SIZE, valueBytes.length, true);
        body.set(valueBytes, BODY + V_VALUE);
      } else if (typeof value === 'object' && 'u32' in value) {
        view.setUint32(BODY + V_TYPE, KvpValueType.U32, true);
        view.setUint32(BODY + V_VALUE_SIZE, 4, true);
        view.setUint32(BODY + V_VALUE, value.u32, true);
      } else if (typeof value === 'object') {
        view.setUint32(BODY + V_TYPE, KvpValueType.U64, true);
        view.setUint32(BODY + V_VALUE_SIZE, 8, true);
        view.setBigUint64(BODY + V_VALUE, value.u64, true);
      }
    });
    if (reply.status !== IcStatus.S_OK) {
      throw new IcError(
        `SET ${JSON.stringify(key)} in pool ${pool}: the guest answered ${statusName(reply.status)}`,
      );
    }
  }

  /** Deletes `key`; false when the guest had no such key. */
  async delete(pool: number, key: string): Promise<boolean> {
    this.checkPool(pool);
    const keyBytes = KvpVsp.text('key', key, HV_KVP_EXCHANGE_MAX_KEY_SIZE);
    const reply = await this.operation(KvpOperation.Delete, pool, (body, view) => {
      view.setUint32(DELETE_KEY_SIZE, keyBytes.length, true);
      body.set(keyBytes, DELETE_KEY);
    });
    if (reply.status === IcStatus.S_CONT) return false;
    if (reply.status !== IcStatus.S_OK) {
      throw new IcError(
        `DELETE ${JSON.stringify(key)} in pool ${pool}: the guest answered ${statusName(reply.status)}`,
      );
    }
    return true;
  }

  /** Every record of a pool, by ENUMERATE from index 0 until the guest answers HV_S_CONT. */
  async list(pool: number): Promise<KvpEntry[]> {
    this.checkPool(pool);
    const out: KvpEntry[] = [];
    for (let index = 0; index < MAX_ENUMERATE; index++) {
      const reply = await this.operation(KvpOperation.Enumerate, pool, (_body, view) => {
        view.setUint32(ENUM_INDEX, index, true);
      });
      if (reply.status === IcStatus.S_CONT) return out;
      if (reply.status !== IcStatus.S_OK) {
        throw new IcError(
          `ENUMERATE pool ${pool} at ${index}: the guest answered ${statusName(reply.status)}`,
        );
      }
      out.push(KvpVsp.readValue(reply, ENUM_DATA, true));
    }
    throw new IcError(`pool ${pool} has more than ${MAX_ENUMERATE} records`);
  }

  private async ipExchange(
    op: KvpOperation,
    info: Partial<IpInfo> & { adapterId: string },
  ): Promise<IcReply> {
    const adapter = KvpVsp.text('adapter id', info.adapterId, MAX_ADAPTER_ID_SIZE * 2);
    const strings: [string, string | undefined, number][] = [
      ['ip_addr', info.ipAddr, 2048],
      ['sub_net', info.subNet, 2048],
      ['gate_way', info.gateway, 1024],
      ['dns_addr', info.dns, 2048],
    ];
    const message = this.message(hvKvpIpMsg.size);
    const body = message.subarray(ICMSG_HDR);
    body[0] = op;
    body[1] = 0;
    body.set(adapter, ip('adapter_id'));
    body[ip('addr_family')] = info.addrFamily ?? 0;
    body[ip('dhcp_enabled')] = info.dhcpEnabled ? 1 : 0;
    for (const [field, text, limit] of strings) {
      if (text !== undefined) body.set(KvpVsp.text(field, text, limit), ip(field));
    }
    const reply = await this.requestMessage(message, this.kvp.timeoutMs ?? 10_000);
    if (reply.body.length < hvKvpIpMsg.size) {
      throw new IcError(`IP answer of ${reply.body.length} bytes is shorter than hv_kvp_ip_msg`);
    }
    return reply;
  }

  /** The guest's configuration of the adapter with this MAC address. */
  async getIpInfo(mac: string): Promise<IpInfo> {
    const reply = await this.ipExchange(KvpOperation.GetIpInfo, { adapterId: mac });
    if (reply.status !== IcStatus.S_OK) {
      throw new IcError(`GET_IP_INFO ${mac}: the guest answered ${statusName(reply.status)}`);
    }
    const b = reply.body;
    const text = (field: string, bytes: number): string =>
      decodeUtf16z(b.subarray(ip(field), ip(field) + bytes), bytes);
    return {
      adapterId: mac,
      addrFamily: b[ip('addr_family')]!,
      dhcpEnabled: b[ip('dhcp_enabled')] !== 0,
      ipAddr: text('ip_addr', 2048),
      subNet: text('sub_net', 2048),
      gateway: text('gate_way', 1024),
      dns: text('dns_addr', 2048),
    };
  }

  /** Hands the guest an adapter configuration. */
  async setIpInfo(info: IpInfo): Promise<void> {
    const reply = await this.ipExchange(KvpOperation.SetIpInfo, info);
    if (reply.status !== IcStatus.S_OK) {
      throw new IcError(
        `SET_IP_INFO ${info.adapterId}: the guest answered ${statusName(reply.status)}`,
      );
    }
  }

  /** What the guest's auto pool says of it, for status lines. */
  guestSummary(): string {
    const a = this.auto;
    if (a.OSName === undefined) return `kvp ${this.state}`;
    const ips = [a.NetworkAddressIPv4, a.NetworkAddressIPv6].filter((s) => s).join(';');
    return (
      `guest ${a.OSName}${a.OSMajorVersion ? ` ${a.OSMajorVersion}` : ''}, kernel ${a.OSBuildNumber}, ` +
      `${a.ProcessorArchitecture}, ${a.FullyQualifiedDomainName}, IPs ${ips || 'none'}`
    );
  }

  override describe(): Record<string, unknown> {
    return {
      ...super.describe(),
      auto: this.auto,
      autoReadAgoMs: this.autoReadAt ? Date.now() - this.autoReadAt : undefined,
    };
  }
}
