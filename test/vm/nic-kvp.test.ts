/**
 * KVP and the guest's NIC: the auto pool reports the addresses of the
 * guest's eth0 (from its namespace, not the machine's), GET_IP_INFO answers
 * for it by MAC, and SET_IP_INFO reconfigures it.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ip, linkAddresses } from '../../src/vm/network/ip.ts';
import { hvkit } from '../cli/hvkit.ts';
import { requireRoot } from '../devices/net/namespaces.ts';
import { boot, stopVm, type Vm } from './nic-vm.ts';

const pid = process.pid;
const MAC = '00:15:5d:00:00:42';

describe("KVP reports and sets the guest NIC's addresses", () => {
  it('auto pool, GET_IP_INFO and SET_IP_INFO act on eth0 in the guest namespace', async () => {
    requireRoot();
    const dir = await mkdtemp(join(tmpdir(), 'hvkit-kvpnic-'));
    const guestNs = `hvkt-kg-${pid}`;
    let vm: Vm | undefined;
    try {
      vm = await boot(
        dir,
        `kvp-${pid}`,
        {
          mac: MAC,
          host: { netns: `hvkt-kh-${pid}`, address: '192.0.2.1/24' },
          guest: { netns: guestNs, address: '192.0.2.2/24', gateway: '192.0.2.1' },
        },
        [{ type: 'ic', services: ['kvp'] }],
      );
      const socket = vm.socket;
      const kvp = (...args: string[]) => hvkit(['kvp', ...args, '--socket', socket]);
      // The auto pool: the guest's NIC's address, and not the machine's own interfaces'.
      let v4 = '';
      for (let i = 0; i < 30 && !v4.includes('192.0.2.2'); i++) {
        v4 = (await kvp('get', 'NetworkAddressIPv4', '--pool', '2')).stdout.trim();
        if (!v4.includes('192.0.2.2')) await new Promise((r) => setTimeout(r, 500));
      }
      assert.equal(v4, '192.0.2.2');
      const got = await kvp('ip', MAC, '--json');
      assert.equal(got.code, 0, got.stderr);
      const info = JSON.parse(got.stdout) as Record<string, string>;
      assert.match(info.ipAddr ?? '', /^192\.0\.2\.2(;|$)/);
      assert.match(info.subNet ?? '', /^255\.255\.255\.0(;|$)/);
      assert.equal(info.gateway, '192.0.2.1');
      const set = await kvp('ip', MAC, '--set', '192.0.2.9/24', '--gateway', '192.0.2.1');
      assert.equal(set.code, 0, set.stderr);
      let addresses: string[] = [];
      for (let i = 0; i < 40 && !addresses.includes('192.0.2.9'); i++) {
        addresses = (await linkAddresses('eth0', guestNs)).map((a) => a.address);
        if (!addresses.includes('192.0.2.9')) await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(addresses.includes('192.0.2.9'), `eth0 has ${addresses.join(', ')}`);
      assert.ok(!addresses.includes('192.0.2.2'), 'the old address went');
      let route = '';
      for (let i = 0; i < 40 && !route.includes('via 192.0.2.1'); i++) {
        route = await ip(['route', 'show', 'default'], guestNs);
        if (!route.includes('via 192.0.2.1')) await new Promise((r) => setTimeout(r, 100));
      }
      assert.match(route, /default via 192\.0\.2\.1/);
      const after = JSON.parse((await kvp('ip', MAC, '--json')).stdout) as Record<string, string>;
      assert.match(after.ipAddr ?? '', /192\.0\.2\.9/);
      await stopVm(vm);
      vm = undefined;
    } finally {
      vm?.kill('SIGKILL');
      await vm?.exit.catch(() => {});
      await rm(dir, { recursive: true, force: true });
    }
  });
});
