import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AegisError } from '../domain/errors.ts';
import { errorBody, MAX_ERROR_MESSAGE_CHARS, publicError } from './errors.ts';

const PATHS = [
  { path: '/var/lib/aegis/bundles', shownAs: '<bundle-dir>' },
  { path: '/root/.aegis', shownAs: '$AEGIS_HOME' },
];

describe('publicError', () => {
  it('reduces INTERNAL errors to a generic message: no server paths or internals leave', () => {
    const error = publicError(
      new AegisError('INTERNAL', 'cannot unpack the bundle into /var/lib/aegis/bundles/abc: EIO', {
        details: { file: '/var/lib/aegis/bundles/abc' },
      }),
      PATHS,
    );
    assert.equal(error.code, 'INTERNAL');
    assert.doesNotMatch(JSON.stringify(errorBody(error)), /var\/lib|EIO|abc/);
  });

  it('bounds every string: message, hint, problems and details', () => {
    const huge = 'a'.repeat(900 * 1024);
    const body = errorBody(
      new AegisError('USAGE', `agent: ${JSON.stringify(huge)}`, {
        hint: huge,
        problems: Array.from({ length: 500 }, () => ({ path: huge, message: huge, file: huge })),
        details: { value: huge, nested: { list: [huge, { deeper: { still: { deeper: huge } } }] } },
      }),
    );
    const text = JSON.stringify(body);
    assert.ok(text.length < 30_000, `${text.length} bytes`);
    assert.ok(body.error.message.length <= MAX_ERROR_MESSAGE_CHARS + 40);
    assert.match(body.error.message, /… \(\d+ more characters\)$/);
    assert.equal((body.error.details['problems'] as unknown[]).length, 20);
  });

  it('names the server directories instead of showing them, longest first', () => {
    const body = errorBody(
      new AegisError('MANIFEST_INVALID', 'read grant /var/lib/aegis/bundles/d1/data is missing', {
        problems: [
          {
            path: 'spec',
            message: 'see /root/.aegis/aegis.db',
            file: '/var/lib/aegis/bundles/d1/agent.yaml',
          },
        ],
      }),
      [{ path: '/var/lib/aegis', shownAs: '<state>' }, ...PATHS],
    );
    const text = JSON.stringify(body);
    assert.doesNotMatch(text, /\/var\/lib|\/root/);
    assert.match(body.error.message, /<bundle-dir>\/d1\/data/);
    assert.match(text, /\$AEGIS_HOME\/aegis\.db/);
  });

  it('leaves ordinary errors as they were', () => {
    const body = errorBody(new AegisError('NOT_FOUND', 'no agent named x', { hint: 'deploy it first' }));
    assert.deepEqual(body, {
      error: { code: 'NOT_FOUND', message: 'no agent named x', details: { hint: 'deploy it first' } },
    });
  });
});
