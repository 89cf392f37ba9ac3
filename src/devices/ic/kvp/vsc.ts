/**
 * The guest's KVP service: the kernel half of Linux's KVP (drivers/hv/
 * hv_kvp.c, which converts between the host's UTF-16 and the pools' UTF-8)
 * and the daemon half (tools/hv/hv_kvp_daemon.c, which keeps the pools in
 * files and fills the auto pool) in one. Answers as they do:
 * - GET: the value (UTF-16, size with NUL, type REG_SZ), or HV_S_CONT when
 *   the key is not in the pool;
 * - SET: stores strings as given, REG_U32/REG_U64 as decimal text;
 * - DELETE: HV_S_CONT when there was nothing to delete;
 * - ENUMERATE: the record at the index, HV_S_CONT past the end (the host
 *   stops there); the auto pool is regenerated when an enumeration starts;
 * - GET_IP_INFO / SET_IP_INFO: see ip-info.ts.
 * Every length and size from the host is checked against the message and
 * the field it describes; a message that does not hold what its operation
 * needs gets HV_E_FAIL.
 */
import { DeviceClass } from '../../../vmbus/protocol.ts';
import {
  HV_KVP_EXCHANGE_MAX_KEY_SIZE,
  HV_KVP_EXCHANGE_MAX_VALUE_SIZE,
  hvKvpExchgMsgValue,
  hvKvpIpaddrValue,
  hvKvpIpMsg,
  hvKvpMsg,
  hvKvpMsgDelete,
  hvKvpMsgEnumerate,
  IcMessageType,
  IcStatus,
  KVP_OP_COUNT,
  KVP_POOL_COUNT,
  KvpOperation,
  KvpPool,
  KvpValueType,
  LINUX_IC_VERSIONS,
} from '../protocol.ts';
import { decodeUtf16z, writeUtf16Field } from '../utf16.ts';
import type { IcAnswer, IcGuestService, IcRequest } from '../vsc.ts';
import { autoPoolRecords } from './auto-pool.ts';
import {
  type IpInfo,
  interfaceIpInfo,
  loadIpConfig,
  type NetInterface,
  normalizeMac,
  saveIpConfig,
} from './ip-info.ts';
import type { KvpPools } from './pool-file.ts';

/** Linux reads KVP messages into four pages. */
export const KVP_MESSAGE_BYTES = 4 * 4096;

const BODY = hvKvpMsg.offsetOf('body');
/** Where the exchanged value sits for GET and SET, and for ENUMERATE. */
const GET_DATA = BODY;
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

/** The guest's NICs as KVP sees them: their addresses, and a way to configure one. */
export interface GuestNetworkAccess {
  interfaces(): readonly NetInterface[];
  /** Applies a SET_IP_INFO to the guest interface with that MAC. */
  configure?(info: IpInfo): Promise<void>;
}

export interface KvpStats {
  get: number;
  set: number;
  delete: number;
  enumerate: number;
  ipInfo: number;
  failed: number;
}

export class KvpService implements IcGuestService {
  readonly name = 'kvp';
  readonly classId = DeviceClass.kvp;
  readonly messageType = IcMessageType.KvpExchange;
  readonly frameworkVersions = LINUX_IC_VERSIONS.framework;
  readonly serviceVersions = LINUX_IC_VERSIONS.kvp;
  readonly maxMessageBytes = KVP_MESSAGE_BYTES;
  readonly stats: KvpStats = { get: 0, set: 0, delete: 0, enumerate: 0, ipInfo: 0, failed: 0 };
  lastError = '';

  constructor(
    readonly pools: KvpPools,
    private readonly log: (message: string) => void = () => {},
    private readonly network?: GuestNetworkAccess,
  ) {
    this.refreshAutoPool();
  }

  /** Rewrites the auto pool's generated keys (other records in it stay). */
  refreshAutoPool(): void {
    const fresh = autoPoolRecords(this.network?.interfaces() ?? []);
    const generated = new Set(fresh.map((r) => r.key));
    const others = this.pools.read(KvpPool.Auto).filter((r) => !generated.has(r.key));
    this.pools.write(KvpPool.Auto, [...fresh, ...others]);
  }

  handle({ body }: IcRequest): IcAnswer {
    try {
      return this.operate(body);
    } catch (error) {
      this.lastError = (error as Error).message;
      this.log(`kvp: ${this.lastError}`);
      this.stats.failed++;
      return IcStatus.E_FAIL;
    }
  }

  private fail(reason: string): number {
    this.lastError = reason;
    this.stats.failed++;
    return IcStatus.E_FAIL;
  }

  private operate(body: Uint8Array): number {
    if (body.length < 2) return this.fail(`KVP message of ${body.length} bytes has no header`);
    const op = body[0]!;
    const pool = body[1]!;
    if (op >= KVP_OP_COUNT) return this.fail(`unknown KVP operation ${op}`);
    const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
    const need = (bytes: number, what: string): string | undefined =>
      body.length < bytes ? `${what} of ${body.length} bytes, needs ${bytes}` : undefined;

    if (op === KvpOperation.GetIpInfo || op === KvpOperation.SetIpInfo) {
      const short = need(hvKvpIpMsg.size, `${KvpOperation[op]} message`);
      if (short) return this.fail(short);
      this.stats.ipInfo++;
      return op === KvpOperation.GetIpInfo ? this.getIpInfo(body) : this.setIpInfo(body);
    }
    if (pool >= KVP_POOL_COUNT) return this.fail(`KVP pool ${pool} does not exist`);

    switch (op) {
      case KvpOperation.Get: {
        const short = need(GET_DATA + hvKvpExchgMsgValue.size, 'GET message');
        if (short) return this.fail(short);
        const key = this.key(view, body, GET_DATA + V_KEY_SIZE, GET_DATA + V_KEY);
        if (key === undefined) return IcStatus.E_FAIL;
        this.stats.get++;
        const value = this.pools.get(pool, key);
        if (value === undefined) return IcStatus.S_CONT;
        this.putValue(view, body, GET_DATA, value);
        return IcStatus.S_OK;
      }
      case KvpOperation.Set: {
        const short = need(GET_DATA + hvKvpExchgMsgValue.size, 'SET message');
        if (short) return this.fail(short);
        const key = this.key(view, body, GET_DATA + V_KEY_SIZE, GET_DATA + V_KEY);
        if (key === undefined) return IcStatus.E_FAIL;
        const value = this.valueOf(view, body, GET_DATA);
        if (value === undefined) return IcStatus.E_FAIL;
        this.stats.set++;
        const problem = this.pools.set(pool, key, value);
        return problem ? this.fail(`SET ${JSON.stringify(key)}: ${problem}`) : IcStatus.S_OK;
      }
      case KvpOperation.Delete: {
        const short = need(DELETE_KEY + HV_KVP_EXCHANGE_MAX_KEY_SIZE, 'DELETE message');
        if (short) return this.fail(short);
        const key = this.key(view, body, DELETE_KEY_SIZE, DELETE_KEY);
        if (key === undefined) return IcStatus.E_FAIL;
        this.stats.delete++;
        return this.pools.delete(pool, key) ? IcStatus.S_OK : IcStatus.S_CONT;
      }
      default: {
        const short = need(ENUM_DATA + hvKvpExchgMsgValue.size, 'ENUMERATE message');
        if (short) return this.fail(short);
        const index = view.getUint32(ENUM_INDEX, true);
        this.stats.enumerate++;
        if (pool === KvpPool.Auto && index === 0) this.refreshAutoPool();
        const record = this.pools.at(pool, index);
        if (!record) return IcStatus.S_CONT;
        const keyBytes = writeUtf16Field(
          body,
          ENUM_DATA + V_KEY,
          HV_KVP_EXCHANGE_MAX_KEY_SIZE,
          record.key,
        );
        view.setUint32(ENUM_DATA + V_KEY_SIZE, keyBytes, true);
        this.putValue(view, body, ENUM_DATA, record.value);
        return IcStatus.S_OK;
      }
    }
  }

  /** A key from the wire: its size must fit the key field; decoding stops at the NUL. */
  private key(view: DataView, body: Uint8Array, sizeAt: number, keyAt: number): string | undefined {
    const size = view.getUint32(sizeAt, true);
    if (size > HV_KVP_EXCHANGE_MAX_KEY_SIZE) {
      this.fail(`key_size ${size} exceeds ${HV_KVP_EXCHANGE_MAX_KEY_SIZE}`);
      return undefined;
    }
    return decodeUtf16z(body.subarray(keyAt, keyAt + HV_KVP_EXCHANGE_MAX_KEY_SIZE), size);
  }

  /** The value of a SET: a string, or a number stored as decimal text (as Linux does). */
  private valueOf(view: DataView, body: Uint8Array, at: number): string | undefined {
    const type = view.getUint32(at + V_TYPE, true);
    switch (type) {
      case KvpValueType.String: {
        const size = view.getUint32(at + V_VALUE_SIZE, true);
        if (size > HV_KVP_EXCHANGE_MAX_VALUE_SIZE) {
          this.fail(`value_size ${size} exceeds ${HV_KVP_EXCHANGE_MAX_VALUE_SIZE}`);
          return undefined;
        }
        return decodeUtf16z(
          body.subarray(at + V_VALUE, at + V_VALUE + HV_KVP_EXCHANGE_MAX_VALUE_SIZE),
          size,
        );
      }
      case KvpValueType.U32:
        return String(view.getUint32(at + V_VALUE, true));
      case KvpValueType.U64:
        return String(view.getBigUint64(at + V_VALUE, true));
      default:
        this.fail(`unknown value_type ${type}`);
        return undefined;
    }
  }

  private putValue(view: DataView, body: Uint8Array, at: number, value: string): void {
    const bytes = writeUtf16Field(body, at + V_VALUE, HV_KVP_EXCHANGE_MAX_VALUE_SIZE, value);
    view.setUint32(at + V_VALUE_SIZE, bytes, true);
    view.setUint32(at + V_TYPE, KvpValueType.String, true);
  }

  private getIpInfo(body: Uint8Array): number {
    const adapter = decodeUtf16z(body.subarray(ip('adapter_id'), ip('addr_family')), 256);
    const info =
      interfaceIpInfo(adapter, this.network?.interfaces() ?? []) ??
      loadIpConfig(this.pools.directory, adapter);
    if (!info) return this.fail(`GET_IP_INFO: no adapter ${JSON.stringify(adapter)}`);
    body[ip('addr_family')] = info.addrFamily;
    body[ip('dhcp_enabled')] = info.dhcpEnabled ? 1 : 0;
    writeUtf16Field(body, ip('ip_addr'), 2048, info.ipAddr);
    writeUtf16Field(body, ip('sub_net'), 2048, info.subNet);
    writeUtf16Field(body, ip('gate_way'), 1024, info.gateway);
    writeUtf16Field(body, ip('dns_addr'), 2048, info.dns);
    return IcStatus.S_OK;
  }

  private setIpInfo(body: Uint8Array): number {
    const text = (field: string, bytes: number): string =>
      decodeUtf16z(body.subarray(ip(field), ip(field) + bytes), bytes);
    const info: IpInfo = {
      adapterId: text('adapter_id', 256),
      addrFamily: body[ip('addr_family')]!,
      dhcpEnabled: body[ip('dhcp_enabled')] !== 0,
      ipAddr: text('ip_addr', 2048),
      subNet: text('sub_net', 2048),
      gateway: text('gate_way', 1024),
      dns: text('dns_addr', 2048),
    };
    if (info.adapterId === '') return IcStatus.GUID_NOTFOUND;
    const problem = saveIpConfig(this.pools.directory, info);
    if (problem) return IcStatus.INVALIDARG;
    // One of the guest's own NICs: its interface takes the configuration too.
    const mac = normalizeMac(info.adapterId);
    const network = this.network;
    if (
      mac &&
      network?.configure &&
      network.interfaces().some((n) => normalizeMac(n.mac) === mac)
    ) {
      network
        .configure(info)
        .catch((error: Error) => this.log(`kvp: SET_IP_INFO for ${mac}: ${error.message}`));
    }
    return IcStatus.S_OK;
  }

  summary(): string {
    return `kvp pools in ${this.pools.directory}`;
  }

  describe(): Record<string, unknown> {
    return {
      poolDir: this.pools.directory,
      ...this.stats,
      ...(this.lastError ? { lastError: this.lastError } : {}),
    };
  }
}
