/**
 * Run inside a test's network namespace (`ip netns exec`): a host KVP
 * service asks the guest KVP service for the IP info of the adapter with the
 * MAC given as argv[2]; prints the answer as JSON.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KvpPools } from '../../../src/devices/ic/kvp/pool-file.ts';
import { KvpService } from '../../../src/devices/ic/kvp/vsc.ts';
import { KvpVsp } from '../../../src/devices/ic/kvp/vsp.ts';
import { IcDriver } from '../../../src/devices/ic/vsc.ts';
import { makeBus } from '../../vmbus/harness.ts';

const dir = mkdtempSync(join(tmpdir(), 'hvkit-kvp-probe-'));
const bus = makeBus();
const vsp = new KvpVsp();
try {
  bus.host.addDevice(vsp);
  bus.client.registerDriver(new IcDriver(new KvpService(new KvpPools(dir))));
  await bus.client.connect();
  await bus.client.requestOffers();
  await vsp.whenReady();
  const info = await vsp.getIpInfo(process.argv[2]!);
  process.stdout.write(JSON.stringify(info));
} finally {
  vsp.dispose();
  await bus.close();
  rmSync(dir, { recursive: true, force: true });
}
