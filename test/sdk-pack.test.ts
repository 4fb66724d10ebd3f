/**
 * The SDK's packAgent (sdk/pack.ts, standalone) and the CLI's packAgentDir (src/adapters/bundle/pack.ts) must make
 * the same bundle, byte for byte, so a deploy gives the same digest whichever packed it, and refuse the same things.
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { AegisApiError, packAgent } from '../sdk/index.ts';
import { packAgentDir } from '../src/adapters/bundle/pack.ts';
import { AegisError } from '../src/domain/errors.ts';

const ROOT = join(import.meta.dirname, '..');
const temps: string[] = [];
after(() => {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

function tree(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-sdk-pack-'));
  temps.push(dir);
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
  return dir;
}

/** The entry names of a .tar.gz (ustar names: 100 bytes at offset 0 of each 512-byte header). */
function names(bytes: Uint8Array): string[] {
  const tar = gunzipSync(bytes);
  const out: string[] = [];
  for (let offset = 0; offset + 512 <= tar.length; ) {
    const header = tar.subarray(offset, offset + 512);
    if (header.every((b) => b === 0)) break;
    const name = header.subarray(0, 100).toString('utf8').replace(/\0.*$/s, '');
    const size = Number.parseInt(header.subarray(124, 136).toString('utf8').replace(/\0.*$/s, '').trim(), 8);
    out.push(name);
    offset += 512 + Math.ceil(size / 512) * 512;
  }
  return out;
}

describe('packAgent (SDK) ≡ packAgentDir (CLI)', () => {
  it('the examples pack to the same bytes', async () => {
    for (const example of ['hello-python', 'hello-node', 'email-summarizer']) {
      const dir = join(ROOT, 'examples', example);
      const [sdk, cli] = await Promise.all([packAgent(dir), packAgentDir(dir)]);
      assert.equal(sdk.digest, cli.digest, example);
      assert.equal(sdk.files, cli.files, example);
      assert.deepEqual(Buffer.from(sdk.bytes), Buffer.from(cli.bytes), example);
    }
  });

  it('honours .aegisignore as the CLI does (anchors, dir-only, **, negation, built-ins)', async () => {
    const dir = tree({
      'agent.yaml': 'kind: Agent\n',
      'main.py': 'print(1)\n',
      '.aegisignore': '# build outputs\n*.log\n/build\ncache/\ndocs/**/*.tmp\n!keep.log\n',
      'debug.log': 'x',
      'keep.log': 'kept',
      'build/out.bin': 'x',
      'src/build/kept.txt': 'nested build is not anchored',
      'cache/a': 'x',
      'src/cache/b': 'x',
      'docs/a/b/c.tmp': 'x',
      'docs/readme.md': 'doc',
      '.git/HEAD': 'ref',
      'node_modules/.cache/x': 'x',
      'node_modules/dep/index.js': 'module.exports = 1;\n',
    });
    chmodSync(join(dir, 'main.py'), 0o750);
    const [sdk, cli] = await Promise.all([packAgent(dir), packAgentDir(dir)]);
    assert.deepEqual(Buffer.from(sdk.bytes), Buffer.from(cli.bytes));
    assert.deepEqual(names(sdk.bytes), [
      '.aegisignore',
      'agent.yaml',
      'docs/',
      'docs/a/',
      'docs/a/b/',
      'docs/readme.md',
      'keep.log',
      'main.py',
      'node_modules/',
      'node_modules/dep/',
      'node_modules/dep/index.js',
      'src/',
      'src/build/',
      'src/build/kept.txt',
    ]);
  });

  it('refuses what the CLI refuses, with the same code and message', async () => {
    const linked = tree({ 'agent.yaml': 'kind: Agent\n' });
    symlinkSync('/etc/passwd', join(linked, 'passwd'));
    const noManifest = tree({ 'main.py': '' });
    const ignoresManifest = tree({ 'agent.yaml': 'kind: Agent\n', '.aegisignore': '*.yaml\n' });
    for (const dir of [linked, noManifest, ignoresManifest]) {
      const sdkError = await packAgent(dir).then(
        () => assert.fail('packAgent accepted it'),
        (error: unknown) => error,
      );
      const cliError = await packAgentDir(dir).then(
        () => assert.fail('packAgentDir accepted it'),
        (error: unknown) => error,
      );
      assert.ok(sdkError instanceof AegisApiError && cliError instanceof AegisError);
      assert.equal(sdkError.code, cliError.code);
      assert.equal(sdkError.message, cliError.message);
      assert.equal(sdkError.status, 0);
      assert.ok(sdkError.hint, 'says what to do');
    }
  });

  it('checks the caps before uploading', async () => {
    const dir = tree({ 'agent.yaml': 'kind: Agent\n', 'big.bin': 'x'.repeat(2048) });
    await assert.rejects(packAgent(dir, { limits: { maxFileBytes: 1024 } }), (error: AegisApiError) => {
      assert.equal(error.code, 'PAYLOAD_TOO_LARGE');
      assert.match(error.message, /big\.bin/);
      return true;
    });
  });
});
