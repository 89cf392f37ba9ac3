import { Command, InvalidArgumentError, Option } from 'commander';
import { callVm, socketFor, type TargetOptions, targetOptions, withVm } from './control-client.ts';

interface PoolOptions extends TargetOptions {
  pool: number;
  json?: boolean;
  type?: string;
}

function parsePool(text: string): number {
  if (!/^[0-4]$/.test(text)) {
    throw new InvalidArgumentError('pools are 0 (external), 1 (guest), 2 (auto), 3 and 4');
  }
  return Number(text);
}

function withTarget(command: Command): Command {
  command.addOption(
    new Option(
      '--pool <n>',
      'KVP pool: 0 external, 1 guest, 2 auto, 3 auto-external, 4 auto-internal',
    )
      .argParser(parsePool)
      .default(0),
  );
  for (const option of targetOptions()) command.addOption(option);
  return command;
}

/**
 * `hvkit kvp get|set|delete|list|ip`: the guest's key-value pools, and its
 * adapters' IP configuration, through the KVP integration service.
 */
export function kvpCommand(): Command {
  const kvp = new Command('kvp').description(
    "read and write the guest's key-value pairs (KVP integration service)",
  );
  kvp.addCommand(
    withTarget(new Command('get').description('print the value of a key').argument('<key>')).action(
      (key: string, options: PoolOptions) =>
        withVm(async () => {
          const result = (await callVm(socketFor(options), 'kvp', {
            op: 'get',
            pool: options.pool,
            key,
          })) as { value: string };
          console.log(result.value);
        }),
    ),
  );
  kvp.addCommand(
    withTarget(
      new Command('set')
        .description('set a key (numbers with --type u32 or u64)')
        .argument('<key>')
        .argument('<value>')
        .addOption(
          new Option('--type <type>', 'value type')
            .choices(['string', 'u32', 'u64'])
            .default('string'),
        ),
    ).action((key: string, value: string, options: PoolOptions) =>
      withVm(async () => {
        await callVm(socketFor(options), 'kvp', {
          op: 'set',
          pool: options.pool,
          key,
          value,
          type: options.type,
        });
      }),
    ),
  );
  kvp.addCommand(
    withTarget(new Command('delete').description('delete a key').argument('<key>')).action(
      (key: string, options: PoolOptions) =>
        withVm(async () => {
          await callVm(socketFor(options), 'kvp', { op: 'delete', pool: options.pool, key });
        }),
    ),
  );
  kvp.addCommand(
    withTarget(
      new Command('list')
        .description('list every key and value of a pool')
        .option('--json', 'print JSON'),
    ).action((options: PoolOptions) =>
      withVm(async () => {
        const result = (await callVm(socketFor(options), 'kvp', {
          op: 'list',
          pool: options.pool,
        })) as { entries: { key: string; value: string }[] };
        if (options.json) console.log(JSON.stringify(result.entries, null, 2));
        else for (const { key, value } of result.entries) console.log(`${key}=${value}`);
      }),
    ),
  );
  const ipTarget = (command: Command): Command => {
    for (const option of targetOptions()) command.addOption(option);
    return command;
  };
  kvp.addCommand(
    ipTarget(
      new Command('ip')
        .description(
          "the guest's configuration of the adapter with this MAC (GET_IP_INFO), or set it (SET_IP_INFO)",
        )
        .argument('<mac>', 'the adapter, e.g. 00:15:5d:00:00:01')
        .option('--set <cidr...>', 'give the adapter these addresses (e.g. 192.0.2.5/24)')
        .option('--gateway <ip>', 'with --set: the default gateway')
        .option('--dns <ip...>', 'with --set: name servers')
        .option('--json', 'print JSON'),
    ).action(
      (
        mac: string,
        options: TargetOptions & {
          set?: string[];
          gateway?: string;
          dns?: string[];
          json?: boolean;
        },
      ) =>
        withVm(async () => {
          if (options.set) {
            await callVm(socketFor(options), 'kvp', {
              op: 'ip-set',
              mac,
              addresses: options.set,
              ...(options.gateway ? { gateway: options.gateway } : {}),
              dns: options.dns ?? [],
            });
            return;
          }
          const info = (await callVm(socketFor(options), 'kvp', { op: 'ip-get', mac })) as Record<
            string,
            unknown
          >;
          if (options.json) console.log(JSON.stringify(info, null, 2));
          else for (const [k, v] of Object.entries(info)) console.log(`${k}=${v}`);
        }),
    ),
  );
  return kvp;
}
