/**
 * `.aegisignore`: which files of an agent directory stay out of its bundle — a subset of `.gitignore`, documented in
 * pack.ts. Pure: the packer feeds it paths relative to the agent directory (`/`-separated). The CLI's packer
 * (src/adapters/bundle/pack.ts) uses these same rules; test/sdk-pack.test.ts checks both pack alike.
 */

interface Rule {
  readonly negate: boolean;
  readonly dirOnly: boolean;
  readonly regex: RegExp;
}

/** Always left out, whatever `.aegisignore` says (`!` cannot bring them back). */
const BUILT_IN = ['.git', 'node_modules/.cache'];

export class IgnoreRules {
  readonly #builtIn: readonly Rule[];
  readonly #rules: readonly Rule[];

  constructor(text = '') {
    this.#builtIn = BUILT_IN.map((pattern) => parseLine(`**/${pattern}`)!);
    this.#rules = text
      .split(/\r?\n/)
      .map(parseLine)
      .filter((rule) => rule !== undefined);
  }

  /**
   * True when `path` (relative, no leading or trailing `/`) is left out. The last matching rule wins. The packer
   * does not descend into ignored directories, so nothing below one can be brought back — as with git.
   */
  ignores(path: string, isDir: boolean): boolean {
    const matches = (rule: Rule) => (!rule.dirOnly || isDir) && rule.regex.test(path);
    if (this.#builtIn.some(matches)) return true;
    let ignored = false;
    for (const rule of this.#rules) {
      if (matches(rule)) ignored = !rule.negate;
    }
    return ignored;
  }
}

function parseLine(line: string): Rule | undefined {
  let pattern = line.trimEnd();
  if (pattern === '' || pattern.startsWith('#')) return undefined;
  const negate = pattern.startsWith('!');
  if (negate) pattern = pattern.slice(1);
  const dirOnly = pattern.endsWith('/');
  pattern = pattern.replace(/\/+$/, '');
  // A slash at the start or in the middle anchors the pattern to the agent directory; otherwise it matches a
  // name at any depth.
  const anchored = pattern.includes('/');
  pattern = pattern.replace(/^\/+/, '');
  if (pattern === '') return undefined;
  const body = globToRegex(pattern);
  return { negate, dirOnly, regex: new RegExp(anchored ? `^${body}$` : `^(?:.*/)?${body}$`, 's') };
}

function globToRegex(pattern: string): string {
  const segments = pattern.split('/');
  let out = '';
  segments.forEach((segment, i) => {
    const last = i === segments.length - 1;
    if (segment === '**') {
      // `a/**` is everything inside a; `**/b` and `a/**/b` match zero or more directories.
      out += last ? '.+' : '(?:[^/]+/)*';
      return;
    }
    out += segmentToRegex(segment) + (last ? '' : '/');
  });
  return out;
}

function segmentToRegex(segment: string): string {
  let out = '';
  for (let i = 0; i < segment.length; i++) {
    const c = segment[i]!;
    if (c === '*') {
      while (segment[i + 1] === '*') i++;
      out += '[^/]*';
    } else if (c === '?') {
      out += '[^/]';
    } else {
      out += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
    }
  }
  return out;
}
