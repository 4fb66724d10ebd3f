import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { isAegisError } from '../../domain/errors.ts';
import { loadNodeId } from './node-id.ts';

describe('loadNodeId', () => {
  const home = mkdtempSync(join(tmpdir(), 'aegis-node-id-'));
  after(() => rmSync(home, { recursive: true, force: true }));

  it('creates the id once (0600) and returns the same one afterwards', () => {
    const first = loadNodeId(home);
    assert.match(first, /^node-[0-9a-f]{16}$/);
    assert.equal(statSync(join(home, 'node-id')).mode & 0o777, 0o600);
    assert.equal(loadNodeId(home), first);
    assert.equal(readFileSync(join(home, 'node-id'), 'utf8').trim(), first);
  });

  it('takes an override and checks it', () => {
    assert.equal(loadNodeId(home, 'eu-west-1.host3'), 'eu-west-1.host3');
    assert.throws(
      () => loadNodeId(home, 'Bad Id'),
      (error) => isAegisError(error) && error.code === 'USAGE' && /node id/.test(error.message),
    );
  });

  it('refuses a damaged file with a hint', () => {
    const other = mkdtempSync(join(tmpdir(), 'aegis-node-id-'));
    try {
      writeFileSync(join(other, 'node-id'), '../../etc\n');
      assert.throws(
        () => loadNodeId(other),
        (error) => isAegisError(error) && error.code === 'USAGE' && /remove it/.test(error.hint ?? ''),
      );
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  });
});
