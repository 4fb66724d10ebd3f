import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AegisError } from '../errors.ts';
import { compileManifest, DEFAULT_LIMITS } from './compiled.ts';
import { AgentManifest } from './schema.ts';

function manifest(spec: Record<string, unknown>) {
  return AgentManifest.parse({
    apiVersion: 'aegis.dev/v1',
    kind: 'Agent',
    metadata: { name: 'demo' },
    spec: { runtime: { language: 'python', entrypoint: 'main.py' }, ...spec },
  });
}

function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof AegisError);
    assert.equal(error.code, 'MANIFEST_INVALID');
    return error.problems.map((p) => `${p.path}: ${p.message}`);
  }
  assert.fail('expected MANIFEST_INVALID');
}

describe('compileManifest', () => {
  it('compiles spec.secrets and refuses env clashes with spec.env and reserved names', () => {
    const agent = compileManifest(
      manifest({ secrets: [{ name: 'OPENAI_KEY', env: 'OPENAI_API_KEY', hosts: ['api.openai.com:443'] }] }),
      '/srv/demo',
    );
    assert.equal(agent.secrets.length, 1);
    assert.equal(agent.secrets[0]!.env, 'OPENAI_API_KEY');
    assert.equal(agent.secrets[0]!.hosts[0]!.kind, 'host');
    assert.deepEqual(compileManifest(manifest({}), '/srv/demo').secrets, []);
    assert.deepEqual(
      problemsOf(() =>
        compileManifest(
          manifest({
            env: { TOKEN: 'plain' },
            secrets: [
              { name: 'A', env: 'TOKEN', hosts: ['example.com'] },
              { name: 'B', env: 'HTTP_PROXY', hosts: ['example.com'] },
            ],
          }),
          '/srv/demo',
        ),
      ).map((p) => p.split(':')[0]),
      ['spec.secrets[0].env', 'spec.secrets[1].env'],
    );
    assert.throws(() => manifest({ secrets: [{ name: 'A', env: 'X', hosts: ['10.0.0.0/8'] }] }));
  });

  it('applies defaults and normalises units', () => {
    const agent = compileManifest(manifest({}), '/srv/demo');
    assert.deepEqual(agent.limits, DEFAULT_LIMITS);
    assert.equal(agent.isolation, 'sandbox');
    assert.equal(agent.version, '0.0.0');
    assert.equal(agent.agentDir, '/srv/demo');
    assert.deepEqual(agent.network, { allow: [], deny: [], policy: { allow: [], deny: [] } });
  });

  it('compiles network rules and refuses proxy variables in spec.env', () => {
    const agent = compileManifest(
      manifest({
        security: { network: { allow: ['api.example.com:443', '127.0.0.1:8080'], deny: ['10.0.0.0/8'] } },
      }),
      '/srv/demo',
    );
    assert.deepEqual(
      agent.network.policy.allow.map((rule) => rule.kind),
      ['host', 'cidr'],
    );
    assert.deepEqual(
      agent.network.policy.deny.map((rule) => rule.text),
      ['10.0.0.0/8'],
    );
    assert.deepEqual(
      problemsOf(() =>
        compileManifest(manifest({ env: { HTTPS_PROXY: 'http://evil:1', NO_PROXY: 'x' } }), '/srv'),
      ),
      ['spec.env.HTTPS_PROXY: HTTPS_PROXY is set by AEGIS and cannot be overridden'],
    );
  });

  it('converts resources to numbers with units in their names', () => {
    const agent = compileManifest(
      manifest({
        security: { resources: { cpu: '250m', memory: '64Mi', pids: 16, disk: '8Mi', timeout: '1500ms' } },
      }),
      '/srv/demo',
    );
    assert.deepEqual(agent.limits, {
      cpuMillis: 250,
      memoryBytes: 64 * 1024 ** 2,
      pids: 16,
      diskBytes: 8 * 1024 ** 2,
      timeoutMs: 1500,
    });
  });

  it('resolves relative mount sources against the manifest directory', () => {
    const agent = compileManifest(
      manifest({
        security: {
          filesystem: {
            read: ['/srv/data', { source: '../shared/mail', target: '/data/mail' }],
            write: ['/srv/out'],
          },
        },
      }),
      '/srv/agents/demo',
    );
    assert.deepEqual(
      agent.mounts.map((m) => [m.source, m.target, m.writable]),
      [
        ['/srv/data', '/srv/data', false],
        ['/srv/agents/shared/mail', '/data/mail', false],
        ['/srv/out', '/srv/out', true],
      ],
    );
  });

  it('refuses relative string entries, reserved targets and duplicate targets with JSON paths', () => {
    const problems = problemsOf(() =>
      compileManifest(
        manifest({
          security: {
            filesystem: {
              read: ['data', { source: '/a', target: '/agent/x' }, { source: '/b', target: '/' }],
              write: [
                { source: '/c', target: '/mnt/c' },
                { source: '/d', target: '/mnt/c' },
              ],
            },
          },
        }),
        '/srv/demo',
      ),
    );
    assert.equal(problems.length, 4);
    assert.match(problems[0]!, /^spec\.security\.filesystem\.read\[0\]: "data" is not an absolute path/);
    assert.match(problems[1]!, /^spec\.security\.filesystem\.read\[1\]: cannot mount over \/agent\/x/);
    assert.match(problems[2]!, /^spec\.security\.filesystem\.read\[2\]: cannot mount over \/:/);
    assert.match(problems[3]!, /^spec\.security\.filesystem\.write\[1\]: target \/mnt\/c is already mounted/);
  });

  it('refuses env names AEGIS sets itself', () => {
    const problems = problemsOf(() =>
      compileManifest(manifest({ env: { PATH: '/x', AEGIS_INPUT: 'y', OK: '1' } }), '/'),
    );
    assert.deepEqual(
      problems.map((p) => p.split(':')[0]),
      ['spec.env.PATH', 'spec.env.AEGIS_INPUT'],
    );
  });
});
