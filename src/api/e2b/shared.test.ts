import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AegisError } from '../../domain/errors.ts';
import { authorizationOf, checkUser, e2bErrorBody, sandboxIdOf } from './shared.ts';

describe('E2B request plumbing', () => {
  it('takes the key from X-API-Key, X-Access-Token or a Bearer header — never from Basic (a user name)', () => {
    assert.equal(authorizationOf({ 'x-api-key': 'aegis_a' }), 'Bearer aegis_a');
    assert.equal(authorizationOf(new Headers({ 'x-access-token': 'aegis_b' })), 'Bearer aegis_b');
    assert.equal(authorizationOf({ authorization: 'Bearer aegis_c' }), 'Bearer aegis_c');
    assert.equal(authorizationOf({ authorization: `Basic ${btoa('user:')}` }), undefined);
    assert.equal(authorizationOf({}), undefined);
  });

  it('names the sandbox by E2b-Sandbox-Id, else by a <port>-<id>.<domain> Host', () => {
    assert.equal(sandboxIdOf(new Headers({ 'e2b-sandbox-id': 'sb_1' })), 'sb_1');
    assert.equal(sandboxIdOf({ host: '49983-sb_2.aegis.example' }), 'sb_2');
    assert.throws(() => sandboxIdOf({ host: 'aegis.example' }), /E2b-Sandbox-Id/);
  });

  it('refuses root, by header or by query', () => {
    assert.doesNotThrow(() => checkUser({ authorization: `Basic ${btoa('user:')}` }, undefined));
    assert.throws(() => checkUser({ authorization: `Basic ${btoa('root:')}` }, undefined), /root/);
    assert.throws(() => checkUser({}, 'root'), /root/);
  });

  it("answers in E2B's {code, message} with the AEGIS code and hint", () => {
    const { status, body } = e2bErrorBody(
      new AegisError('NOT_FOUND', 'no sandbox sb_x', { hint: 'list yours' }),
    );
    assert.equal(status, 404);
    assert.deepEqual(body, { code: 404, message: 'NOT_FOUND: no sandbox sb_x (list yours)' });
  });
});
