/** The echo test device as a VM device kind: offered by the host, exercised by the guest. */
import { z } from 'zod';
import { EchoTraffic } from '../../devices/echo/traffic.ts';
import { EchoDriver } from '../../devices/echo/vsc.ts';
import { EchoVsp } from '../../devices/echo/vsp.ts';
import type { DeviceKind } from '../device-kind.ts';
import { sizeSchema } from '../units.ts';

export const echoSchema = z
  .object({
    type: z.literal('echo'),
    /** Echo requests per second the guest sends (0 = none). */
    rate: z.number().int().min(0).max(1_000_000).default(200),
    /** Payload bytes per request. */
    payload: z
      .number()
      .int()
      .min(0)
      .max(16 * 1024)
      .default(256),
    /** Ring size of each direction, including its 4 KiB header page. */
    ring: sizeSchema.default(64 * 1024),
  })
  .strict();

export type EchoConfig = z.output<typeof echoSchema>;

export const echoKind: DeviceKind<EchoConfig> = {
  type: 'echo',
  schema: echoSchema,
  async createHost() {
    const vsp = new EchoVsp();
    return {
      devices: [vsp],
      status: () => {
        const { echoed, sunk, ignored } = vsp.stats;
        return {
          type: 'echo',
          summary: `echo: ${echoed} echoed, ${sunk} sunk, ${ignored} ignored`,
          ...vsp.stats,
        };
      },
      close: async () => {},
    };
  },
  async createGuest(configs, { client }) {
    const ring = Math.max(...configs.map((c) => c.ring));
    const driver = new EchoDriver(ring);
    const traffic: EchoTraffic[] = [];
    driver.onBound = (echo) => {
      const config = configs[traffic.length % configs.length]!;
      const t = new EchoTraffic(echo, config.rate, config.payload);
      traffic.push(t);
      t.start();
    };
    client.registerDriver(driver);
    return {
      status: () => {
        const sum = (k: keyof (typeof traffic)[number]['stats']): number =>
          traffic.reduce((n, t) => n + t.stats[k], 0);
        return {
          type: 'echo',
          summary:
            `echo: ${driver.bound.size} bound, ${sum('completed')}/${sum('sent')} echoed` +
            `, ${sum('failed')} failed, ${sum('mismatched')} mismatched`,
          bound: driver.bound.size,
          traffic: traffic.map((t) => ({ ...t.stats })),
        };
      },
      stop: async () => {
        await Promise.all(traffic.map((t) => t.stop()));
      },
    };
  },
};
