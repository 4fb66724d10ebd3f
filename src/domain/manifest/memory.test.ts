import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseManifestText } from '../../adapters/manifest/yaml-loader.ts';
import { AegisError } from '../errors.ts';

const BASE = `apiVersion: aegis.dev/v1
kind: Agent
metadata:
  name: demo
spec:
  runtime:
    language: python
    entrypoint: main.py
`;

describe('manifest: spec.memory', () => {
  it('absent: no memory; present: defaults filled in and units compiled', () => {
    assert.equal(parseManifestText(BASE, 'agent.yaml', '/srv/demo').agent.memory, undefined);
    const { agent } = parseManifestText(`${BASE}  memory: {}\n`, 'agent.yaml', '/srv/demo');
    assert.deepEqual(agent.memory, {
      enabled: true,
      namespace: 'default',
      ttlMs: null,
      index: ['input', 'output'],
      recall: { k: 5, threshold: 0.2 },
      share: [],
    });
    const full = parseManifestText(
      `${BASE}  memory:\n    namespace: support\n    ttl: 720h\n    index: [input, output, logs, logs]\n    recall: {k: 3, threshold: 0.5}\n    share: [triage]\n`,
      'agent.yaml',
      '/srv/demo',
    ).agent.memory;
    assert.equal(full?.ttlMs, 720 * 3_600_000);
    assert.deepEqual(full?.index, ['input', 'output', 'logs']);
    assert.deepEqual(full?.share, ['triage']);
    assert.equal(full?.namespace, 'support');
  });

  it('a bad field is located (file:line:col) and says what is allowed', () => {
    const text = `${BASE}  memory:\n    index: [input, stdout]\n`;
    try {
      parseManifestText(text, 'agent.yaml', '/srv/demo');
      assert.fail('accepted');
    } catch (error) {
      assert.ok(error instanceof AegisError);
      assert.equal(error.code, 'MANIFEST_INVALID');
      const [problem] = error.problems;
      assert.equal(problem?.path, 'spec.memory.index[1]');
      assert.equal(problem?.line, 10);
      assert.match(problem?.message ?? '', /input|output|logs/);
    }
    for (const [bad, where] of [
      ['    namespace: ../other\n', 'spec.memory.namespace'],
      ['    recall: {k: 500}\n', 'spec.memory.recall.k'],
      ['    share: [Agent_B]\n', 'spec.memory.share[0]'],
      ['    ttl: 3 weeks\n', 'spec.memory.ttl'],
      ['    scope: other\n', 'spec.memory'],
    ] as const) {
      try {
        parseManifestText(`${BASE}  memory:\n${bad}`, 'agent.yaml', '/srv/demo');
        assert.fail(`accepted ${bad}`);
      } catch (error) {
        assert.ok(error instanceof AegisError, String(error));
        assert.ok(
          error.problems.some((p) => p.path.startsWith(where)),
          `${bad}: ${JSON.stringify(error.problems)}`,
        );
      }
    }
  });
});
