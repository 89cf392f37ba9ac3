import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { machine, networkInterfaces, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { KvpPools } from '../../../src/devices/ic/kvp/pool-file.ts';
import { KvpService } from '../../../src/devices/ic/kvp/vsc.ts';
import { KvpVsp } from '../../../src/devices/ic/kvp/vsp.ts';
import { AddrFamily, KVP_AUTO_KEYS } from '../../../src/devices/ic/protocol.ts';
import { IcDriver } from '../../../src/devices/ic/vsc.ts';
import { TOOL_PATH } from '../../real-tools.ts';
import { makeBus, until } from '../../vmbus/harness.ts';

/**
 * An independent reader of hv_kvp_daemon's pool files: 2560-byte records,
 * a 512-byte key then a 2048-byte value, each a NUL-terminated UTF-8 string.
 */
function readPoolFile(path: string): [string, string][] {
  const bytes = readFileSync(path);
  assert.equal(bytes.length % 2560, 0, `${path} is a whole number of records`);
  const out: [string, string][] = [];
  for (let at = 0; at < bytes.length; at += 2560) {
    const key = bytes.subarray(at, at + 512);
    const value = bytes.subarray(at + 512, at + 2560);
    out.push([
      key.subarray(0, key.indexOf(0)).toString('utf8'),
      value.subarray(0, value.indexOf(0)).toString('utf8'),
    ]);
  }
  return out;
}

/** A record written by hand, as another program (or an older daemon) would leave it. */
function record(key: string, value: string): Buffer {
  const out = Buffer.alloc(2560);
  out.write(key, 0, 'utf8');
  out.write(value, 512, 'utf8');
  return out;
}

async function setup(t: import('node:test').TestContext, prepare?: (dir: string) => void) {
  const dir = mkdtempSync(join(tmpdir(), 'hvkit-kvp-'));
  prepare?.(dir);
  const bus = makeBus();
  const vsp = new KvpVsp();
  t.after(async () => {
    vsp.dispose();
    await bus.close();
    rmSync(dir, { recursive: true, force: true });
  });
  bus.host.addDevice(vsp);
  const service = new KvpService(new KvpPools(dir));
  const driver = new IcDriver(service);
  bus.client.registerDriver(driver);
  await bus.client.connect();
  await bus.client.requestOffers();
  await vsp.whenReady();
  return { dir, vsp, service, driver };
}

describe('KVP', () => {
  it('sets, gets, deletes and enumerates in every pool; non-ASCII round-trips; the files parse', async (t) => {
    const { dir, vsp } = await setup(t);
    assert.equal(vsp.versions?.service, 0x40000);
    for (let pool = 0; pool < 5; pool++) {
      const key = `ключ-${pool}-鍵-🔑`;
      const value = `значение ${pool} — 値 ✓ 🎉`;
      await vsp.set(pool, key, value);
      await vsp.set(pool, `plain${pool}`, 'ascii');
      assert.equal(await vsp.get(pool, key), value);
      const listed = await vsp.list(pool);
      assert.ok(
        listed.some((e) => e.key === key && e.value === value),
        `pool ${pool} lists it`,
      );
      const onDisk = readPoolFile(join(dir, `.kvp_pool_${pool}`));
      assert.ok(
        onDisk.some(([k, v]) => k === key && v === value),
        `pool ${pool} file`,
      );
      assert.equal(await vsp.delete(pool, `plain${pool}`), true);
      assert.equal(await vsp.get(pool, `plain${pool}`), undefined);
      assert.equal(await vsp.delete(pool, `plain${pool}`), false, 'nothing left to delete');
      assert.ok(!readPoolFile(join(dir, `.kvp_pool_${pool}`)).some(([k]) => k === `plain${pool}`));
    }
    // A key set in one pool is not in another.
    assert.equal(await vsp.get(0, 'ключ-1-鍵-🔑'), undefined);
    // Replacing keeps one record.
    await vsp.set(1, 'ключ-1-鍵-🔑', 'new');
    assert.equal(
      readPoolFile(join(dir, '.kvp_pool_1')).filter(([k]) => k === 'ключ-1-鍵-🔑').length,
      1,
    );
    assert.equal(await vsp.get(1, 'ключ-1-鍵-🔑'), 'new');
  });

  it('stores REG_U32 and REG_U64 values as decimal text, as Linux does', async (t) => {
    const { dir, vsp } = await setup(t);
    await vsp.set(0, 'n32', { u32: 4_000_000_000 });
    await vsp.set(0, 'n64', { u64: 18_446_744_073_709_551_615n });
    // In the pool file: the digits as text (hv_kvp_daemon's sprintf of the number).
    const file = new Map(readPoolFile(join(dir, '.kvp_pool_0')));
    assert.equal(file.get('n32'), '4000000000');
    assert.equal(file.get('n64'), '18446744073709551615');
    assert.equal(await vsp.get(0, 'n32'), '4000000000');
    assert.equal(await vsp.get(0, 'n64'), '18446744073709551615');
  });

  it('reads records another program wrote, in file order', async (t) => {
    const { vsp } = await setup(t, (dir) => {
      writeFileSync(
        join(dir, '.kvp_pool_0'),
        Buffer.concat([record('first', 'one'), record('second', 'два')]),
      );
    });
    assert.deepEqual(await vsp.list(0), [
      { key: 'first', value: 'one' },
      { key: 'second', value: 'два' },
    ]);
  });

  it('refuses what does not fit: the host checks the wire limits, the guest the record sizes', async (t) => {
    const { vsp, service } = await setup(t);
    await assert.rejects(
      vsp.set(0, 'k'.repeat(256), 'v'),
      /key is 514 bytes in UTF-16 with its NUL; KVP allows 512/,
    );
    await assert.rejects(vsp.set(0, 'k', 'v'.repeat(1024)), /value is 2050 bytes/);
    await assert.rejects(vsp.set(7, 'k', 'v'), /pool 7 does not exist/);
    // 255 three-byte characters fit the wire (512 bytes) but not the 512-byte UTF-8 record.
    await assert.rejects(vsp.set(0, '鍵'.repeat(255), 'v'), /answered E_FAIL/);
    assert.match(service.lastError, /key of 765 UTF-8 bytes does not fit/);
  });

  it('publishes the real OS data and the guest addresses in the auto pool', async (t) => {
    const { dir, vsp } = await setup(t);
    await until(() => vsp.autoReadAt > 0, 5000, 'auto pool read');
    const auto = vsp.auto;
    assert.deepEqual(Object.keys(auto), [...KVP_AUTO_KEYS]);
    const osRelease = readFileSync('/etc/os-release', 'utf8');
    const name = /^NAME="?([^"\n]*)"?$/m.exec(osRelease)?.[1];
    const versionId = /^VERSION_ID="?([^"\n]*)"?$/m.exec(osRelease)?.[1];
    assert.equal(auto.OSName, name);
    assert.equal(auto.OSMajorVersion, versionId ?? '');
    assert.equal(auto.OSBuildNumber, release());
    assert.equal(auto.OSVersion, release().split('-')[0]);
    assert.equal(auto.ProcessorArchitecture, machine());
    assert.equal(auto.IntegrationServicesVersion, '3.1');
    const v4 = Object.values(networkInterfaces())
      .flat()
      .filter((a) => a && !a.internal && a.family === 'IPv4')
      .map((a) => a!.address);
    assert.deepEqual(
      auto.NetworkAddressIPv4?.split(';').filter((s) => s),
      v4,
    );
    assert.ok(!auto.NetworkAddressIPv4?.includes('127.0.0.1'), 'no loopback');
    // The same records are in the pool 2 file.
    const file = new Map(readPoolFile(join(dir, '.kvp_pool_2')));
    assert.equal(file.get('OSName'), name);
    assert.equal(file.get('NetworkAddressIPv4'), auto.NetworkAddressIPv4);
  });

  it('answers GET_IP_INFO for an adapter by MAC, from inside a network namespace of its own', async () => {
    // A namespace with one adapter (a veth whose peer stays inside) whose MAC, addresses and gateway the
    // test chose (nothing outside the namespace is touched).
    if (process.getuid?.() !== 0) {
      assert.fail(
        'this test creates a network namespace and needs root (npm test runs as root in CI)',
      );
    }
    const ns = `hvkit-kvp-${process.pid}`;
    const ip = (...args: string[]) => execFileSync('ip', args, { env: { PATH: TOOL_PATH } });
    ip('netns', 'add', ns);
    try {
      ip(
        '-n',
        ns,
        'link',
        'add',
        'kvp0',
        'address',
        '02:15:5d:33:44:55',
        'type',
        'veth',
        'peer',
        'name',
        'kvp1',
      );
      ip('-n', ns, 'link', 'set', 'kvp1', 'up');
      ip('-n', ns, 'link', 'set', 'kvp0', 'up');
      ip('-n', ns, 'address', 'add', '198.51.100.7/24', 'dev', 'kvp0');
      ip('-n', ns, 'address', 'add', 'fd00:5::7/64', 'dev', 'kvp0', 'nodad');
      ip('-n', ns, 'route', 'add', 'default', 'via', '198.51.100.1');
      const out = execFileSync(
        'ip',
        [
          'netns',
          'exec',
          ns,
          process.execPath,
          '--import',
          'tsx',
          join(import.meta.dirname, 'ip-info-probe.ts'),
          '02-15-5D-33-44-55',
        ],
        { env: { ...process.env, PATH: TOOL_PATH }, timeout: 30_000 },
      );
      const info = JSON.parse(out.toString()) as {
        addrFamily: number;
        ipAddr: string;
        subNet: string;
        gateway: string;
      };
      // The adapter's addresses: ours, plus the IPv6 link-local one the kernel adds.
      const addrs = info.ipAddr.split(';');
      assert.ok(addrs.includes('198.51.100.7') && addrs.includes('fd00:5::7'), info.ipAddr);
      assert.deepEqual(
        addrs.filter((a) => a !== '198.51.100.7' && a !== 'fd00:5::7' && !a.startsWith('fe80:')),
        [],
        'nothing from another adapter',
      );
      assert.ok(info.subNet.split(';').includes('255.255.255.0'), info.subNet);
      assert.equal(info.addrFamily, AddrFamily.IPv4 | AddrFamily.IPv6);
      assert.ok(info.gateway.split(';').includes('198.51.100.1'), info.gateway);
    } finally {
      ip('netns', 'delete', ns);
    }
  });

  it('keeps a SET_IP_INFO configuration and answers GET_IP_INFO with it', async (t) => {
    const { dir, vsp } = await setup(t);
    const adapter = '{4a5bd2a8-62b1-4d7a-8d0f-2f2cc0b7a1c3}';
    await vsp.setIpInfo({
      adapterId: adapter,
      addrFamily: AddrFamily.IPv4 | AddrFamily.IPv6,
      dhcpEnabled: false,
      ipAddr: '10.1.2.3;fd00::5',
      subNet: '255.255.255.0;/64',
      gateway: '10.1.2.1',
      dns: '10.1.2.53',
    });
    const ifcfg = readFileSync(join(dir, 'ifcfg-_4a5bd2a8-62b1-4d7a-8d0f-2f2cc0b7a1c3_'), 'utf8');
    assert.match(ifcfg, /^BOOTPROTO=none$/m);
    assert.match(ifcfg, /^IPADDR0=10\.1\.2\.3$/m);
    assert.match(ifcfg, /^NETMASK0=255\.255\.255\.0$/m);
    assert.match(ifcfg, /^IPV6ADDR=fd00::5$/m);
    assert.match(ifcfg, /^GATEWAY=10\.1\.2\.1$/m);
    assert.match(ifcfg, /^DNS1=10\.1\.2\.53$/m);
    const back = await vsp.getIpInfo(adapter);
    assert.equal(back.ipAddr, '10.1.2.3;fd00::5');
    assert.equal(back.subNet, '255.255.255.0;/64');
    assert.equal(back.gateway, '10.1.2.1');
    assert.equal(back.dns, '10.1.2.53');
    assert.equal(back.addrFamily, AddrFamily.IPv4 | AddrFamily.IPv6);
    await assert.rejects(vsp.getIpInfo('02:00:00:00:00:99'), /answered E_FAIL/);
  });
});
