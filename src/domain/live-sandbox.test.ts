import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isAegisError } from './errors.ts';
import { sandboxPath, sandboxPathRoots, underRoots } from './live-sandbox.ts';

describe('live sandbox paths', () => {
  it('normalises absolute and workspace-relative paths', () => {
    assert.equal(sandboxPath('/workspace//a/./b/', 'query.path'), '/workspace/a/b');
    assert.equal(sandboxPath('notes.txt', 'query.path'), '/workspace/notes.txt');
    assert.equal(sandboxPath('/', 'query.path'), '/');
  });
  it('refuses ".." anywhere, NUL and empty paths', () => {
    for (const bad of ['/workspace/../etc/passwd', '../x', 'a/../../b', '', 'a\0b']) {
      assert.throws(
        () => sandboxPath(bad, 'query.path'),
        (e) => isAegisError(e),
      );
    }
  });
  it('roots: /workspace and /tmp writable, read grants readable, write grants writable', () => {
    const roots = sandboxPathRoots({
      mounts: [
        { source: '/data', target: '/data', writable: false, manifestPath: 'x' },
        { source: '/out', target: '/out', writable: true, manifestPath: 'y' },
      ],
    });
    assert.deepEqual(roots.writable, ['/workspace', '/tmp', '/out']);
    assert.deepEqual(roots.readable, ['/agent', '/data']);
    assert.equal(underRoots('/workspace/a', roots.writable), true);
    assert.equal(underRoots('/workspacex', roots.writable), false);
  });
});
