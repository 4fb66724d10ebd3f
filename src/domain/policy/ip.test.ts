import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  cidrContains,
  cidrWithin,
  formatCidr,
  formatIp,
  type IpAddress,
  parseCidr,
  parseIp,
  parseIpv4,
  parseIpv6,
  specialRangeOf,
} from './ip.ts';

function ip(text: string): IpAddress {
  const parsed = parseIp(text);
  assert.ok(parsed.ok, `${text}: ${parsed.ok ? '' : parsed.error}`);
  return parsed.ip;
}

function errorOf(result: { ok: boolean; error?: string }): string {
  assert.equal(result.ok, false);
  return (result as { error: string }).error;
}

describe('parseIpv4', () => {
  it('parses dotted quads', () => {
    assert.deepEqual(parseIpv4('10.0.0.5'), { ok: true, ip: { family: 4, value: 0x0a000005n } });
    assert.equal(formatIp(ip('255.255.255.255')), '255.255.255.255');
    assert.equal(formatIp(ip('0.0.0.0')), '0.0.0.0');
  });

  it('refuses shorthand, octal-looking and out-of-range forms with a reason', () => {
    assert.match(errorOf(parseIpv4('127.1')), /four decimal octets/);
    assert.match(errorOf(parseIpv4('010.0.0.1')), /leading zero.*write 10\.0\.0\.1/);
    assert.match(errorOf(parseIpv4('10.0.0.256')), /above 255/);
    assert.match(errorOf(parseIpv4('0x7f.0.0.1')), /not an IPv4 address/);
    assert.match(errorOf(parseIpv4('2130706433')), /not an IPv4 address/);
  });
});

describe('parseIpv6', () => {
  const cases: [string, string][] = [
    ['::1', '::1'],
    ['::', '::'],
    ['2001:DB8::1', '2001:db8::1'],
    ['2001:0db8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['fe80::', 'fe80::'],
    ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
    ['1::8', '1::8'],
    ['64:ff9b::10.0.0.1', '64:ff9b::a00:1'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
  ];
  for (const [input, canonical] of cases) {
    it(`${input} → ${canonical}`, () => assert.equal(formatIp(ip(input)), canonical));
  }

  it('normalises IPv4-mapped IPv6 to IPv4 in every spelling', () => {
    for (const text of ['::ffff:10.0.0.1', '::FFFF:a00:1', '0:0:0:0:0:ffff:10.0.0.1', '::ffff:0a00:0001']) {
      assert.deepEqual(ip(text), { family: 4, value: 0x0a000001n }, text);
    }
  });

  it('refuses malformed forms with a reason', () => {
    assert.match(errorOf(parseIpv6('1::2::3')), /only once/);
    assert.match(errorOf(parseIpv6('1:2:3:4:5:6:7')), /7 groups instead of 8/);
    assert.match(errorOf(parseIpv6('1:2:3:4:5:6:7:8:9')), /9 groups/);
    assert.match(errorOf(parseIpv6('1:2:3:4::5:6:7:8')), /too many groups/);
    assert.match(errorOf(parseIpv6('12345::')), /hex digits/);
    assert.match(errorOf(parseIpv6('fe80::1%eth0')), /zone ids/);
    assert.match(errorOf(parseIpv6(':1:2')), /empty group/);
    assert.match(errorOf(parseIpv6('::1.2.3')), /IPv4 tail/);
    assert.match(errorOf(parseIpv6('1.2.3.4::')), /IPv4 tail|hex digits/);
  });
});

describe('CIDR', () => {
  it('parses v4 and v6 blocks and single addresses', () => {
    const v4 = parseCidr('10.0.0.0/8');
    assert.ok(v4.ok);
    assert.equal(formatCidr(v4.cidr), '10.0.0.0/8');
    const v6 = parseCidr('2001:db8::/32');
    assert.ok(v6.ok);
    assert.equal(formatCidr(v6.cidr), '2001:db8::/32');
    const single = parseCidr('::1');
    assert.ok(single.ok);
    assert.equal(single.cidr.prefix, 128);
  });

  it('refuses host bits with a suggestion, and bad prefixes', () => {
    assert.match(errorOf(parseCidr('10.0.0.5/8')), /did you mean 10\.0\.0\.0\/8\?/);
    assert.match(errorOf(parseCidr('2001:db8::1/32')), /did you mean 2001:db8::\/32\?/);
    assert.match(errorOf(parseCidr('10.0.0.0/33')), /prefix length "33" \(0-32/);
    assert.match(errorOf(parseCidr('10.0.0.0/')), /prefix length/);
  });

  it('turns IPv4-mapped IPv6 blocks into IPv4 blocks', () => {
    const mapped = parseCidr('::ffff:10.0.0.0/104');
    assert.ok(mapped.ok);
    assert.equal(formatCidr(mapped.cidr), '10.0.0.0/8');
  });

  it('contains and within', () => {
    const block = (text: string) => {
      const parsed = parseCidr(text);
      assert.ok(parsed.ok);
      return parsed.cidr;
    };
    assert.ok(cidrContains(block('10.0.0.0/8'), ip('10.255.1.2')));
    assert.ok(!cidrContains(block('10.0.0.0/8'), ip('11.0.0.0')));
    assert.ok(cidrContains(block('10.0.0.0/8'), ip('::ffff:10.1.1.1')), 'mapped addresses are IPv4');
    assert.ok(cidrContains(block('0.0.0.0/0'), ip('1.2.3.4')));
    assert.ok(!cidrContains(block('0.0.0.0/0'), ip('::1')), 'families never mix');
    assert.ok(cidrContains(block('::/0'), ip('2001:db8::1')));
    assert.ok(cidrWithin(block('10.1.0.0/16'), block('10.0.0.0/8')));
    assert.ok(!cidrWithin(block('0.0.0.0/0'), block('10.0.0.0/8')));
    assert.ok(!cidrWithin(block('169.254.0.0/16'), block('169.254.169.254/32')));
  });
});

describe('special addresses', () => {
  const classOf = (text: string) => specialRangeOf(ip(text))?.class;
  const cases: [string, string | undefined][] = [
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['::1', 'loopback'],
    ['10.1.2.3', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['172.32.0.1', undefined],
    ['192.168.1.1', 'private'],
    ['fc00::1', 'private'],
    ['fd12:3456::1', 'private'],
    ['169.254.1.1', 'link-local'],
    ['fe80::1', 'link-local'],
    ['100.64.0.1', 'cgnat'],
    ['100.127.255.255', 'cgnat'],
    ['224.0.0.1', 'multicast'],
    ['239.255.255.250', 'multicast'],
    ['ff02::1', 'multicast'],
    ['0.0.0.0', 'unspecified'],
    ['0.1.2.3', 'unspecified'],
    ['::', 'unspecified'],
    ['255.255.255.255', 'broadcast'],
    ['169.254.169.254', 'metadata'],
    ['fd00:ec2::254', 'metadata'],
    ['100.100.100.200', 'metadata'],
    ['168.63.129.16', 'metadata'],
    ['::ffff:10.0.0.1', 'private'],
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:169.254.169.254', 'metadata'],
    ['64:ff9b::a9fe:a9fe', 'metadata'],
    ['64:ff9b::10.0.0.1', 'private'],
    ['64:ff9b::8.8.8.8', undefined],
    ['2002:7f00:1::', 'loopback'],
    ['2002:0808:0808::1', undefined],
    ['::127.0.0.1', 'reserved'],
    ['240.0.0.1', 'reserved'],
    ['192.0.2.1', 'reserved'],
    ['2001:db8::1', 'reserved'],
    ['8.8.8.8', undefined],
    ['1.1.1.1', undefined],
    ['2606:4700:4700::1111', undefined],
  ];
  for (const [text, expected] of cases) {
    it(`${text} is ${expected ?? 'public'}`, () => assert.equal(classOf(text), expected));
  }

  it('gives the block a rule must lie within to unlock the address', () => {
    assert.equal(formatCidr(specialRangeOf(ip('10.9.9.9'))!.block), '10.0.0.0/8');
    assert.equal(formatCidr(specialRangeOf(ip('169.254.169.254'))!.block), '169.254.169.254/32');
    assert.equal(formatCidr(specialRangeOf(ip('64:ff9b::10.0.0.1'))!.block), '64:ff9b::a00:0/104');
    assert.equal(formatCidr(specialRangeOf(ip('2002:7f00:1::'))!.block), '2002:7f00::/24');
  });
});
