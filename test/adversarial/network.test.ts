/**
 * Adversarial: the network. With no egress granted the sandbox has its own network namespace holding only `lo`:
 * the host's loopback services, external addresses, DNS and kernel network configuration are all out of reach.
 * The host runs listeners on its loopback (TCP, UDP, an abstract unix socket) and asserts none was ever reached.
 *
 * Agents only try non-loopback addresses after checking that their namespace has no interface but `lo` and no
 * route, and then only TEST-NET-1 (192.0.2.0/24, RFC 5737), so even a regression sends nothing anywhere.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, type Server } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { adversarialRuntimes, Harness, outcomes } from './harness.ts';

const UNROUTABLE = '192.0.2.1';

/**
 * Where the runtimes answer differently, without any of them reaching anything: gVisor's own network stack
 * (netstack) says EHOSTUNREACH for a namespace with no route, serves netlink (so `ip link` lists its lo) and a
 * /sys/class/net of its own; Docker mounts a read-only /sys (the container's lo) and an empty /etc/resolv.conf.
 * Everything else — above all, that nothing of the host answers — is asserted the same on all three.
 */
const DIFFERENCES = {
  sandbox: { unreachable: 'ENETUNREACH', sysClassNet: false, resolvConf: false, ownNetlink: false },
  docker: { unreachable: 'ENETUNREACH', sysClassNet: true, resolvConf: true, ownNetlink: false },
  gvisor: { unreachable: 'EHOSTUNREACH', sysClassNet: true, resolvConf: false, ownNetlink: true },
} as const;

for (const [isolation, skip] of adversarialRuntimes()) {
  describe(`adversarial: network (${isolation})`, { concurrency: true, skip }, () => {
    let h: Harness;
    let tcp: Server;
    let udp: UdpSocket;
    let unix: Server;
    const abstractName = `aegis-adv-${randomBytes(6).toString('hex')}`;
    const reached = { tcp: 0, udp: 0, unix: 0 };
    let tcpPort = 0;
    let udpPort = 0;

    before(async () => {
      h = new Harness({ isolation });
      tcp = createServer((socket) => {
        reached.tcp++;
        socket.destroy();
      });
      await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', resolve));
      tcpPort = (tcp.address() as { port: number }).port;
      udp = createSocket('udp4', () => reached.udp++);
      await new Promise<void>((resolve) => udp.bind(0, '127.0.0.1', resolve));
      udpPort = udp.address().port;
      unix = createServer((socket) => {
        reached.unix++;
        socket.destroy();
      });
      await new Promise<void>((resolve) => unix.listen(`\0${abstractName}`, resolve));
    });
    after(async () => {
      await Promise.all([
        new Promise((resolve) => tcp.close(resolve)),
        new Promise((resolve) => unix.close(resolve)),
        new Promise<void>((resolve) => udp.close(resolve)),
      ]);
      await h.close();
    });

    it('python: only its own lo; host loopback, external addresses, DNS and netlink are unreachable', async () => {
      const result = await h.run({
        name: 'net-python',
        input: { tcpPort, udpPort, abstractName, unroutable: UNROUTABLE },
        code: `
import subprocess
AF_NETLINK, AF_PACKET = 16, 17

def tcp_connect(host, port, family=socket.AF_INET):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(3)
        s.connect((host, port))
    return True

def udp_send(host, port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return s.sendto(b"aegis", (host, port))

def abstract_connect(name):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect("\\0" + name)
    return True

def bind_host_port(port):
    # The host's port is free in the sandbox's own stack: a different network namespace.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", port))
        s.listen()
    return True

interfaces = [l.split(":")[0].strip() for l in read_text("/proc/net/dev").splitlines()[2:]]
routes = read_text("/proc/net/route").splitlines()[1:]
isolated = interfaces == ["lo"] and routes == []
external = {}
if isolated:  # never try an outside address from a namespace that could reach one
    external = {
        "tcp": attempt(tcp_connect, INPUT["unroutable"], 80),
        "udp": attempt(udp_send, INPUT["unroutable"], 53),
    }
ip = subprocess.run(["ip", "link"], capture_output=True, text=True, timeout=10)
report({
    "interfaces": interfaces,
    "routes": routes,
    "sysClassNet": attempt(os.listdir, "/sys/class/net"),
    "resolvConf": attempt(read_text, "/etc/resolv.conf"),
    "external": external,
    "hostLoopback": {
        "tcp": attempt(tcp_connect, "127.0.0.1", INPUT["tcpPort"]),
        "tcp6": attempt(tcp_connect, "::1", INPUT["tcpPort"], socket.AF_INET6),
        "abstractUnix": attempt(abstract_connect, INPUT["abstractName"]),
    },
    "udpToHostPort": attempt(udp_send, "127.0.0.1", INPUT["udpPort"]),
    "bindHostPort": attempt(bind_host_port, INPUT["tcpPort"]),
    "dns": attempt(socket.getaddrinfo, "example.com", 443),
    "localhost": attempt(socket.gethostbyname, "localhost"),
    "sockets": {
        "netlink": attempt(lambda *a: socket.socket(*a).close() or True, AF_NETLINK, socket.SOCK_RAW, 0),
        "packet": attempt(lambda *a: socket.socket(*a).close() or True, AF_PACKET, socket.SOCK_RAW, 0),
        "raw": attempt(lambda *a: socket.socket(*a).close() or True, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
    },
    "ipLink": {"rc": ip.returncode, "out": ip.stdout + ip.stderr},
})
`,
      });
      assert.equal(result.record.status, 'succeeded', Harness.transcript(result));
      const r = result.report;
      const expected = DIFFERENCES[isolation];
      assert.deepEqual(r['interfaces'], ['lo']);
      assert.deepEqual(r['routes'], []);
      if (expected.sysClassNet) assert.deepEqual(r['sysClassNet'], { ok: true, value: ['lo'] });
      else assert.equal(r['sysClassNet'].errno, 'ENOENT');
      if (expected.resolvConf) assert.deepEqual(r['resolvConf'], { ok: true, value: '' }, 'no nameserver');
      else assert.equal(r['resolvConf'].errno, 'ENOENT');
      assert.deepEqual(
        { tcp: r['external'].tcp?.errno, udp: r['external'].udp?.errno },
        { tcp: expected.unreachable, udp: expected.unreachable },
      );
      for (const [what, outcome] of outcomes(r['hostLoopback'])) {
        assert.equal(outcome.errno, 'ECONNREFUSED', `${what}: ${JSON.stringify(outcome)}`);
      }
      // UDP to the host's port "works" — into the sandbox's own lo, where nobody listens — and never reaches the host.
      assert.equal(r['udpToHostPort'].ok, true);
      assert.deepEqual(r['bindHostPort'], { ok: true, value: true });
      assert.equal(r['dns'].errno, 'EAI', `DNS resolved: ${JSON.stringify(r['dns'])}`);
      assert.deepEqual(r['localhost'], { ok: true, value: '127.0.0.1' });
      assert.equal(r['sockets'].raw.errno, 'EPERM');
      if (expected.ownNetlink) {
        // gVisor answers netlink from its own netstack: its lo, nothing of the host's.
        assert.deepEqual(r['sockets'].netlink, { ok: true, value: true });
        assert.equal(r['sockets'].packet.errno, 'EPERM');
        assert.deepEqual(r['ipLink'].out.match(/^\d+: [^:]+/gm), ['1: lo'], r['ipLink'].out);
      } else {
        assert.equal(r['sockets'].netlink.errno, 'EAFNOSUPPORT');
        assert.equal(r['sockets'].packet.errno, 'EAFNOSUPPORT');
        assert.notEqual(r['ipLink'].rc, 0, r['ipLink'].out);
      }
      assert.deepEqual(reached, { tcp: 0, udp: 0, unix: 0 }, 'a host listener was reached from the sandbox');
    });

    it('node: net.connect, dgram, dns and fetch all fail the same way', async () => {
      const result = await h.run({
        name: 'net-node',
        language: 'node',
        input: { tcpPort, udpPort, unroutable: UNROUTABLE },
        code: `
import { readFileSync } from 'node:fs';
import net from 'node:net';
import dgram from 'node:dgram';
import dns from 'node:dns/promises';

const input = JSON.parse(readFileSync(process.env.AEGIS_INPUT, 'utf8'));
const settle = (promise) => promise.then(
  (value) => ({ ok: true, value }),
  (error) => ({ ok: false, code: error.code ?? error.cause?.code ?? null, error: String(error.cause ?? error) }),
);
const connect = (host, port) => new Promise((resolve, reject) => {
  const socket = net.connect({ host, port, timeout: 3000 });
  socket.once('connect', () => { socket.destroy(); resolve(true); });
  socket.once('timeout', () => { socket.destroy(); reject(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })); });
  socket.once('error', reject);
});
const udpSend = (host, port) => new Promise((resolve, reject) => {
  const socket = dgram.createSocket('udp4');
  socket.send('aegis', port, host, (error, bytes) => { socket.close(); error ? reject(error) : resolve(bytes); });
});

const interfaces = readFileSync('/proc/net/dev', 'utf8').split('\\n').slice(2).filter(Boolean)
  .map((l) => l.split(':')[0].trim());
const routes = readFileSync('/proc/net/route', 'utf8').split('\\n').slice(1).filter(Boolean);
const isolated = interfaces.length === 1 && interfaces[0] === 'lo' && routes.length === 0;
const report = {
  interfaces,
  hostTcp: await settle(connect('127.0.0.1', input.tcpPort)),
  hostUdp: await settle(udpSend('127.0.0.1', input.udpPort)),
  dns: await settle(dns.lookup('example.com')),
  external: isolated ? {
    tcp: await settle(connect(input.unroutable, 80)),
    udp: await settle(udpSend(input.unroutable, 53)),
    fetch: await settle(fetch('http://' + input.unroutable + '/', { signal: AbortSignal.timeout(5000) })),
  } : {},
};
console.log(JSON.stringify(report));
`,
      });
      assert.equal(result.record.status, 'succeeded', Harness.transcript(result));
      const r = result.report;
      assert.deepEqual(r['interfaces'], ['lo']);
      assert.equal(r['hostTcp'].code, 'ECONNREFUSED', JSON.stringify(r['hostTcp']));
      assert.equal(r['hostUdp'].ok, true, 'UDP to 127.0.0.1 goes to the sandbox lo');
      assert.ok(['ENOTFOUND', 'EAI_AGAIN'].includes(r['dns'].code), `DNS: ${JSON.stringify(r['dns'])}`);
      const unreachable = DIFFERENCES[isolation].unreachable;
      assert.equal(r['external'].tcp?.code, unreachable, JSON.stringify(r['external']));
      assert.equal(r['external'].udp?.code, unreachable, JSON.stringify(r['external']));
      assert.equal(r['external'].fetch?.code, unreachable, JSON.stringify(r['external']));
      assert.deepEqual(reached, { tcp: 0, udp: 0, unix: 0 }, 'a host listener was reached from the sandbox');
    });
  });
}
