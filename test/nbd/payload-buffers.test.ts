import assert from 'node:assert/strict';
import { it } from 'node:test';
import {
  acquirePayloadBuffer,
  isPooledPayload,
  releasePayloadBuffer,
} from '../../src/nbd/payload-buffers.ts';

it('reuses large reply buffers once released, and never hands one out twice', () => {
  const small = acquirePayloadBuffer(1000);
  assert.equal(isPooledPayload(small), false, 'small replies use ordinary buffers');
  const a = acquirePayloadBuffer(1024 * 1024 + 16);
  const b = acquirePayloadBuffer(1024 * 1024 + 16);
  assert.equal(a.length, 1024 * 1024 + 16);
  assert.notEqual(a.buffer, b.buffer, 'two buffers in use are distinct');
  assert.ok(isPooledPayload(a));
  releasePayloadBuffer(a);
  releasePayloadBuffer(a); // a double release must not put it in the pool twice
  const c = acquirePayloadBuffer(1024 * 1024 + 100);
  assert.equal(c.buffer, a.buffer, 'released buffer reused');
  const d = acquirePayloadBuffer(1024 * 1024 + 100);
  assert.notEqual(d.buffer, a.buffer, 'not handed out twice');
  releasePayloadBuffer(b);
  releasePayloadBuffer(c);
  releasePayloadBuffer(d);
});
