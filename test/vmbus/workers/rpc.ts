/**
 * A tiny request/response protocol between a test and a worker it drives:
 * the worker exposes named operations; the test calls them and awaits the
 * result. Only for tests (the VM's own control messages live in src/vm).
 */
import { parentPort, type Worker } from 'node:worker_threads';

type Request = { id: number; op: string; args: unknown[] };
type Response = { id: number; result?: unknown; error?: string };

export function serve(operations: Record<string, (...args: never[]) => unknown>): void {
  const port = parentPort!;
  port.on('message', async (request: Request) => {
    const op = operations[request.op];
    let response: Response;
    try {
      if (!op) throw new Error(`no operation ${request.op}`);
      response = {
        id: request.id,
        result: await (op as (...args: unknown[]) => unknown)(...request.args),
      };
    } catch (error) {
      response = { id: request.id, error: (error as Error).message };
    }
    port.postMessage(response);
  });
  port.postMessage({ id: 0, result: 'ready' });
}

export class RpcClient {
  private nextId = 1;
  private readonly pending = new Map<
    number,
    { resolve: (v: unknown) => void; reject: (e: Error) => void }
  >();
  readonly ready: Promise<void>;

  constructor(readonly worker: Worker) {
    let readyResolve!: () => void;
    this.ready = new Promise((resolve) => {
      readyResolve = resolve;
    });
    worker.on('message', (response: Response) => {
      if (response.id === 0) {
        readyResolve();
        return;
      }
      const waiter = this.pending.get(response.id);
      this.pending.delete(response.id);
      if (response.error !== undefined) waiter?.reject(new Error(response.error));
      else waiter?.resolve(response.result);
    });
    worker.on('error', (error) => {
      for (const w of this.pending.values()) w.reject(error);
      this.pending.clear();
    });
  }

  call<T = unknown>(op: string, ...args: unknown[]): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ id, op, args });
    });
  }
}
