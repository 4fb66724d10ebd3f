/**
 * The Python client SDK (sdk/python, standard library only) against a real `aegis server`: a python3 script
 * (PYTHONPATH=sdk/python, as the README documents) deploys an agent directory it packs itself (honouring
 * .aegisignore), executes and waits, follows the logs over SSE, pages `ps` by cursor, cancels, and maps error
 * bodies to typed errors. A second script checks that a dropped log stream resumes with Last-Event-ID, against a
 * stub server that drops the first connection.
 */
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import {
  killServers,
  ROOT,
  type ServerDirs,
  type ServerProcess,
  serverDirs,
  startServerProcess,
} from './server/harness.ts';

const run = promisify(execFile);

/** Why the Python SDK cannot be tested here, or false. */
function pythonMissing(): string | false {
  const probe = spawnSync('python3', ['-c', 'import sys; print(sys.version_info >= (3, 9))'], {
    encoding: 'utf8',
  });
  if (probe.error) return 'python3 is not on PATH (npm run setup installs it)';
  return probe.stdout.trim() === 'True' ? false : 'python3 is older than 3.9, the Python SDK needs 3.9+';
}
const PYTHONPATH = join(ROOT, 'sdk/python');

const AGENT_YAML = `apiVersion: aegis.dev/v1
kind: Agent
metadata:
  name: py-ticker
  version: 1.0.0
spec:
  runtime: { language: python, entrypoint: main.py }
  security:
    resources: { timeout: 60s }
`;
const MAIN = `import json, sys, time
from lib.ticks import tick
args = json.load(sys.stdin)
for i in range(1, args.get("lines", 3) + 1):
    print(tick(i), flush=True)
    time.sleep(args.get("sleep", 0))
print(json.dumps({"ticks": args.get("lines", 3)}))
`;

const SCRIPT = `
import json, os, sys
from aegis_sdk import AegisClient, AegisError, AuthError, InvalidRequestError, NotFoundError, pack_agent

server, agent_dir, bad_dir = sys.argv[1:4]
aegis = AegisClient(server, api_key=os.environ["AEGIS_API_KEY"])
out = {}

packed = pack_agent(agent_dir)
out["packedFiles"] = packed.files
first = aegis.deploy(agent_dir)
again = aegis.deploy(agent_dir)
out["deploy"] = [first["created"], again["created"], first["revision"]["revision"]]

started = aegis.exec("py-ticker", {"lines": 3})
done = aegis.wait(started["id"], timeout=60)
out["wait"] = [started["status"] in ("queued", "running", "created"), done["status"], done["output"]]

waited = aegis.exec("py-ticker", {"lines": 2}, wait="60s")
out["execWait"] = [waited["status"], waited["output"]]

followed = aegis.exec("py-ticker", {"lines": 4, "sleep": 0.2})
items = list(aegis.follow_logs(followed["id"]))
out["follow"] = {
    "ticks": [i["line"]["text"] for i in items if i["type"] == "line" and i["line"]["text"].startswith("tick")],
    "last": items[-1]["type"],
    "status": items[-1]["execution"]["status"],
}
page = aegis.logs(followed["id"])
out["logsPage"] = [l["text"] for l in page["lines"] if l["text"].startswith("tick")]
tail = list(aegis.follow_logs(followed["id"], after=page["lines"][-2]["seq"]))
out["followAfter"] = [i["type"] for i in tail]

first_page = aegis.ps(agent="py-ticker", limit=1)
out["ps"] = [len(first_page["executions"]), first_page["nextCursor"] is not None]
out["psAll"] = len(list(aegis.iter_executions(agent="py-ticker", page_size=1)))

slow = aegis.exec("py-ticker", {"lines": 1000, "sleep": 0.5})
cancelled = aegis.cancel(slow["id"])
final = aegis.wait(slow["id"], timeout=60)
out["cancel"] = [final["status"], final["reason"]]

def caught(call):
    try:
        call()
    except AegisError as error:
        return {"type": type(error).__name__, "code": error.code, "status": error.status,
                "hasHint": error.hint is not None, "problems": len(error.problems),
                "details": sorted(error.details)}
    return None

out["errors"] = {
    "notFound": caught(lambda: aegis.get_execution("ex_nope")),
    "badKey": caught(lambda: AegisClient(server, api_key="aegis_wrong").ps()),
    "badManifest": caught(lambda: aegis.deploy(bad_dir)),
    "noManifest": caught(lambda: aegis.deploy(os.path.dirname(bad_dir))),
}
print(json.dumps(out))
`;

const RESUME_SCRIPT = `
import json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from aegis_sdk import AegisClient

seen = []
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args): pass
    def do_GET(self):
        seen.append({"path": self.path, "lastEventId": self.headers.get("last-event-id")})
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        line = lambda seq: ("id: %d\\nevent: log\\ndata: %s\\n\\n" % (seq, json.dumps(
            {"seq": seq, "ts": "t", "stream": "stdout", "text": "line %d" % seq}))).encode()
        if len(seen) == 1:
            self.wfile.write(b": ping\\r\\nretry: 10\\r\\n\\r\\n" + line(1) + line(2))
            return  # the connection drops before the end event
        self.wfile.write(line(2) + line(3) + b'event: end\\ndata: {"id": "ex_1", "status": "succeeded"}\\n\\n')

httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=httpd.serve_forever, daemon=True).start()
client = AegisClient("http://127.0.0.1:%d" % httpd.server_address[1], api_key="k")
items = list(client.follow_logs("ex_1"))
httpd.shutdown()
print(json.dumps({"items": [i["line"]["text"] if i["type"] == "line" else i["execution"]["status"] for i in items],
                  "seen": seen}))
`;

async function python(script: string, args: readonly string[], env: NodeJS.ProcessEnv = {}) {
  const { stdout } = await run('python3', ['-c', script, ...args], {
    env: { PATH: process.env['PATH'] ?? '', PYTHONPATH, PYTHONDONTWRITEBYTECODE: '1', ...env },
    timeout: 120_000,
  });
  return JSON.parse(stdout);
}

describe('the Python SDK against a real server', { timeout: 180_000, skip: pythonMissing() }, () => {
  let work: string;
  let dirs: ServerDirs;
  let server: ServerProcess;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'aegis-sdk-python-'));
    dirs = serverDirs();
    server = await startServerProcess({ dirs });
  });

  after(async () => {
    await killServers();
    dirs?.cleanup();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('deploys, executes, waits, follows logs, pages ps, cancels and raises typed errors', async () => {
    const agent = join(work, 'agent');
    mkdirSync(join(agent, 'lib'), { recursive: true });
    writeFileSync(join(agent, 'agent.yaml'), AGENT_YAML);
    writeFileSync(join(agent, 'main.py'), MAIN);
    writeFileSync(join(agent, 'lib', '__init__.py'), '');
    writeFileSync(join(agent, 'lib', 'ticks.py'), 'def tick(i):\n    return f"tick {i}"\n');
    writeFileSync(join(agent, 'big.log'), 'x'.repeat(1000));
    writeFileSync(join(agent, '.aegisignore'), '*.log\n');
    const bad = join(work, 'bad');
    mkdirSync(bad);
    writeFileSync(
      join(bad, 'agent.yaml'),
      'apiVersion: aegis.dev/v1\nkind: Agent\nmetadata: { name: Bad! }\n',
    );

    const out = await python(SCRIPT, [server.url, agent, bad], { AEGIS_API_KEY: server.adminKey });

    assert.equal(out.packedFiles, 5, 'agent.yaml, main.py, .aegisignore, lib/__init__.py, lib/ticks.py');
    assert.deepEqual(out.deploy, [true, false, 1], 'the same directory again changes nothing');
    assert.deepEqual(out.wait, [true, 'succeeded', { ticks: 3 }]);
    assert.deepEqual(out.execWait, ['succeeded', { ticks: 2 }]);
    assert.deepEqual(out.follow, {
      ticks: ['tick 1', 'tick 2', 'tick 3', 'tick 4'],
      last: 'end',
      status: 'succeeded',
    });
    assert.deepEqual(out.logsPage, ['tick 1', 'tick 2', 'tick 3', 'tick 4']);
    assert.deepEqual(out.followAfter, ['line', 'end'], 'after= resumes past the lines already seen');
    assert.deepEqual(out.ps, [1, true]);
    assert.equal(out.psAll, 3, 'the cursor pages through all three executions, one per page');
    assert.equal(out.cancel[0], 'killed');
    assert.match(out.cancel[1], /cancelled/);
    assert.deepEqual(out.errors.notFound, {
      type: 'NotFoundError',
      code: 'NOT_FOUND',
      status: 404,
      hasHint: out.errors.notFound.hasHint,
      problems: 0,
      details: out.errors.notFound.details,
    });
    assert.equal(out.errors.badKey.type, 'AuthError');
    assert.equal(out.errors.badKey.code, 'UNAUTHENTICATED');
    assert.equal(out.errors.badKey.status, 401);
    assert.equal(out.errors.badManifest.type, 'InvalidRequestError');
    assert.equal(out.errors.badManifest.code, 'MANIFEST_INVALID');
    assert.equal(out.errors.badManifest.status, 400);
    assert.ok(out.errors.badManifest.problems > 0, 'located problems come through');
    assert.deepEqual(
      { ...out.errors.noManifest, details: undefined },
      { type: 'NotFoundError', code: 'NOT_FOUND', status: 0, hasHint: true, problems: 0, details: undefined },
      'packing a directory without agent.yaml fails before any upload',
    );
  });

  it('resumes a dropped log stream with Last-Event-ID, losing and repeating no line', async () => {
    const out = await python(RESUME_SCRIPT, []);
    assert.deepEqual(out.items, ['line 1', 'line 2', 'line 3', 'succeeded']);
    assert.equal(out.seen.length, 2);
    assert.equal(out.seen[0].lastEventId, null);
    assert.equal(out.seen[1].lastEventId, '2');
    assert.match(out.seen[1].path, /[?&]after=2(&|$)/);
  });
});
