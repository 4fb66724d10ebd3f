// hello-node: the smallest AEGIS agent, in Node.js.
//
// Reads its input (JSON on stdin, also at /run/aegis/input.json), prints a greeting and writes its result to
// /run/aegis/output.json. Outside a sandbox:
//   echo '{"name": "Ada"}' | AEGIS_OUTPUT=/tmp/out.json node main.mjs
import { readFileSync, writeFileSync } from 'node:fs';

const INPUT = process.env.AEGIS_INPUT ?? '/run/aegis/input.json';
const OUTPUT = process.env.AEGIS_OUTPUT ?? '/run/aegis/output.json';

/** The task input as an object. `{}`, `null` or no input at all mean "use the defaults". */
function readInput() {
  let text = '';
  if (!process.stdin.isTTY) {
    try {
      text = readFileSync(0, 'utf8'); // fd 0 is stdin
    } catch {
      // stdin closed or not readable: fall back to the input file
    }
  }
  if (!text.trim()) {
    try {
      text = readFileSync(INPUT, 'utf8');
    } catch {
      text = '';
    }
  }
  const value = text.trim() ? JSON.parse(text) : null;
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? value : {};
}

const name = readInput().name || 'world';
const greeting = `Hello, ${name}!`;
console.log(
  `${greeting} (agent ${process.env.AEGIS_AGENT_NAME ?? 'hello-node'}, execution ${process.env.AEGIS_EXECUTION_ID ?? 'local'})`,
);

const result = { greeting, node: process.version, uid: process.getuid(), cwd: process.cwd() };
try {
  writeFileSync(OUTPUT, `${JSON.stringify(result, null, 2)}\n`);
} catch (error) {
  // Outside a sandbox /run/aegis may not exist: print the result as the last stdout line instead.
  console.error(`cannot write ${OUTPUT} (${error.code}); printing the result instead`);
  console.log(JSON.stringify(result));
}
