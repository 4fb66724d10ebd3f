/**
 * Bounds on what hostile input can make the server do or say back (issue 9 item 8): JSON nested deeper than any
 * agent input needs is refused before anything recursive (JSON.stringify, canonical JSON, the store) sees it, and an
 * error never echoes more than a prefix of the value that caused it.
 */
import { AegisError } from './errors.ts';
import { formatPath, type PathSegment } from './json-path.ts';

/** Deepest nesting accepted in an execution's input (objects and arrays). Far above real inputs, far below a stack. */
export const MAX_INPUT_DEPTH = 100;

/**
 * The path of the first container nested deeper than `maxDepth`, or undefined. Iterative, so a 10,000-deep value
 * cannot overflow the stack of the check itself.
 */
export function tooDeepAt(value: unknown, maxDepth: number): PathSegment[] | undefined {
  const stack: { value: unknown; path: PathSegment[] }[] = [{ value, path: [] }];
  while (stack.length > 0) {
    const { value: current, path } = stack.pop()!;
    if (current === null || typeof current !== 'object') continue;
    if (path.length >= maxDepth) return path;
    if (Array.isArray(current)) {
      for (let i = current.length - 1; i >= 0; i--) stack.push({ value: current[i], path: [...path, i] });
    } else {
      for (const [key, child] of Object.entries(current)) stack.push({ value: child, path: [...path, key] });
    }
  }
  return undefined;
}

/** Refuses an execution input nested deeper than MAX_INPUT_DEPTH with a USAGE error located at the first such value. */
export function checkInputDepth(input: unknown, where = 'input'): void {
  const at = tooDeepAt(input, MAX_INPUT_DEPTH);
  if (at === undefined) return;
  const path = boundText(formatPath([where, ...at]), 200);
  throw new AegisError('USAGE', `${where}: nested more than ${MAX_INPUT_DEPTH} levels deep (at ${path})`, {
    problems: [{ path, message: `more than ${MAX_INPUT_DEPTH} levels of nested objects/arrays` }],
    hint: `flatten the input; at most ${MAX_INPUT_DEPTH} levels of nesting are accepted`,
  });
}

/** `text` if it fits in `maxChars`, else its prefix and how much was left out. */
export function boundText(text: string, maxChars: number): string {
  if (text.length <= maxChars) return text;
  return `${text.slice(0, maxChars)}… (${text.length - maxChars} more characters)`;
}
