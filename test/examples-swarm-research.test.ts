/**
 * examples/swarm-research on a real `aegis server`: the coordinator splits a question, spawns a researcher child per
 * sub-question through the in-sandbox SDK, collects their answers over the swarm bus and writes the merged answer
 * under a swarm lock (fencing token recorded); the swarm tree shows the coordinator and its researchers, each child
 * linked to it, the messages and the lock.
 */
import assert from 'node:assert/strict';
import { resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { hostSkipReason } from './adversarial/harness.ts';
import {
  apiCall,
  cli,
  killServers,
  type ServerDirs,
  type ServerProcess,
  serverDirs,
  startServerProcess,
} from './server/harness.ts';

const EXAMPLE = resolve(import.meta.dirname, '..', 'examples', 'swarm-research');
const skip = hostSkipReason();

describe('examples/swarm-research (coordinator + researcher children)', { skip }, () => {
  let dirs: ServerDirs;
  let server: ServerProcess;
  const env = () => ({ ...server.env, AEGIS_SERVER: server.url, AEGIS_API_KEY: server.adminKey });

  before(async () => {
    dirs = serverDirs();
    server = await startServerProcess({ dirs });
    for (const agent of ['researcher', 'coordinator']) {
      const deployed = await cli(['deploy', resolve(EXAMPLE, agent)], env());
      assert.equal(deployed.code, 0, deployed.stderr);
    }
  });
  after(async () => {
    if (server) await server.stop();
    await killServers();
    dirs?.cleanup();
  });

  it('answers a two-part question from two researchers and shows the tree', async () => {
    const ran = await cli(
      [
        'exec',
        '--wait',
        '5m',
        'swarm-coordinator',
        '-o',
        'json',
        '--input',
        JSON.stringify({ question: 'What causes tides and what are neap tides?' }),
      ],
      env(),
    );
    const execution = JSON.parse(ran.stdout) as {
      id: string;
      status: string;
      output: {
        answer: string;
        parts: { status: string }[];
        lock: { name: string; token: number; message: number };
      };
    };
    assert.equal(execution.status, 'succeeded', ran.stdout + ran.stderr);
    assert.equal(execution.output.parts.length, 2);
    assert.ok(
      execution.output.parts.every((p) => p.status === 'succeeded'),
      JSON.stringify(execution.output),
    );
    assert.match(execution.output.answer, /gravity of the Moon/);
    assert.match(execution.output.answer, /quarter moons/);
    const tree = await apiCall(server.url, server.adminKey, 'GET', `/v1/swarms/${execution.id}`);
    const rows = tree.json.executions as {
      id: string;
      agent: string;
      parentId: string | null;
      status: string;
    }[];
    assert.deepEqual(
      rows.map((r) => r.agent),
      ['swarm-coordinator', 'swarm-researcher', 'swarm-researcher'],
    );
    assert.ok(rows.slice(1).every((r) => r.parentId === execution.id && r.status === 'succeeded'));
    // The answers came over the bus, one per researcher, and the merged answer was written under the lock.
    const messages = tree.json.messages as { id: number; topic: string; sender: string }[];
    const researchers = new Set(rows.slice(1).map((r) => r.id));
    const answers = messages.filter((m) => m.topic === 'answers');
    assert.equal(answers.length, 2, tree.text);
    assert.ok(answers.every((m) => researchers.has(m.sender)));
    const merged = messages.filter((m) => m.topic === 'merged');
    assert.deepEqual(
      merged.map((m) => [m.id, m.sender]),
      [[execution.output.lock.message, execution.id]],
    );
    const locks = tree.json.locks as { name: string; token: number; holder: string | null }[];
    assert.deepEqual(
      locks.map((l) => [l.name, l.token, l.holder]),
      [['merged-answer', execution.output.lock.token, null]],
    );
  });
});
