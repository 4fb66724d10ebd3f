import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseAuthority, parseHttpTarget } from './target.ts';

describe('parseAuthority', () => {
  it('splits host and port, IPv6 in brackets', () => {
    assert.deepEqual(parseAuthority('api.example.com:443'), { ok: true, host: 'api.example.com', port: 443 });
    assert.deepEqual(parseAuthority('[::1]:8080'), { ok: true, host: '::1', port: 8080 });
    assert.deepEqual(parseAuthority('example.com', 80), { ok: true, host: 'example.com', port: 80 });
    assert.deepEqual(parseAuthority('[2001:db8::1]', 80), { ok: true, host: '2001:db8::1', port: 80 });
  });

  it('refuses what it cannot take apart, saying why', () => {
    const error = (text: string, defaultPort?: number) => {
      const parsed = parseAuthority(text, defaultPort);
      assert.equal(parsed.ok, false, text);
      return (parsed as { error: string }).error;
    };
    assert.match(error('example.com'), /has no port/);
    assert.match(error('example.com:0'), /invalid port "0"/);
    assert.match(error('example.com:65536'), /invalid port/);
    assert.match(error('example.com:x'), /invalid port "x"/);
    assert.match(error('::1:80'), /must be in brackets/);
    assert.match(error('[::1'), /without "\]"/);
    assert.match(error('[::1]x'), /expected ":port"/);
    assert.match(error('user@example.com:80'), /credentials/);
    assert.match(error(':80'), /empty host/);
    assert.match(error(''), /empty host/);
  });
});

describe('parseHttpTarget', () => {
  it('turns absolute-form into an authority and an origin-form path', () => {
    assert.deepEqual(parseHttpTarget('http://Example.com/a/b?c=d#frag'), {
      ok: true,
      host: 'Example.com',
      port: 80,
      authority: 'Example.com',
      path: '/a/b?c=d',
    });
    assert.deepEqual(parseHttpTarget('HTTP://127.0.0.1:8080'), {
      ok: true,
      host: '127.0.0.1',
      port: 8080,
      authority: '127.0.0.1:8080',
      path: '/',
    });
    assert.deepEqual(parseHttpTarget('http://[::1]:81?q'), {
      ok: true,
      host: '::1',
      port: 81,
      authority: '[::1]:81',
      path: '/?q',
    });
  });

  it('refuses origin-form, other schemes and userinfo', () => {
    for (const [url, pattern] of [
      ['/index.html', /origin-form; this is a forward proxy/],
      ['*', /origin-form/],
      ['https://example.com/', /use CONNECT/],
      ['ftp://example.com/', /use CONNECT/],
      ['example.com/', /not an absolute http:\/\/ URL/],
      ['http://u:p@example.com/', /credentials/],
      ['http://example.com:99999/', /invalid port/],
    ] as const) {
      const parsed = parseHttpTarget(url);
      assert.equal(parsed.ok, false, url);
      assert.match((parsed as { error: string }).error, pattern);
    }
  });
});
