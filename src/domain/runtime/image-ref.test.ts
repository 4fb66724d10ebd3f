import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { imageRefProblem, parseImageRef } from './image-ref.ts';

describe('spec.runtime.image', () => {
  it('tells an OCI layout path from an engine image name', () => {
    assert.deepEqual(parseImageRef('my-agent:1', '/a'), { kind: 'engine', name: 'my-agent:1' });
    assert.deepEqual(parseImageRef('./image', '/srv/agent'), { kind: 'layout', path: '/srv/agent/image' });
    assert.deepEqual(parseImageRef('oci:img/x', '/srv/agent'), { kind: 'layout', path: '/srv/agent/img/x' });
    assert.deepEqual(parseImageRef('oci:/opt/images/x', '/a'), { kind: 'layout', path: '/opt/images/x' });
    assert.deepEqual(parseImageRef('/opt/images/x/', '/a'), { kind: 'layout', path: '/opt/images/x' });
  });

  it('refuses values that are neither, and relative layouts that leave the agent directory', () => {
    for (const ok of ['busybox', 'reg/ns/img:tag-1', './image', 'oci:/x', '/x'])
      assert.equal(imageRefProblem(ok), undefined, ok);
    assert.match(imageRefProblem('My Image') ?? '', /neither an image name/);
    assert.match(imageRefProblem('../image') ?? '', /neither/);
    assert.match(imageRefProblem('./../image') ?? '', /leaves the agent directory/);
    assert.match(imageRefProblem('oci:') ?? '', /empty/);
  });
});
