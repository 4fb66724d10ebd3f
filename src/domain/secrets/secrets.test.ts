import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';
import { describe, it } from 'node:test';
import {
  makePlaceholder,
  PLACEHOLDER_PATTERN,
  placeholderMap,
  planSecrets,
  substitute,
} from './placeholder.ts';
import { createByteStreamRedactor, createStreamRedactor, Redactor, secretEncodings } from './redactor.ts';
import {
  compileSecretBindings,
  type SecretBinding,
  SecretRefs,
  secretBindingNotes,
  secretsForHost,
} from './secret-ref.ts';

const HEX = '0123456789abcdef0123456789abcdef';
const HEX2 = 'fedcba9876543210fedcba9876543210';

function bindings(refs: unknown): readonly SecretBinding[] {
  const parsed = SecretRefs.parse(refs);
  const compiled = compileSecretBindings(parsed);
  if (!compiled.ok) assert.fail(compiled.problems.map((problem) => problem.message).join('; '));
  return compiled.bindings;
}

describe('secret references', () => {
  it('accepts names, env vars and host bindings', () => {
    const parsed = SecretRefs.safeParse([
      {
        name: 'OPENAI_KEY',
        env: 'OPENAI_API_KEY',
        hosts: ['api.openai.com', '*.azure.com:443', '127.0.0.1:8080'],
      },
    ]);
    assert.equal(parsed.success, true);
  });

  it('refuses bad names, env, empty hosts, CIDR blocks, URLs, duplicates and unknown keys', () => {
    const bad = (ref: unknown, pattern: RegExp) => {
      const parsed = SecretRefs.safeParse([ref]);
      assert.equal(parsed.success, false, JSON.stringify(ref));
      assert.match(parsed.error!.issues.map((issue) => issue.message).join('\n'), pattern);
    };
    bad({ name: 'openai', env: 'X', hosts: ['a.com'] }, /upper case/);
    bad({ name: `A${'B'.repeat(64)}`, env: 'X', hosts: ['a.com'] }, /at most 64/);
    bad({ name: 'A', env: '1X', hosts: ['a.com'] }, /environment variable/);
    bad({ name: 'A', env: 'X', hosts: [] }, /at least one/);
    bad({ name: 'A', env: 'X', hosts: ['10.0.0.0/8'] }, /address block/);
    bad({ name: 'A', env: 'X', hosts: ['https://api.openai.com'] }, /is a URL/);
    bad({ name: 'A', env: 'X', hosts: ['a.com'], value: 'x' }, /value|Unrecognized/i);
    const dup = SecretRefs.safeParse([
      { name: 'A', env: 'X', hosts: ['a.com'] },
      { name: 'A', env: 'Y', hosts: ['b.com'] },
      { name: 'B', env: 'X', hosts: ['b.com'] },
    ]);
    assert.equal(dup.success, false);
    assert.deepEqual(
      dup.error!.issues.map((issue) => issue.path.join('.')),
      ['1.name', '2.env'],
    );
  });

  it('secretsForHost matches exact hosts, subdomain wildcards, ports and addresses like network rules', () => {
    const b = bindings([
      { name: 'OPENAI', env: 'OPENAI_API_KEY', hosts: ['api.openai.com'] },
      { name: 'AZURE', env: 'AZ', hosts: ['*.openai.azure.com:443'] },
      { name: 'LOCAL', env: 'LOCAL', hosts: ['127.0.0.1:8000-8100', '[::1]:9000'] },
    ]);
    const names = (host: string, port: number) => [...secretsForHost(b, host, port)].sort();
    assert.deepEqual(names('api.openai.com', 80), ['OPENAI']);
    assert.deepEqual(names('API.OpenAI.com.', 443), ['OPENAI'], 'normalised like the proxy');
    assert.deepEqual(names('evil-api.openai.com', 443), []);
    assert.deepEqual(names('api.openai.com.evil.com', 443), []);
    assert.deepEqual(names('x.openai.azure.com', 443), ['AZURE']);
    assert.deepEqual(names('x.openai.azure.com', 80), [], 'port must match');
    assert.deepEqual(names('openai.azure.com', 443), [], 'wildcard excludes the apex');
    assert.deepEqual(names('127.0.0.1', 8080), ['LOCAL']);
    assert.deepEqual(names('127.0.0.2', 8080), []);
    assert.deepEqual(names('[::1]', 9000), ['LOCAL']);
    assert.deepEqual(names('::1', 9000), ['LOCAL']);
    assert.deepEqual(names('not a host', 80), []);
  });
});

describe('placeholders', () => {
  it('have the documented shape and carry the injected randomness', () => {
    const placeholder = makePlaceholder('OPENAI_KEY', HEX);
    assert.equal(placeholder, `aegis-secret:OPENAI_KEY:${HEX}`);
    assert.equal([...placeholder.matchAll(PLACEHOLDER_PATTERN)].length, 1);
    assert.throws(() => makePlaceholder('OPENAI_KEY', 'abc'), /32 lowercase hex/);
    assert.throws(() => makePlaceholder('OPENAI_KEY', HEX.toUpperCase()), /32 lowercase hex/);
    assert.throws(() => makePlaceholder('lower', HEX), /not a secret name/);
  });

  it('planSecrets gives each secret one fresh placeholder and maps env vars to it', () => {
    const randoms = [HEX, HEX2];
    const plan = planSecrets(
      [
        { name: 'A', env: 'A_KEY' },
        { name: 'B', env: 'B_KEY' },
      ],
      () => randoms.shift()!,
    );
    assert.deepEqual(plan.env, { A_KEY: `aegis-secret:A:${HEX}`, B_KEY: `aegis-secret:B:${HEX2}` });
    const map = placeholderMap(
      plan,
      new Map([
        ['A', 'va'],
        ['B', 'vb'],
      ]),
    );
    assert.deepEqual(map.get(`aegis-secret:B:${HEX2}`), { name: 'B', value: 'vb' });
    assert.throws(() => placeholderMap(plan, new Map([['A', 'va']])), /aegis secret set B|no value/);
  });

  it('substitute injects only secrets allowed for the destination and reports the others', () => {
    const a = makePlaceholder('A', HEX);
    const b = makePlaceholder('B', HEX2);
    const map = new Map([
      [a, { name: 'A', value: 'real-a' }],
      [b, { name: 'B', value: 'real "b"' }],
    ]);
    const guessed = makePlaceholder('A', HEX2);
    const text = `Bearer ${a} x=${b} y=${guessed} z=${a}`;
    const onlyA = substitute(text, map, new Set(['A']));
    assert.equal(onlyA.text, `Bearer real-a x=${b} y=${guessed} z=real-a`);
    assert.deepEqual([...onlyA.injected], ['A']);
    assert.deepEqual([...onlyA.refused], ['B']);
    const none = substitute(text, map, new Set());
    assert.equal(none.text, text);
    assert.deepEqual([...none.refused].sort(), ['A', 'B']);
    const json = substitute(`{"k":"${b}"}`, map, new Set(['B']), (value) =>
      JSON.stringify(value).slice(1, -1),
    );
    assert.deepEqual(JSON.parse(json.text), { k: 'real "b"' });
    assert.equal(substitute('no placeholders', map, new Set(['A'])).injected.size, 0);
  });
});

describe('Redactor', () => {
  const secret = 'sk-live-Abc123/+=?&"\\ z';
  const redactor = new Redactor([
    { name: 'OPENAI', value: secret },
    { name: 'OTHER', value: 'hunter2hunter2' },
    { name: 'EMPTY', value: '' },
  ]);

  it('redacts raw values and their encodings', () => {
    const bytes = Buffer.from(secret);
    const forms = [
      secret,
      JSON.stringify(secret).slice(1, -1),
      encodeURIComponent(secret),
      encodeURIComponent(secret).replace(/%[0-9A-F]{2}/g, (hex) => hex.toLowerCase()),
      bytes.toString('base64'),
      bytes.toString('base64url'),
    ];
    for (const form of forms) {
      const out = redactor.redact(`before ${form} after`);
      assert.equal(out, 'before [REDACTED:OPENAI] after', form);
    }
    assert.equal(redactor.redact('pw=hunter2hunter2;'), 'pw=[REDACTED:OTHER];');
    assert.equal(redactor.redact('nothing here'), 'nothing here');
  });

  it('catches a value inside longer base64 text at every byte alignment', () => {
    for (const prefix of ['', 'u', 'us', 'use', 'user:']) {
      const encoded = Buffer.from(`${prefix}hunter2hunter2:tail`).toString('base64');
      const out = redactor.redact(`Authorization: Basic ${encoded}`);
      assert.match(out, /\[REDACTED:OTHER\]/, `prefix ${JSON.stringify(prefix)}: ${out}`);
    }
  });

  it('merges overlapping occurrences so no part of either value survives', () => {
    const r = new Redactor(
      [
        { name: 'A', value: 'xxab' },
        { name: 'B', value: 'abyy' },
      ],
      { encodings: false },
    );
    assert.equal(r.redact('1xxabyy2'), '1[REDACTED:A,B]2');
    assert.equal(r.redact('xxabxxab'), '[REDACTED:A][REDACTED:A]');
  });

  it('scales: many values, one pass', () => {
    const many = Array.from({ length: 2000 }, (_, i) => ({
      name: `S${i}`,
      value: `secret-value-${i}-${'q'.repeat(8)}`,
    }));
    const r = new Redactor(many);
    const text = `${'lorem ipsum '.repeat(20000)}secret-value-1234-qqqqqqqq${'dolor '.repeat(20000)}`;
    const started = performance.now();
    const out = r.redact(text);
    assert.ok(performance.now() - started < 2000);
    assert.equal((out.match(/\[REDACTED:S1234\]/g) ?? []).length, 1);
  });

  it('streaming: values split across chunks at every position are caught; nothing else is delayed past maxLength', () => {
    const text = `head ${secret} middle hunter2hunter2 tail é😀`;
    const expected = redactor.redact(text);
    for (let size = 1; size <= 9; size++) {
      const stream = createStreamRedactor(redactor);
      let out = '';
      for (let at = 0; at < text.length; at += size) {
        const emitted = stream.push(text.slice(at, at + size));
        assert.ok(!emitted.includes('hunter2'), 'no partial value may be emitted');
        out += emitted;
      }
      out += stream.end();
      assert.equal(out, expected, `chunk size ${size}`);
    }
    const stream = createStreamRedactor(redactor);
    const long = 'a'.repeat(1000);
    // Only a tail that could begin a value is held back, never more than the longest pattern minus one.
    const first = stream.push(long);
    assert.ok(first.length >= 1000 - (redactor.maxLength - 1), `held back ${1000 - first.length}`);
    assert.equal(first + stream.end(), long);
    const plain = createStreamRedactor(redactor);
    assert.equal(plain.push('nothing to hold back ~'), 'nothing to hold back ~');
  });

  it('redacts hex (both cases), \\u-escaped JSON, strictly percent-encoded and URL-encoded base64 forms', () => {
    const value = "key(é)/x'y!z*";
    const r = new Redactor([{ name: 'K', value }]);
    const bytes = Buffer.from(value);
    const forms = [
      bytes.toString('hex'),
      bytes.toString('hex').toUpperCase(),
      JSON.stringify(value).slice(1, -1).replace('é', '\\u00e9'), // Python json.dumps
      JSON.stringify(value).slice(1, -1).replace('/', '\\/'), // PHP json_encode
      encodeURIComponent(value).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`),
      encodeURIComponent(bytes.toString('base64')),
    ];
    for (const form of forms) assert.equal(r.redact(`<${form}>`), '<[REDACTED:K]>', form);
  });
});

describe('createByteStreamRedactor (the egress proxy response scanner)', () => {
  const value = 'sk-live-Ünïcode/+=?&"\\ z-0123456789';
  const placeholder = `aegis-secret:K:${'ab'.repeat(16)}`;
  const redactor = new Redactor([{ name: 'K', value }], { bytes: true, replacement: () => placeholder });
  const forms = secretEncodings(value);

  it('matches the UTF-8 bytes of every form, whatever the rest of the body is', () => {
    for (const form of forms) {
      const body = Buffer.concat([Buffer.from([0xff, 0x00, 0xc3]), Buffer.from(form), Buffer.from(' end')]);
      const stream = createByteStreamRedactor(redactor);
      const out = Buffer.concat([stream.push(body), stream.end()]);
      assert.deepEqual(
        out,
        Buffer.concat([Buffer.from([0xff, 0x00, 0xc3]), Buffer.from(placeholder), Buffer.from(' end')]),
        form,
      );
    }
  });

  it('catches every form split across two chunks at every byte position', () => {
    for (const form of forms) {
      const body = Buffer.from(`HTTP body before ${form} and after`);
      const expected = Buffer.from(`HTTP body before ${placeholder} and after`);
      for (let split = 0; split <= body.length; split++) {
        const names: string[] = [];
        const stream = createByteStreamRedactor(redactor, (span) => names.push(...span.names));
        const first = stream.push(body.subarray(0, split));
        const second = stream.push(body.subarray(split));
        const last = stream.end();
        assert.deepEqual(Buffer.concat([first, second, last]), expected, `${form} split at ${split}`);
        assert.deepEqual(names, ['K']);
        // No emitted piece holds a prefix of the form long enough to matter: the match was held back whole.
        assert.ok(!first.toString('latin1').includes(Buffer.from(form).toString('latin1')));
      }
    }
  });

  it('catches a form fed one byte at a time, and holds back only a tail that could begin a value', () => {
    const body = Buffer.from(`x${Buffer.from(value).toString('hex')}y`);
    const stream = createByteStreamRedactor(redactor);
    const pieces: Buffer[] = [];
    for (const byte of body) pieces.push(stream.push(Buffer.from([byte])));
    pieces.push(stream.end());
    assert.equal(Buffer.concat(pieces).toString(), `x${placeholder}y`);
    const idle = createByteStreamRedactor(redactor);
    assert.equal(idle.push(Buffer.from('data: {"token": 1}\n\n')).toString(), 'data: {"token": 1}\n\n');
  });
});

describe('Redactor, empty', () => {
  it('an empty redactor passes text through', () => {
    const r = new Redactor([]);
    assert.equal(r.redact('abc'), 'abc');
    const stream = createStreamRedactor(r);
    assert.equal(stream.push('abc'), 'abc');
    assert.equal(stream.end(), '');
  });
});

describe('secretBindingNotes', () => {
  const compile = (hosts: string[]) => {
    const result = compileSecretBindings([{ name: 'K', env: 'K', hosts }]);
    assert.ok(result.ok);
    return result.bindings;
  };
  it('says nothing for loopback/private literals with egress granted', () => {
    assert.deepEqual(secretBindingNotes(compile(['127.0.0.1:8080', '10.0.0.7']), 1), []);
  });
  it('explains the http:// + TLS-upgrade path for public hosts, and warns about bindings without egress', () => {
    const notes = secretBindingNotes(compile(['api.openai.com', '127.0.0.1']), 1);
    assert.equal(notes.length, 1);
    assert.match(notes[0]!, /http:\/\/ URL through the proxy.*verified TLS.*port 443/);
    assert.doesNotMatch(notes[0]!, /can never|refused/);
    assert.match(secretBindingNotes(compile(['127.0.0.1']), 0)[0]!, /network.allow is empty/);
  });
});
