import assert from 'node:assert/strict';
import { it } from 'node:test';
import { RateLimitedLog } from '../../src/vmbus/rate-limited-log.ts';

it('logs a burst per window, then says how many lines it suppressed', () => {
  let now = 0;
  const lines: string[] = [];
  const log = new RateLimitedLog(
    (l) => lines.push(l),
    3,
    1000,
    () => now,
  );
  for (let i = 0; i < 10; i++) log.log(`bad ${i}`);
  assert.deepEqual(lines, ['bad 0', 'bad 1', 'bad 2']);
  now = 1500;
  log.log('later');
  assert.deepEqual(lines.slice(3), ['(7 similar messages suppressed)', 'later']);
});
