/**
 * The two concurrency tools the image backends need: a lock per key (a
 * block being allocated), and a count of operations in flight so that
 * close() can wait for them.
 */

export class KeyedLock<K> {
  private readonly tails = new Map<K, Promise<void>>();

  /** Runs fn when every earlier holder of `key` is done; holders run one at a time. */
  async run<T>(key: K, fn: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => {
      release = resolve;
    });
    const tail = previous.then(() => mine);
    this.tails.set(key, tail);
    await previous;
    try {
      return await fn();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}

export class OperationGate {
  private count = 0;
  private waiters: (() => void)[] = [];

  /** Runs an operation, counting it while it is in flight. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    this.count++;
    try {
      return await fn();
    } finally {
      this.count--;
      if (this.count === 0) {
        const waiting = this.waiters;
        this.waiters = [];
        for (const w of waiting) w();
      }
    }
  }

  /** Resolves once no operation is in flight. */
  drain(): Promise<void> {
    if (this.count === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }
}
