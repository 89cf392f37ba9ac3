import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { StorvspDevice } from '../../src/devices/storvsc/host/storvsp.ts';
import { command, type HostContext } from '../../src/vm/device-kind.ts';
import { scsiKind } from '../../src/vm/devices/scsi.ts';

describe('control command arguments', () => {
  it('are checked by the schema before the command runs, with the field and the reason', async () => {
    let ran = 0;
    const handler = command(z.object({ lun: z.number().int().min(0), ro: z.boolean() }), () => {
      ran++;
      return 'done';
    });
    assert.equal(await handler({ lun: 3, ro: true }), 'done');
    assert.throws(() => handler({ lun: -1, ro: true }), /invalid arguments: lun: .*>=0/);
    assert.throws(() => handler({ lun: 1 }), /invalid arguments: ro: /);
    assert.equal(ran, 1, 'refused arguments never reach the command');
  });

  it('scsi-attach and scsi-detach act on the controllers the kind created', async () => {
    const logs: string[] = [];
    const context = { log: (m: string) => logs.push(m) } as unknown as HostContext;
    const vsp = new StorvspDevice();
    const parts = [
      {
        index: 0,
        vsp,
        devices: [vsp],
        status: () => ({ type: 'scsi', summary: '' }),
        close: async () => {},
      },
    ];
    const commands = scsiKind.hostCommands!(context, parts);
    const attach = commands['scsi-attach']!;
    const detach = commands['scsi-detach']!;
    await assert.rejects(
      async () => attach({ path: 'nbd://127.0.0.1:1/', lun: 300 }),
      /controller 0: LUN 300 is not an integer in 0\.\.254/,
    );
    await assert.rejects(async () => attach({ path: '' }), /invalid arguments: path: /);
    await assert.rejects(
      async () => attach({ path: '/x', controller: 2 }),
      /no SCSI controller 2; this VM has 0/,
    );
    await assert.rejects(async () => detach({}), /invalid arguments: lun: /);
    await assert.rejects(async () => detach({ lun: 5 }), /no disk is attached at LUN 5/);
    const none = scsiKind.hostCommands!(context, []);
    await assert.rejects(
      async () => none['scsi-detach']!({ lun: 0 }),
      /this VM has no SCSI controller/,
    );
  });
});
