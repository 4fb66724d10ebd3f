import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isAegisError } from '../../../domain/errors.ts';
import { EXEC_WRAPPER, goMessage, planPrewarm, shimSources } from './prewarm.ts';

describe('planPrewarm', () => {
  it('python with an entrypoint: the interpreter runs the shim, which gets the entrypoint', () => {
    const plan = planPrewarm({ language: 'python', entrypoint: 'src/main.py', command: undefined }, [
      '/usr/bin/python3',
      'src/main.py',
    ]);
    assert.deepEqual(plan, {
      kind: 'python',
      argv: ['/usr/bin/python3', '/opt/aegis/lib/prewarm.py', 'src/main.py'],
      goFd: 63,
      shim: 'prewarm.py',
    });
  });

  it('node with an entrypoint: the shim is a --require preload, the entrypoint stays the main module', () => {
    const plan = planPrewarm({ language: 'node', entrypoint: 'main.mjs', command: undefined }, [
      '/opt/aegis/bin/node',
      'main.mjs',
    ]);
    assert.deepEqual(plan.argv, [
      '/opt/aegis/bin/node',
      '--require',
      '/opt/aegis/lib/prewarm.cjs',
      'main.mjs',
    ]);
    assert.equal(plan.goFd, 63);
    assert.equal(plan.shim, 'prewarm.cjs');
  });

  it('bash and command: agents get the exec wrapper around their cold command line (one-digit go fd)', () => {
    const bash = planPrewarm({ language: 'bash', entrypoint: 'main.sh', command: undefined }, [
      '/usr/bin/bash',
      'main.sh',
    ]);
    assert.deepEqual(bash.argv, ['/bin/sh', '-c', EXEC_WRAPPER, 'aegis-prewarm', '/usr/bin/bash', 'main.sh']);
    assert.equal(bash.shim, undefined);
    assert.ok(bash.goFd < 10);
    const command = planPrewarm(
      { language: 'python', entrypoint: undefined, command: ['python3', '-c', 'x'] },
      ['python3', '-c', 'x'],
    );
    assert.equal(command.kind, 'exec');
    assert.deepEqual(command.argv.slice(4), ['python3', '-c', 'x']);
    assert.match(EXEC_WRAPPER, /exec 9<&-; exec "\$@"$/);
  });

  it('the shims read the go fd the plan names', () => {
    const sources = shimSources();
    assert.match(sources['prewarm.py'], /go = 63\n/);
    assert.match(sources['prewarm.cjs'], /const GO = 63;/);
  });

  it('the go message is the execution id and a newline; line breaks are refused', () => {
    assert.equal(goMessage('ex_01J'), 'ex_01J\n');
    assert.throws(
      () => goMessage('ex\nrm -rf /'),
      (e) => isAegisError(e) && e.code === 'USAGE',
    );
  });
});
