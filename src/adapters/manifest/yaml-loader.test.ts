import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AegisError, type Problem } from '../../domain/errors.ts';
import { parseManifestText } from './yaml-loader.ts';

const VALID = `apiVersion: aegis.dev/v1
kind: Agent
metadata:
  name: demo
  version: 1.0.0
spec:
  runtime:
    language: python
    entrypoint: main.py
  security:
    resources:
      memory: 128Mi
      timeout: 10s
`;

function problems(text: string): Problem[] {
  try {
    parseManifestText(text, 'agent.yaml', '/srv/demo');
  } catch (error) {
    assert.ok(error instanceof AegisError, String(error));
    assert.equal(error.code, 'MANIFEST_INVALID');
    assert.equal(error.exitCode, 2);
    return [...error.problems];
  }
  assert.fail('expected the manifest to be rejected');
}

describe('manifest loader: located errors', () => {
  it('accepts the documented shape', () => {
    const { agent } = parseManifestText(VALID, 'agent.yaml', '/srv/demo');
    assert.equal(agent.limits.memoryBytes, 128 * 1024 ** 2);
  });

  it('unknown field → file:line:col of the key, JSON path, did-you-mean', () => {
    const [p] = problems(VALID.replace('  version: 1.0.0', '  versoin: 1.0.0'));
    assert.equal(p?.file, 'agent.yaml');
    assert.equal(p?.line, 5);
    assert.equal(p?.column, 3);
    assert.equal(p?.path, 'metadata.versoin');
    assert.match(p?.message ?? '', /unknown field "versoin" — did you mean "version"\?/);
  });

  it('wrong type → position of the value and what was received', () => {
    const [p] = problems(VALID.replace('      timeout: 10s', '      timeout: [10]'));
    assert.equal(p?.path, 'spec.security.resources.timeout');
    assert.equal(p?.line, 13);
    assert.equal(p?.column, 16);
  });

  it('bad size unit → names the unit and the accepted ones', () => {
    const [p] = problems(VALID.replace('128Mi', '128Mb'));
    assert.equal(p?.path, 'spec.security.resources.memory');
    assert.equal(p?.line, 12);
    assert.match(p?.message ?? '', /unknown size unit "Mb".*Mi/);
  });

  it('missing entrypoint → says what is needed at spec.runtime', () => {
    const [p] = problems(VALID.replace('    entrypoint: main.py\n', ''));
    assert.equal(p?.path, 'spec.runtime.entrypoint');
    assert.equal(p?.line, 8, 'points at the runtime block');
    assert.match(p?.message ?? '', /needs an entrypoint/);
  });

  it('YAML syntax error → line and column of the break', () => {
    const [p] = problems('apiVersion: aegis.dev/v1\nkind: Agent\nmetadata:\n  name: demo\n spec: [\n');
    assert.equal(p?.line, 5);
    assert.match(p?.message ?? '', /^YAML syntax error/);
  });

  it('duplicate keys and non-mapping documents are errors, not silent overrides', () => {
    assert.match(
      problems(`${VALID}kind: Agent\n`)[0]?.message ?? '',
      /YAML syntax error.*unique|Map keys must be unique/,
    );
    assert.match(problems('- just\n- a list\n')[0]?.message ?? '', /is a mapping/);
  });

  it('wrong enum value suggests the closest one', () => {
    const [p] = problems(VALID.replace('language: python', 'language: pyhton'));
    assert.match(p?.message ?? '', /did you mean "python"\?/);
  });

  it('compile-time rules are located too', () => {
    const [p] = problems(`${VALID}  env:\n    PATH: /evil\n`);
    assert.equal(p?.path, 'spec.env.PATH');
    assert.equal(p?.line, 15);
  });
});

describe('hostile YAML', () => {
  it('refuses an alias bomb with a located error instead of expanding it', () => {
    let bomb = `${VALID}x0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n`;
    for (let i = 1; i < 9; i++)
      bomb += `x${i}: &a${i} [${Array(9)
        .fill(`*a${i - 1}`)
        .join(', ')}]\n`;
    const [problem, ...rest] = problems(bomb);
    assert.deepEqual(rest, []);
    assert.match(problem!.message, /aliases expand too much/);
    assert.deepEqual({ file: problem!.file, line: problem!.line }, { file: 'agent.yaml', line: 15 }); // x1, the first alias
  });
});
