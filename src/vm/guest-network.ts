/**
 * The guest's network as its other devices see it: the interfaces its NICs
 * put in their namespaces, with the addresses and gateways found there
 * (refreshed by the NIC kind), and the configuring of one of them by MAC —
 * what KVP's auto pool, GET_IP_INFO and SET_IP_INFO act on.
 */
import type { IpInfo, NetInterface } from '../devices/ic/kvp/ip-info.ts';
import { maskPrefix, normalizeMac } from '../devices/ic/kvp/ip-info.ts';
import {
  addAddress,
  addDefaultRoute,
  defaultGateways,
  flushAddresses,
  linkAddresses,
} from './network/ip.ts';

export interface GuestLink {
  readonly mac: string;
  readonly name: string;
  readonly netns: string;
}

export class GuestNetwork {
  private readonly links = new Map<string, GuestLink>();
  private snapshot: NetInterface[] = [];

  /** A NIC's interface appeared (or went: `remove`). */
  add(link: GuestLink): void {
    this.links.set(normalizeMac(link.mac) ?? link.mac, link);
  }

  remove(mac: string): void {
    this.links.delete(normalizeMac(mac) ?? mac);
    this.snapshot = this.snapshot.filter((n) => normalizeMac(n.mac) !== normalizeMac(mac));
  }

  /** The interfaces as last read from their namespaces. */
  interfaces(): readonly NetInterface[] {
    return this.snapshot;
  }

  /** Reads every interface's addresses and its namespace's default gateways again. */
  async refresh(): Promise<void> {
    const out: NetInterface[] = [];
    for (const [mac, link] of this.links) {
      try {
        const addresses = (await linkAddresses(link.name, link.netns)).map((a) => ({
          family: a.family === 'inet' ? ('IPv4' as const) : ('IPv6' as const),
          address: a.address,
          prefixLength: a.prefixLength,
        }));
        out.push({ mac, name: link.name, addresses, gateways: await defaultGateways(link.netns) });
      } catch {
        // The interface is going away.
      }
    }
    this.snapshot = out;
  }

  /** Gives the interface with this MAC the addresses and gateway of a SET_IP_INFO. */
  async configure(info: IpInfo): Promise<void> {
    const mac = normalizeMac(info.adapterId);
    const link = mac ? this.links.get(mac) : undefined;
    if (!link) throw new Error(`no guest interface has MAC ${info.adapterId}`);
    const ips = info.ipAddr
      .split(';')
      .map((s) => s.trim())
      .filter(Boolean);
    const masks = info.subNet.split(';').map((s) => s.trim());
    await flushAddresses(link.name, link.netns);
    for (const [i, address] of ips.entries()) {
      const prefix = maskPrefix(masks[i] ?? '') ?? (address.includes(':') ? 64 : 24);
      await addAddress(link.name, `${address}/${prefix}`, link.netns);
    }
    const gateway = info.gateway
      .split(';')
      .map((s) => s.trim())
      .find(Boolean);
    if (gateway) await addDefaultRoute(gateway, link.netns);
    await this.refresh();
  }
}
