/**
 * AEGIS's seccomp policy (sandbox/seccomp.ts DENIED_SYSCALLS: default-allow, a deny-list, and the socket-family
 * allow-list) as a Docker seccomp JSON profile, passed as `SecurityOpt: ["seccomp=<json>"]`. Docker's own default
 * profile (20.10) lets AF_VSOCK sockets through — a host-global channel — so the docker runtime uses this one:
 * the same agent.yaml gets the same syscall surface under `sandbox` and `docker`.
 *
 * libseccomp compares all 64 bits of an argument while the kernel reads an `int` argument's low 32: every
 * "equals" test is MASKED_EQ with mask 0xffffffff (high bits cannot smuggle a denied value past it), and "greater
 * than" tests also catch any value with high bits set (which over-denies nonsense values, never under-denies).
 */
import { DENIED_SYSCALLS, type DeniedSyscall, type SeccompArch } from '../sandbox/seccomp.ts';

const ERRNO: Readonly<Record<DeniedSyscall['errno'], number>> = { EPERM: 1, ENOSYS: 38, EAFNOSUPPORT: 97 };
const LOW32 = 0xffffffff;
/** Gaps between allowed values up to this size are listed value by value (single-comparison rules). */
const MAX_LISTED_GAP = 64;

interface ArgRule {
  readonly index: number;
  readonly value: number;
  readonly valueTwo: number;
  readonly op: 'SCMP_CMP_MASKED_EQ' | 'SCMP_CMP_GT' | 'SCMP_CMP_GE' | 'SCMP_CMP_LE';
}

interface SyscallRule {
  readonly names: readonly string[];
  readonly action: 'SCMP_ACT_ERRNO';
  readonly errnoRet: number;
  readonly args: readonly ArgRule[];
}

export interface DockerSeccompProfile {
  readonly defaultAction: 'SCMP_ACT_ALLOW';
  readonly architectures: readonly string[];
  readonly syscalls: readonly SyscallRule[];
}

const ARCHES: Readonly<Record<SeccompArch, string>> = {
  x86_64: 'SCMP_ARCH_X86_64',
  aarch64: 'SCMP_ARCH_AARCH64',
};

const equals = (index: number, value: number): ArgRule => ({
  index,
  value: LOW32,
  valueTwo: value,
  op: 'SCMP_CMP_MASKED_EQ',
});

/** Argument conditions (each list is AND-ed; the lists are OR-ed) under which the syscall is denied. */
function denyConditions(when: DeniedSyscall['when']): ArgRule[][] {
  if (when === undefined) return [[]];
  if ('anyBitOf' in when) {
    const out: ArgRule[][] = [];
    for (let bit = 1; bit !== 0 && bit <= when.anyBitOf; bit = (bit << 1) >>> 0) {
      if ((when.anyBitOf & bit) !== 0)
        out.push([{ index: when.arg, value: bit, valueTwo: bit, op: 'SCMP_CMP_MASKED_EQ' }]);
    }
    return out;
  }
  if ('oneOf' in when) return when.oneOf.map((value) => [equals(when.arg, value)]);
  // noneOf: deny the complement of the allowed values, range by range.
  const allowed = [...new Set(when.noneOf)].sort((a, b) => a - b);
  const out: ArgRule[][] = [];
  let from = 0;
  for (const value of [...allowed, LOW32 + 1]) {
    const to = value - 1;
    if (from <= to) {
      if (to === LOW32) out.push([{ index: when.arg, value: from - 1, valueTwo: 0, op: 'SCMP_CMP_GT' }]);
      else if (to - from < MAX_LISTED_GAP) for (let v = from; v <= to; v++) out.push([equals(when.arg, v)]);
      else {
        out.push([
          { index: when.arg, value: from, valueTwo: 0, op: 'SCMP_CMP_GE' },
          { index: when.arg, value: to, valueTwo: 0, op: 'SCMP_CMP_LE' },
        ]);
      }
    }
    from = value + 1;
  }
  // Values with high bits set (the low word allowed or not): no int argument carries them.
  if (allowed.at(-1) === LOW32) out.push([{ index: when.arg, value: LOW32, valueTwo: 0, op: 'SCMP_CMP_GT' }]);
  return out;
}

export function dockerSeccompProfile(arch: SeccompArch): DockerSeccompProfile {
  const syscalls: SyscallRule[] = [];
  for (const [name, rule] of Object.entries(DENIED_SYSCALLS)) {
    if (rule.nr[arch] === null) continue;
    for (const args of denyConditions(rule.when)) {
      syscalls.push({ names: [name], action: 'SCMP_ACT_ERRNO', errnoRet: ERRNO[rule.errno], args });
    }
  }
  return { defaultAction: 'SCMP_ACT_ALLOW', architectures: [ARCHES[arch]], syscalls };
}
