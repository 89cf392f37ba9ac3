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

/** `hvkit kvp get|set|delete|list`: the guest's key-value pools through the KVP integration service. */
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
  return kvp;
}
