import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { MemoryDisk } from '../../src/block/memory-disk.ts';
import { openDiskSource } from '../../src/nbd/open-disk.ts';
import { NbdServer } from '../../src/nbd/server/server.ts';

describe('openDiskSource: what a config or a control command names as a disk', () => {
  it('connects an nbd+tcp:// URI to its server instead of taking it for a file path', async (t) => {
    const served = new MemoryDisk(1024 * 1024);
    served.data.fill(0x5c, 0, 512);
    const server = new NbdServer({ exports: [{ name: 'd', device: served }] });
    const { address } = await server.listen({ port: 0 });
    t.after(() => server.close());
    assert.equal(address.transport, 'tcp');
    const port = address.transport === 'tcp' ? address.port : 0;
    for (const scheme of ['nbd', 'nbd+tcp']) {
      const uri = `${scheme}://127.0.0.1:${port}/d`;
      const { device, source } = await openDiskSource({ path: uri, readOnly: true }, '/nowhere');
      try {
        assert.equal(source, uri, 'a URI is not resolved against the base directory');
        assert.equal(device.size, 1024 * 1024);
        const sector = new Uint8Array(512);
        await device.read(0, sector);
        assert.ok(sector.every((b) => b === 0x5c));
      } finally {
        await device.close();
      }
    }
  });

  it('resolves a relative image path against the base directory', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hvkit-open-'));
    try {
      writeFileSync(join(dir, 'disk.raw'), Buffer.alloc(64 * 1024, 7));
      const { device, source } = await openDiskSource({ path: 'disk.raw', readOnly: true }, dir);
      assert.equal(source, join(dir, 'disk.raw'));
      assert.equal(device.format, 'raw');
      await device.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('makes a scratch disk in memory and refuses a source with neither', async () => {
    const { device, source } = await openDiskSource({ memory: 4096, readOnly: false });
    assert.equal(source, 'memory');
    assert.equal(device.size, 4096);
    await assert.rejects(openDiskSource({ readOnly: false }), /a path or a memory size/);
  });
});
