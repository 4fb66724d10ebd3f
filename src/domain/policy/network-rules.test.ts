import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  compileNetworkPolicy,
  DENY_ALL,
  describeRule,
  evaluate,
  evaluateName,
  evaluateResolved,
  type NetworkPolicy,
  type NetworkRule,
  parseHost,
  parseNetworkRule,
  toViolation,
  violationMessage,
} from './network-rules.ts';

function rule(text: string): NetworkRule {
  const parsed = parseNetworkRule(text);
  assert.ok(parsed.ok, `${text}: ${parsed.ok ? '' : parsed.error}`);
  return parsed.rule;
}

function ruleError(text: string): string {
  const parsed = parseNetworkRule(text);
  assert.equal(parsed.ok, false, `${text} should be refused`);
  return (parsed as { error: string }).error;
}

function policy(allow: string[], deny: string[] = []): NetworkPolicy {
  const compiled = compileNetworkPolicy({ allow, deny });
  if (!compiled.ok) assert.fail(compiled.problems.map((problem) => problem.message).join('; '));
  return compiled.policy;
}

describe('parseNetworkRule: every form', () => {
  const cases: [string, Partial<NetworkRule> & { canonical: string }][] = [
    ['api.openai.com', { kind: 'host', ports: undefined, canonical: 'api.openai.com' }],
    ['API.OpenAI.com.', { kind: 'host', canonical: 'api.openai.com' }],
    ['api.openai.com:443', { kind: 'host', ports: { low: 443, high: 443 }, canonical: 'api.openai.com:443' }],
    ['localhost', { kind: 'host', canonical: 'localhost' }],
    ['_srv.example.com', { kind: 'host', canonical: '_srv.example.com' }],
    ['*.example.com', { kind: 'wildcard', canonical: '*.example.com' }],
    [
      '*.Example.COM:8000-8100',
      { kind: 'wildcard', ports: { low: 8000, high: 8100 }, canonical: '*.example.com:8000-8100' },
    ],
    ['10.0.0.5', { kind: 'cidr', canonical: '10.0.0.5' }],
    ['10.0.0.5:22', { kind: 'cidr', ports: { low: 22, high: 22 }, canonical: '10.0.0.5:22' }],
    ['10.0.0.0/8', { kind: 'cidr', canonical: '10.0.0.0/8' }],
    ['10.0.0.0/8:1-1024', { kind: 'cidr', ports: { low: 1, high: 1024 }, canonical: '10.0.0.0/8:1-1024' }],
    ['0.0.0.0/0', { kind: 'cidr', canonical: '0.0.0.0/0' }],
    ['::1', { kind: 'cidr', canonical: '::1' }],
    ['2001:db8::1', { kind: 'cidr', canonical: '2001:db8::1' }],
    ['[2001:db8::1]', { kind: 'cidr', canonical: '2001:db8::1' }],
    ['[2001:DB8::1]:443', { kind: 'cidr', ports: { low: 443, high: 443 }, canonical: '[2001:db8::1]:443' }],
    ['2001:db8::/32', { kind: 'cidr', canonical: '2001:db8::/32' }],
    ['[2001:db8::/32]:443-444', { kind: 'cidr', canonical: '[2001:db8::/32]:443-444' }],
    ['::/0', { kind: 'cidr', canonical: '::/0' }],
    ['::ffff:10.0.0.1', { kind: 'cidr', canonical: '10.0.0.1' }],
    [
      '  example.com:65535  ',
      { kind: 'host', ports: { low: 65535, high: 65535 }, canonical: 'example.com:65535' },
    ],
  ];
  for (const [text, expected] of cases) {
    it(text, () => {
      const parsed = rule(text);
      const { canonical, ...fields } = expected;
      for (const [key, value] of Object.entries(fields)) {
        assert.deepEqual((parsed as unknown as Record<string, unknown>)[key], value, key);
      }
      assert.equal(parsed.text, text.trim(), 'decisions quote the rule as written');
      assert.equal(describeRule(parsed), canonical);
    });
  }
});

describe('parseNetworkRule: errors say what is wrong and give an example', () => {
  const cases: [string, RegExp][] = [
    ['', /empty; e\.g\. api\.example\.com:443/],
    [
      'https://api.openai.com/v1',
      /is a URL; write the host .* without "https:\/\/", e\.g\. api\.openai\.com:443/,
    ],
    ['api.openai.com/v1', /looks like a URL path.*e\.g\. api\.openai\.com/],
    ['api.example.com:0', /not a port \(1-65535\).*e\.g\./],
    ['api.example.com:65536', /not a port/],
    ['api.example.com:https', /"https" is not a port/],
    ['api.example.com:', /"" is not a port/],
    ['api.example.com:100-10', /reversed; write 10-100/],
    ['api.example.com:1-2-3', /not a port/],
    ['*', /bare "\*".*0\.0\.0\.0\/0 and ::\/0/],
    ['*:443', /bare "\*"/],
    ['foo.*.com', /only allowed as the whole first label, e\.g\. \*\.example\.com/],
    ['*example.com', /only allowed as the whole first label/],
    ['*.', /empty host name/],
    ['bücher.example', /non-ASCII.*punycode.*xn--bcher-kva\.example/],
    ['*.bücher.example', /non-ASCII/],
    ['exa mple.com', /whitespace/],
    ['-bad.example.com', /invalid label "-bad"/],
    ['a..b', /empty label/],
    [`${'a'.repeat(64)}.com`, /invalid label/],
    ['10.0.0.256', /above 255/],
    ['010.0.0.1', /leading zero/],
    ['127.1', /four decimal octets/],
    ['10.0.0.5/8', /host bits set.*did you mean 10\.0\.0\.0\/8\?/],
    ['10.0.0.0/40', /prefix length "40"/],
    ['[2001:db8::1', /"\[" without "\]"; e\.g\. \[2001:db8::1\]:443/],
    ['[2001:db8::1]443', /expected ":port" after "\]"/],
    ['[10.0.0.1]:80', /brackets are for IPv6 addresses only/],
    ['1::2::3', /only once/],
    ['fe80::1%eth0', /zone ids/],
    ['0x7f000001', /numeric IPv4 address but is not a dotted quad; .* e\.g\. 127\.0\.0\.1/],
  ];
  for (const [text, pattern] of cases) {
    it(JSON.stringify(text), () => assert.match(ruleError(text), pattern));
  }

  it('compileNetworkPolicy reports every bad rule with its JSON path', () => {
    const compiled = compileNetworkPolicy({ allow: ['ok.example.com', 'bad:0'], deny: ['*'] });
    if (compiled.ok) assert.fail('should be refused');
    const problems = compiled.problems;
    assert.deepEqual(
      problems.map((problem) => problem.path),
      ['spec.security.network.allow[1]', 'spec.security.network.deny[0]'],
    );
  });
});

describe('parseHost (destinations as an agent gives them)', () => {
  it('tells names from IP literals and refuses numeric tricks', () => {
    assert.deepEqual(parseHost('Example.COM.'), { ok: true, kind: 'name', name: 'example.com' });
    assert.equal((parseHost('[::1]') as { kind: string }).kind, 'ip');
    assert.equal((parseHost('::ffff:127.0.0.1') as { kind: string }).kind, 'ip');
    assert.equal((parseHost('127.0.0.1') as { kind: string }).kind, 'ip');
    for (const trick of ['127.1', '2130706433', '0x7f.1', '0177.0.0.1', '127.0.0.1.', '1.2.3.4.5']) {
      assert.equal(parseHost(trick).ok, false, trick);
    }
  });
});

describe('evaluate', () => {
  it('denies everything by default', () => {
    const decision = evaluate(DENY_ALL, { host: 'api.example.com', address: '93.184.216.34', port: 443 });
    assert.deepEqual(decision, {
      verdict: 'deny',
      rule: 'default-deny',
      basis: 'default-deny',
      reason: 'not in allow-list',
    });
  });

  it('matches hostname rules against the name asked for, exactly', () => {
    const p = policy(['api.example.com']);
    assert.equal(
      evaluate(p, { host: 'api.example.com', address: '93.184.216.34', port: 443 }).verdict,
      'allow',
    );
    assert.equal(
      evaluate(p, { host: 'API.Example.com.', address: '93.184.216.34', port: 443 }).verdict,
      'allow',
    );
    assert.equal(
      evaluate(p, { host: 'x.api.example.com', address: '93.184.216.34', port: 443 }).verdict,
      'deny',
    );
    assert.equal(evaluate(p, { host: 'example.com', address: '93.184.216.34', port: 443 }).verdict, 'deny');
    assert.equal(
      evaluate(p, { address: '93.184.216.34', port: 443 }).verdict,
      'deny',
      'a hostname rule never matches a bare address',
    );
  });

  it('wildcards match subdomains at any depth but not the apex nor look-alikes', () => {
    const p = policy(['*.example.com']);
    const verdict = (host: string) => evaluate(p, { host, address: '93.184.216.34', port: 80 }).verdict;
    assert.equal(verdict('a.example.com'), 'allow');
    assert.equal(verdict('a.b.example.com'), 'allow');
    assert.equal(verdict('example.com'), 'deny');
    assert.equal(verdict('badexample.com'), 'deny');
    assert.equal(verdict('example.com.evil.net'), 'deny');
  });

  it('checks ports and port ranges; no port means any port', () => {
    const p = policy(['api.example.com:443', '*.svc.example:8000-8100', '93.184.216.0/24']);
    const at = (host: string | undefined, port: number, address = '198.51.99.1') =>
      evaluate(p, { ...(host ? { host } : {}), address, port }).verdict;
    assert.equal(at('api.example.com', 443), 'allow');
    assert.equal(at('api.example.com', 80), 'deny');
    assert.equal(at('a.svc.example', 8000), 'allow');
    assert.equal(at('a.svc.example', 8100), 'allow');
    assert.equal(at('a.svc.example', 8101), 'deny');
    assert.equal(at('a.svc.example', 7999), 'deny');
    assert.equal(at(undefined, 1, '93.184.216.34'), 'allow');
    assert.equal(at(undefined, 65535, '93.184.216.34'), 'allow');
  });

  it('matches IP and CIDR rules against the resolved address, for names and literals alike', () => {
    const p = policy(['93.184.216.0/24:443', '[2606:4700::/32]:443']);
    assert.equal(
      evaluate(p, { host: 'whatever.test', address: '93.184.216.34', port: 443 }).verdict,
      'allow',
    );
    assert.equal(evaluate(p, { address: '93.184.216.34', port: 443 }).rule, '93.184.216.0/24:443');
    assert.equal(evaluate(p, { address: '2606:4700:4700::1111', port: 443 }).verdict, 'allow');
    assert.equal(evaluate(p, { address: '93.184.217.1', port: 443 }).verdict, 'deny');
  });

  it('applies deny rules first', () => {
    const p = policy(
      ['*.example.com', '0.0.0.0/0'],
      ['*.evil.example.com', '93.184.216.66', 'api.example.com:22'],
    );
    const decision = evaluate(p, { host: 'x.evil.example.com', address: '93.184.216.34', port: 443 });
    assert.deepEqual(decision, {
      verdict: 'deny',
      rule: '*.evil.example.com',
      basis: 'deny-rule',
      reason: 'matches deny rule *.evil.example.com',
    });
    assert.equal(
      evaluate(p, { host: 'ok.example.com', address: '93.184.216.66', port: 443 }).rule,
      '93.184.216.66',
    );
    assert.equal(
      evaluate(p, { host: 'api.example.com', address: '93.184.216.34', port: 22 }).verdict,
      'deny',
    );
    assert.equal(
      evaluate(p, { host: 'api.example.com', address: '93.184.216.34', port: 443 }).verdict,
      'allow',
    );
  });

  it('refuses special addresses that only a hostname or broad rule reaches', () => {
    const p = policy(['api.example.com', '0.0.0.0/0', '::/0', '169.254.0.0/16']);
    const special = (address: string, host?: string) =>
      evaluate(p, { ...(host ? { host } : {}), address, port: 80 });
    assert.deepEqual(special('10.1.2.3', 'api.example.com'), {
      verdict: 'deny',
      rule: 'special-address:private',
      basis: 'special-address',
      addressClass: 'private',
      reason: 'api.example.com resolved to private address 10.1.2.3',
    });
    for (const [address, cls] of [
      ['127.0.0.1', 'loopback'],
      ['::1', 'loopback'],
      ['::ffff:127.0.0.1', 'loopback'],
      ['0.0.0.0', 'unspecified'],
      ['::', 'unspecified'],
      ['169.254.169.254', 'metadata'],
      ['::ffff:169.254.169.254', 'metadata'],
      ['fd00:ec2::254', 'metadata'],
      ['100.64.1.1', 'cgnat'],
      ['224.0.0.251', 'multicast'],
      ['255.255.255.255', 'broadcast'],
      ['fe80::1', 'link-local'],
      ['fd00::1', 'private'],
      ['::ffff:10.0.0.1', 'private'],
    ] as const) {
      const decision = special(address);
      assert.equal(decision.verdict, 'deny', address);
      assert.equal(decision.rule, `special-address:${cls}`, address);
    }
    assert.match(
      special('169.254.169.254').reason,
      /169\.254\.169\.254 is a metadata address .*inside 169\.254\.169\.254\/32/,
    );
    // 169.254.0.0/16 lies inside the link-local block, so it unlocks link-local — but not metadata.
    assert.equal(special('169.254.1.1').verdict, 'allow');
  });

  it('an explicit IP/CIDR allow rule unlocks the special address it names (mapped forms included)', () => {
    const p = policy(['10.0.0.0/8:5432', '127.0.0.1:8080', '169.254.169.254:80', '::1']);
    const decide = (address: string, port: number, host?: string) =>
      evaluate(p, { ...(host ? { host } : {}), address, port });
    assert.equal(decide('10.1.2.3', 5432, 'db.internal').verdict, 'allow');
    assert.equal(decide('10.1.2.3', 5432, 'db.internal').addressClass, 'private');
    assert.equal(decide('10.1.2.3', 5433).verdict, 'deny');
    assert.equal(decide('::ffff:10.1.2.3', 5432).verdict, 'allow');
    assert.equal(decide('127.0.0.1', 8080).rule, '127.0.0.1:8080');
    assert.equal(decide('127.0.0.2', 8080).verdict, 'deny');
    assert.equal(decide('169.254.169.254', 80).verdict, 'allow');
    assert.equal(decide('::1', 1).verdict, 'allow');
    assert.equal(decide('::ffff:127.0.0.1', 8080).verdict, 'allow');
  });

  it('says "not in allow-list" for a special address nothing allows, and keeps its class', () => {
    const decision = evaluate(DENY_ALL, { address: '10.0.0.5', port: 22 });
    assert.equal(decision.reason, 'not in allow-list');
    assert.equal(decision.addressClass, 'private');
  });

  it('denies an unparseable address as malformed', () => {
    assert.equal(evaluate(policy(['0.0.0.0/0']), { address: 'nope', port: 1 }).rule, 'malformed');
  });
});

describe('evaluateName (before any DNS query)', () => {
  it('refuses names nothing could allow without resolving them', () => {
    assert.equal(
      evaluateName(policy(['api.example.com']), { host: 'exfil.attacker.test', port: 443 })?.rule,
      'default-deny',
    );
    assert.equal(
      evaluateName(policy(['api.example.com:443']), { host: 'api.example.com', port: 80 })?.rule,
      'default-deny',
    );
    assert.equal(
      evaluateName(policy(['*.x.test'], ['*.bad.x.test']), { host: 'a.bad.x.test', port: 1 })?.rule,
      '*.bad.x.test',
    );
    assert.equal(evaluateName(DENY_ALL, { host: '0x7f.1', port: 1 })?.rule, 'malformed');
  });

  it('asks for resolution when a hostname rule matches or an IP rule covers the port', () => {
    assert.equal(
      evaluateName(policy(['api.example.com']), { host: 'api.example.com', port: 443 }),
      undefined,
    );
    assert.equal(evaluateName(policy(['10.0.0.0/8:5432']), { host: 'db.internal', port: 5432 }), undefined);
    assert.equal(
      evaluateName(policy(['10.0.0.0/8:5432']), { host: 'db.internal', port: 22 })?.rule,
      'default-deny',
    );
  });
});

describe('evaluateResolved (every answer checked)', () => {
  it('allows and names the one address to dial', () => {
    const result = evaluateResolved(policy(['api.example.com']), {
      host: 'api.example.com',
      addresses: ['93.184.216.34', '2606:2800:220:1::1'],
      port: 443,
    });
    assert.equal(result.decision.verdict, 'allow');
    assert.equal(result.address, '93.184.216.34');
  });

  it('refuses a name that also resolves to a private address (DNS rebinding)', () => {
    const result = evaluateResolved(policy(['api.example.com']), {
      host: 'api.example.com',
      addresses: ['93.184.216.34', '10.0.0.1'],
      port: 443,
    });
    assert.equal(result.address, undefined);
    assert.equal(result.decision.rule, 'special-address:private');
  });

  it('refuses mixed answers when only one of them is listed by IP', () => {
    const result = evaluateResolved(policy(['127.0.0.1/32']), {
      host: 'mixed.test',
      addresses: ['127.0.0.1', '10.0.0.1'],
      port: 80,
    });
    assert.equal(result.address, undefined);
    assert.equal(result.decision.rule, 'special-address:private');
    assert.equal(result.decision.reason, 'mixed.test resolved to private address 10.0.0.1');
  });

  it('skips unlisted public answers when another answer is allowed by IP', () => {
    const result = evaluateResolved(policy(['93.184.216.34:443']), {
      host: 'multi.test',
      addresses: ['93.184.216.99', '::ffff:93.184.216.34'],
      port: 443,
    });
    assert.equal(result.decision.verdict, 'allow');
    assert.equal(result.address, '93.184.216.34', 'the normalised address is dialled');
  });

  it('refuses when any answer matches a deny rule, and when there is no answer', () => {
    const denied = evaluateResolved(policy(['*.example.com'], ['93.184.216.0/24']), {
      host: 'a.example.com',
      addresses: ['1.1.1.1', '93.184.216.1'],
      port: 443,
    });
    assert.equal(denied.decision.rule, '93.184.216.0/24');
    assert.equal(
      evaluateResolved(DENY_ALL, { host: 'x.test', addresses: [], port: 1 }).decision.rule,
      'unresolvable',
    );
  });
});

describe('violationMessage', () => {
  it('reads as one sentence a human or an LLM can act on', () => {
    const p = policy(['api.example.com'], ['*.evil.com']);
    const notListed = { address: '10.0.0.5', port: 22 };
    assert.equal(
      violationMessage(evaluate(p, notListed), notListed),
      'network: denied connect to 10.0.0.5:22 — not in allow-list',
    );
    const evil = { host: 'c2.evil.com', address: '93.184.216.34', port: 443 };
    assert.equal(
      violationMessage(evaluate(p, evil), evil),
      'network: denied connect to c2.evil.com:443 — matches deny rule *.evil.com',
    );
    const rebound = { host: 'api.example.com', address: '10.1.2.3', port: 443 };
    assert.equal(
      violationMessage(evaluate(p, rebound), rebound),
      'network: denied connect to api.example.com:443 — api.example.com resolved to private address 10.1.2.3',
    );
    assert.equal(
      violationMessage({ verdict: 'deny', reason: 'not in allow-list' }, { address: '::1', port: 80 }),
      'network: denied connect to [::1]:80 — not in allow-list',
    );
    assert.deepEqual(toViolation(evaluate(p, evil), evil), {
      kind: 'network',
      rule: '*.evil.com',
      message: 'network: denied connect to c2.evil.com:443 — matches deny rule *.evil.com',
    });
  });
});
