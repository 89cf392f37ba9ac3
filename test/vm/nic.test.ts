/**
 * The NIC end to end: `hvkit run` with a NIC whose host side is a TAP in a
 * namespace and whose guest side is eth0 in another, joined only by hvkit;
 * the real Linux stack on both sides (ping, iperf3, curl, tshark).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { callVm } from '../../src/cli/control-client.ts';
import { netnsExists } from '../../src/vm/network/ip.ts';
import { requireRoot, serveFile, TestNamespaces, waitForPort } from '../devices/net/namespaces.ts';
import { boot, guestExec, stopVm, type Vm } from './nic-vm.ts';

const exec = promisify(execFile);
const pid = process.pid;

describe('a VM with a NIC between two namespaces', () => {
  const spaces = new TestNamespaces();
  let dir = '';
  let vm: Vm | undefined;
  const hostNs = `hvkt-vh-${pid}`;
  const guestNs = `hvkt-vg-${pid}`;

  before(async () => {
    requireRoot();
    dir = await mkdtemp(join(tmpdir(), 'hvkit-nic-'));
    vm = await boot(dir, `nic-${pid}`, {
      channels: 2,
      host: { netns: hostNs, address: '192.0.2.1/24' },
      guest: { netns: guestNs, address: '192.0.2.2/24' },
    });
  });

  after(async () => {
    vm?.kill('SIGKILL');
    await vm?.exit.catch(() => {});
    await spaces.removeAll();
    await rm(dir, { recursive: true, force: true });
  });

  it('pings the host side 20 times without loss', async () => {
    assert.ok(vm);
    const out = await guestExec(vm, ['ping', '-c', '20', '-i', '0.05', '-W', '2', '192.0.2.1']);
    assert.match(out, /20 packets transmitted, 20 received, 0% packet loss/);
  });

  it('runs iperf3 TCP both ways', async () => {
    assert.ok(vm);
    for (const reverse of [false, true]) {
      const server = spaces.spawn(hostNs, 'iperf3', ['-s', '-B', '192.0.2.1']);
      try {
        await waitForPort(spaces, guestNs, '192.0.2.1', 5201);
        const out = await guestExec(vm, [
          'iperf3',
          '-c',
          '192.0.2.1',
          '-t',
          '2',
          '-J',
          ...(reverse ? ['-R'] : []),
        ]);
        const bps = JSON.parse(out).end?.sum_received?.bits_per_second as number | undefined;
        assert.ok(bps && bps > 1e6, `${reverse ? 'host to guest' : 'guest to host'}: ${bps} bit/s`);
      } finally {
        server.kill();
      }
    }
    const status = (await callVm(vm.socket, 'status')) as {
      host: { devices: Record<string, unknown>[] };
    };
    const nic = status.host.devices.find((d) => d.type === 'nic');
    assert.ok(nic && (nic.txLso as number) > 0, 'large sends crossed as LSOv2');
  });

  it('fetches a 50 MiB file with curl, sha256 intact', async () => {
    assert.ok(vm);
    const served = await serveFile(spaces, hostNs, '192.0.2.1', 8080, 50 * 1024 * 1024);
    try {
      await waitForPort(spaces, guestNs, '192.0.2.1', 8080);
      const out = await guestExec(vm, [
        'sh',
        '-c',
        'curl -sS --fail http://192.0.2.1:8080/file | sha256sum',
      ]);
      assert.equal(out.split(' ')[0], served.sha256);
    } finally {
      await served.close();
    }
  });

  it('removes the namespaces it made when it stops', async () => {
    assert.ok(vm);
    assert.equal(await netnsExists(guestNs), true);
    await stopVm(vm);
    vm = undefined;
    assert.equal(await netnsExists(guestNs), false);
    assert.equal(await netnsExists(hostNs), false);
  });
});

describe("a NIC's pcapng capture", () => {
  it('opens in tshark with the ICMP and TCP flows and no bad checksum', async () => {
    requireRoot();
    const dir = await mkdtemp(join(tmpdir(), 'hvkit-pcap-'));
    const spaces = new TestNamespaces();
    const hostNs = `hvkt-ch-${pid}`;
    const guestNs = `hvkt-cg-${pid}`;
    const capture = join(dir, 'nic0.pcapng');
    const vm = await boot(dir, `cap-${pid}`, {
      host: { netns: hostNs, address: '192.0.2.1/24' },
      guest: { netns: guestNs, address: '192.0.2.2/24' },
      capture,
    });
    try {
      await guestExec(vm, ['ping', '-c', '5', '-i', '0.05', '192.0.2.1']);
      const served = await serveFile(spaces, hostNs, '192.0.2.1', 8080, 1024 * 1024);
      try {
        await waitForPort(spaces, guestNs, '192.0.2.1', 8080);
        await guestExec(vm, ['sh', '-c', 'curl -sS --fail http://192.0.2.1:8080/file | sha256sum']);
      } finally {
        await served.close();
      }
      await stopVm(vm);
      assert.ok((await stat(capture)).size > 1024 * 1024);
      const tshark = (filter: string) =>
        exec(
          'tshark',
          [
            '-r',
            capture,
            '-o',
            'ip.check_checksum:TRUE',
            '-o',
            'tcp.check_checksum:TRUE',
            '-o',
            'udp.check_checksum:TRUE',
            '-Y',
            filter,
            '-T',
            'fields',
            '-e',
            'frame.number',
          ],
          { maxBuffer: 64 * 1024 * 1024 },
        ).then((r) => r.stdout.split('\n').filter(Boolean).length);
      assert.ok((await tshark('icmp.type == 8')) >= 5, 'echo requests');
      assert.ok((await tshark('icmp.type == 0')) >= 5, 'echo replies');
      assert.ok((await tshark('tcp.port == 8080')) > 50, 'the HTTP flow');
      assert.ok(
        (await tshark('tcp.checksum.status == 1')) > 50,
        'TCP checksums tshark verified as good',
      );
      assert.equal(
        await tshark(
          'ip.checksum.status == 0 || tcp.checksum.status == 0 || udp.checksum.status == 0',
        ),
        0,
      );
    } finally {
      vm.kill('SIGKILL');
      await vm.exit.catch(() => {});
      await spaces.removeAll();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
