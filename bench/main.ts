/**
 * `npm run bench -- <suite> [...]`: runs the named suites (all when none is
 * given). Each suite is bench/<suite>.ts exporting `run(args)`.
 */
import { readdirSync } from 'node:fs';

const available = readdirSync(import.meta.dirname)
  .filter((f) => f.endsWith('.ts') && !['main.ts', 'report.ts'].includes(f) && !f.startsWith('_'))
  .map((f) => f.slice(0, -3))
  .sort();

const requested = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const suites = requested.length > 0 ? requested : available;
for (const suite of suites) {
  if (!available.includes(suite)) {
    console.error(
      `unknown bench suite ${JSON.stringify(suite)}; available: ${available.join(', ')}`,
    );
    process.exit(2);
  }
}
for (const suite of suites) {
  const mod = (await import(`./${suite}.ts`)) as { run(args: string[]): Promise<void> };
  await mod.run(process.argv.slice(2));
}
