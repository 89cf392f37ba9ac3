/**
 * NICs through a VM's life: two VMs on one Linux bridge, a NIC added and
 * removed while iperf3 runs through it, and what a killed VM left behind
 * reclaimed at its next start.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { linkExists, netnsExists } from '../../src/vm/network/ip.ts';
import { hvkit } from '../cli/hvkit.ts';
import { requireRoot, TestNamespaces, waitForPort } from '../devices/net/namespaces.ts';
import { boot, guestExec, stopVm, type Vm } from './nic-vm.ts';

const pid = process.pid;

async function withDir<T>(run: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'hvkit-nicl-'));
  try {
    return await run(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function killAll(vms: (Vm | undefined)[]): Promise<unknown> {
  for (const vm of vms) vm?.kill('SIGKILL');
  return Promise.allSettled(vms.map((vm) => vm?.exit));
}

describe('NICs through a VM life', () => {
  it('joins two VMs on one bridge: they ping each other and run iperf3', async () => {
    requireRoot();
    await withDir(async (dir) => {
      const sw = `hvkt-sw-${pid}`;
      const bridge = `hvktbr${pid % 100000}`;
      const a = `hvkt-a-${pid}`;
      const b = `hvkt-b-${pid}`;
      let vmA: Vm | undefined;
      let vmB: Vm | undefined;
      try {
        vmA = await boot(dir, `a-${pid}`, {
          host: { netns: sw, bridge },
          guest: { netns: a, address: '192.0.2.11/24' },
        });
        vmB = await boot(dir, `b-${pid}`, {
          host: { netns: sw, bridge },
          guest: { netns: b, address: '192.0.2.12/24' },
        });
        const ping = await guestExec(vmA, [
          'ping',
          '-c',
          '5',
          '-i',
          '0.1',
          '-W',
          '2',
          '192.0.2.12',
        ]);
        assert.match(ping, /5 packets transmitted, 5 received, 0% packet loss/);
        const spaces = new TestNamespaces();
        const server = spaces.spawn(b, 'iperf3', ['-s', '-B', '192.0.2.12']);
        try {
          await waitForPort(spaces, a, '192.0.2.12', 5201);
          const out = await guestExec(vmA, ['iperf3', '-c', '192.0.2.12', '-t', '2', '-J']);
          const bps = JSON.parse(out).end?.sum_received?.bits_per_second as number | undefined;
          assert.ok(bps && bps > 1e6, `VM to VM at ${bps} bit/s`);
        } finally {
          server.kill();
          await spaces.removeAll();
        }
        // The first VM to stop leaves the bridge to the other; the last removes it.
        await stopVm(vmA);
        vmA = undefined;
        assert.equal(await linkExists(bridge, sw), true, 'the bridge stays while B uses it');
        await stopVm(vmB);
        vmB = undefined;
        assert.equal(await netnsExists(sw), false, 'the shared namespace went with the last VM');
      } finally {
        await killAll([vmA, vmB]);
      }
    });
  });

  it('adds and removes a NIC under iperf3 load, and adds it again', async () => {
    requireRoot();
    await withDir(async (dir) => {
      const hostNs = `hvkt-hh-${pid}`;
      const guestNs = `hvkt-hg-${pid}`;
      const spaces = new TestNamespaces();
      let vm: Vm | undefined;
      try {
        vm = await boot(dir, `hot-${pid}`, {
          host: { backend: 'loopback' },
          guest: { netns: guestNs, address: '198.51.100.2/24' },
        });
        const attach = () =>
          hvkit([
            'nic',
            'attach',
            '--socket',
            vm!.socket,
            '--host-netns',
            hostNs,
            '--host-address',
            '192.0.2.1/24',
            '--netns',
            guestNs,
            '--address',
            '192.0.2.2/24',
          ]);
        const first = await attach();
        assert.equal(first.code, 0, first.stderr);
        assert.match(first.stdout, /nic1 .* attached: eth1 in namespace/);
        const server = spaces.spawn(hostNs, 'iperf3', ['-s', '-B', '192.0.2.1']);
        try {
          await waitForPort(spaces, guestNs, '192.0.2.1', 5201);
          // iperf3 itself waits minutes for a peer that went away: bound it; the flow's end is what counts.
          const argv = [
            'timeout',
            '20',
            'iperf3',
            '-c',
            '192.0.2.1',
            '-t',
            '6',
            '--snd-timeout',
            '3000',
          ];
          const load = hvkit(['exec', '--socket', vm.socket, '--', ...argv], { timeoutMs: 60_000 });
          await new Promise((r) => setTimeout(r, 1500));
          const detach = await hvkit(['nic', 'detach', '1', '--socket', vm.socket]);
          assert.equal(detach.code, 0, detach.stderr);
          const flow = await load;
          // The flow fails (its interface went away) but nothing hangs: iperf3 returns, non-zero.
          assert.notEqual(flow.code, 0, 'iperf3 noticed its interface went away');
          assert.equal(await linkExists('eth1', guestNs), false, 'eth1 is gone from the guest');
        } finally {
          server.kill();
        }
        // The first NIC kept working, and the second comes back.
        const again = await attach();
        assert.equal(again.code, 0, again.stderr);
        const ping = await guestExec(vm, ['ping', '-c', '3', '-i', '0.1', '-W', '2', '192.0.2.1']);
        assert.match(ping, /3 packets transmitted, 3 received/);
        await stopVm(vm);
        vm = undefined;
        assert.equal(await netnsExists(hostNs), false);
      } finally {
        await killAll([vm]);
        await spaces.removeAll();
      }
    });
  });

  it("reclaims a killed VM's namespaces at its next start", async () => {
    requireRoot();
    await withDir(async (dir) => {
      const hostNs = `hvkt-rh-${pid}`;
      const guestNs = `hvkt-rg-${pid}`;
      const nic = {
        host: { netns: hostNs, address: '192.0.2.1/24' },
        guest: { netns: guestNs, address: '192.0.2.2/24' },
      };
      let vm: Vm | undefined = await boot(dir, `re-${pid}`, nic);
      try {
        vm.kill('SIGKILL');
        await vm.exit.catch(() => {});
        assert.equal(await netnsExists(guestNs), true, 'a killed VM cannot clean up');
        vm = await boot(dir, `re-${pid}`, nic);
        const ping = await guestExec(vm, ['ping', '-c', '2', '-i', '0.1', '-W', '2', '192.0.2.1']);
        assert.match(ping, /2 received/);
        await stopVm(vm);
        vm = undefined;
        assert.equal(await netnsExists(guestNs), false);
        assert.equal(await netnsExists(hostNs), false);
      } finally {
        await killAll([vm]);
      }
    });
  });
});
