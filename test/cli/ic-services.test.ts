import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import {
  createReadStream,
  existsSync,
  mkdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { mountTmpfs } from '../real-tools.ts';
import { hvkit, runDir, startVm } from './hvkit.ts';

const name = 'ic-services';
const dir = join(runDir, name);
const poolDir = join(dir, 'pools');
const guestRoot = join(dir, 'guest');
const hookLog = join(dir, 'hooks.log');
const hangFlag = join(dir, 'hang');

/** An independent reader of hv_kvp_daemon pool files (512-byte key, 2048-byte value, UTF-8 C strings). */
function readPool(pool: number): Map<string, string> {
  const bytes = readFileSync(join(poolDir, `.kvp_pool_${pool}`));
  assert.equal(bytes.length % 2560, 0);
  const out = new Map<string, string>();
  for (let at = 0; at < bytes.length; at += 2560) {
    const key = bytes.subarray(at, at + 512);
    const value = bytes.subarray(at + 512, at + 2560);
    out.set(
      key.subarray(0, key.indexOf(0)).toString('utf8'),
      value.subarray(0, value.indexOf(0)).toString('utf8'),
    );
  }
  return out;
}

function sha256(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(path)
      .on('data', (d) => hash.update(d))
      .on('end', () => resolve(hash.digest('hex')))
      .on('error', reject);
  });
}

const cli = (args: string[]) => hvkit([...args, '--vm', name], { timeoutMs: 120_000 });

describe('integration services from the CLI', () => {
  let vm: Awaited<ReturnType<typeof startVm>>;
  /** Set while the 1 MiB tmpfs is mounted on guest/small. */
  let unmount: (() => void) | undefined;
  before(async () => {
    mkdirSync(join(guestRoot, 'small'), { recursive: true });
    const config = join(dir, 'vm.yaml');
    writeFileSync(
      config,
      [
        `name: ${name}`,
        'devices:',
        '  - type: ic',
        '    heartbeat_interval: 200ms',
        '    timesync: { guest_clock_offset: 2500ms, interval: 100ms }',
        `    kvp: { pool_dir: ${poolDir}, refresh: 1s }`,
        `    fcopy: { root: ${guestRoot} }`,
        '    vss:',
        `      freeze: ["echo freeze-1 >> ${hookLog}", "if [ -e ${hangFlag} ]; then sleep 60; fi; echo freeze-2 >> ${hookLog}"]`,
        `      thaw: ["echo thaw >> ${hookLog}"]`,
        '      timeout: 500ms',
        '',
      ].join('\n'),
    );
    vm = await startVm([config], 180_000);
  });
  after(async () => {
    vm?.kill();
    await vm?.exit;
    unmount?.();
    rmSync(dir, { recursive: true, force: true });
  });

  it('kvp set/get/delete/list in every pool, non-ASCII included; the pool files parse', async () => {
    await Promise.all(
      [0, 1, 2, 3, 4].map(async (pool) => {
        const key = `ключ-${pool}-鍵`;
        const value = `значение ${pool} ✓ 🎉`;
        const set = await cli(['kvp', 'set', key, value, '--pool', String(pool)]);
        assert.equal(set.code, 0, set.stderr);
        const get = await cli(['kvp', 'get', key, '--pool', String(pool)]);
        assert.equal(get.code, 0, get.stderr);
        assert.equal(get.stdout, `${value}\n`);
        const list = await cli(['kvp', 'list', '--pool', String(pool), '--json']);
        assert.equal(list.code, 0, list.stderr);
        assert.ok(
          (JSON.parse(list.stdout) as { key: string; value: string }[]).some(
            (e) => e.key === key && e.value === value,
          ),
        );
        assert.equal(readPool(pool).get(key), value, `pool ${pool} file`);
        const del = await cli(['kvp', 'delete', key, '--pool', String(pool)]);
        assert.equal(del.code, 0, del.stderr);
        assert.equal(readPool(pool).has(key), false);
      }),
    );
    const gone = await cli(['kvp', 'get', 'ключ-3-鍵', '--pool', '3']);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /pool 3 has no key "ключ-3-鍵"/);
    const numbers = await cli(['kvp', 'set', 'count', '4294967295', '--type', 'u32']);
    assert.equal(numbers.code, 0, numbers.stderr);
    assert.equal((await cli(['kvp', 'get', 'count'])).stdout, '4294967295\n');
    const bad = await cli(['kvp', 'list', '--pool', '5']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /pools are 0 \(external\)/);
  });

  it('status shows heartbeat, time offset, and the guest OS and addresses from KVP', async () => {
    const list = await cli(['kvp', 'list', '--pool', '2']);
    assert.equal(list.code, 0, list.stderr);
    const auto = new Map(
      list.stdout
        .trim()
        .split('\n')
        .map((l) => l.split(/=(.*)/s).slice(0, 2) as [string, string]),
    );
    const osName = /^NAME="?([^"\n]*)"?$/m.exec(readFileSync('/etc/os-release', 'utf8'))?.[1];
    assert.equal(auto.get('OSName'), osName);
    const status = await cli(['status']);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /host ic: heartbeat healthy \(\d+\/\d+ answered, every 0\.2s\)/);
    assert.ok(status.stdout.includes(`guest ${osName}`), status.stdout);
    assert.ok(
      status.stdout.includes(
        `IPs ${[auto.get('NetworkAddressIPv4'), auto.get('NetworkAddressIPv6')].filter(Boolean).join(';') || 'none'}`,
      ),
    );
    const offset = /guest ic: .*time offset \+(\d+\.\d+) ms/.exec(status.stdout);
    assert.ok(offset, status.stdout);
    // Injected 2500 ms; measured across worker threads with 4.0 samples (tolerance 5 ms).
    assert.ok(Math.abs(Number(offset[1]) - 2500) < 5, `offset ${offset[1]} ms`);
  });

  it('copy-file: 100 MiB arrive byte-identical; overwrite is refused without the flag', async () => {
    const src = join(dir, 'random.bin');
    writeFileSync(src, randomBytes(100 * 1024 * 1024));
    const copy = await cli([
      'copy-file',
      src,
      '--to-guest',
      '/incoming/random.bin',
      '--create-path',
    ]);
    assert.equal(copy.code, 0, copy.stderr);
    assert.match(copy.stdout, /copied 104857600 bytes to the guest's \/incoming\/random\.bin/);
    const dest = join(guestRoot, 'incoming', 'random.bin');
    assert.equal(await sha256(dest), await sha256(src));
    const again = await cli(['copy-file', src, '--to-guest', '/incoming/']);
    assert.equal(again.code, 1);
    assert.match(
      again.stderr,
      /\/incoming\/random\.bin already exists in the guest \(overwrite it with --overwrite\)/,
    );
    const small = join(dir, 'small.txt');
    writeFileSync(small, 'replacement\n');
    const over = await cli([
      'copy-file',
      small,
      '--to-guest',
      '/incoming/random.bin',
      '--overwrite',
    ]);
    assert.equal(over.code, 0, over.stderr);
    assert.equal(readFileSync(dest, 'utf8'), 'replacement\n');
    rmSync(src);
    const nodir = await cli(['copy-file', small, '--to-guest', '/missing/dir/x']);
    assert.equal(nodir.code, 1);
    assert.match(nodir.stderr, /no such directory .*--create-path/);
  });

  it('copy-file: a full destination (1 MiB tmpfs) reports the error and leaves no partial file', async () => {
    unmount = mountTmpfs(join(guestRoot, 'small'), '1m');
    const src = join(dir, 'four.bin');
    writeFileSync(src, randomBytes(4 * 1024 * 1024));
    const copy = await cli(['copy-file', src, '--to-guest', '/small/four.bin']);
    assert.equal(copy.code, 1);
    assert.match(copy.stderr, /hvkit: the guest ran out of space writing \/small\/four\.bin/);
    assert.equal(existsSync(join(guestRoot, 'small', 'four.bin')), false);
  });

  it('backup freezes with the hooks in order and thaws; a hung hook times out and thaws', async () => {
    const ok = await cli(['backup']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /backup done: the guest froze in \d+ ms/);
    assert.deepEqual(readFileSync(hookLog, 'utf8').trim().split('\n'), [
      'freeze-1',
      'freeze-2',
      'thaw',
    ]);
    writeFileSync(hangFlag, '');
    rmSync(hookLog);
    const hung = await cli(['backup']);
    assert.equal(hung.code, 1);
    assert.match(
      hung.stderr,
      /hvkit: the guest could not freeze \(it thawed again\): it answered E_FAIL/,
    );
    assert.deepEqual(readFileSync(hookLog, 'utf8').trim().split('\n'), ['freeze-1', 'thaw']);
    const status = await cli(['status']);
    assert.match(status.stdout, /not frozen/);
    assert.match(status.stdout, /backup failed/);
  });
});
