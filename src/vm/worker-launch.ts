import { type MessagePort, Worker } from 'node:worker_threads';

/**
 * Starts a worker running a TypeScript module. The worker registers the tsx
 * loader itself (by absolute URL) before importing the module, so this works
 * however hvkit was started (npm scripts, the bin shim, tests).
 */
export function startTsWorker(
  module: URL,
  workerData: unknown,
  transferList?: readonly (ArrayBuffer | MessagePort)[],
): Worker {
  const api = import.meta.resolve('tsx/esm/api');
  const bootstrap = `import(${JSON.stringify(api)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(module.href)}); });`;
  return new Worker(bootstrap, {
    eval: true,
    workerData,
    ...(transferList ? { transferList: [...transferList] as never } : {}),
  });
}
