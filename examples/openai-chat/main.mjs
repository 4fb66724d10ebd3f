// openai-chat: the official `openai` npm client, unmodified, calling a model through AEGIS.
//
// Nothing here knows about AEGIS: `new OpenAI()` reads OPENAI_BASE_URL and OPENAI_API_KEY, which AEGIS sets to the
// in-sandbox gateway and a per-execution token because agent.yaml grants `spec.llm`. The real provider key stays on
// the orchestrator. Input: {"question": "..."} (optional). Output: the answer, the same answer streamed, and usage.
import { readFileSync, writeFileSync } from 'node:fs';

const INPUT = process.env.AEGIS_INPUT ?? '/run/aegis/input.json';
const OUTPUT = process.env.AEGIS_OUTPUT ?? '/run/aegis/output.json';

let OpenAI;
try {
  ({ default: OpenAI } = await import('openai'));
} catch {
  console.error(
    'the openai package is not installed next to this agent: run `npm install --prefix examples/openai-chat`',
  );
  process.exit(2);
}

function readInput() {
  try {
    const value = JSON.parse(readFileSync(INPUT, 'utf8'));
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? value : {};
  } catch {
    return {};
  }
}

const question = String(readInput().question ?? 'In one sentence: why run AI agents in a sandbox?');
const messages = [
  { role: 'system', content: 'You answer in one short sentence.' },
  { role: 'user', content: question },
];

const client = new OpenAI(); // base URL and key from the environment AEGIS sets
try {
  const completion = await client.chat.completions.create({ model: 'default', messages });
  const answer = completion.choices[0]?.message?.content ?? '';
  console.log(answer);

  // The same question, streamed: tokens arrive as server-sent events through the gateway.
  const stream = await client.chat.completions.create({ model: 'default', messages, stream: true });
  let streamed = '';
  for await (const chunk of stream) streamed += chunk.choices[0]?.delta?.content ?? '';

  writeFileSync(
    OUTPUT,
    JSON.stringify({ question, answer, streamed, model: completion.model, usage: completion.usage ?? null }),
  );
} catch (error) {
  // The gateway's refusals (budget used up, alias not granted, upstream down) arrive as OpenAI API errors.
  if (error instanceof OpenAI.APIError) {
    console.error(`model call failed: ${error.status} ${error.message}`);
    process.exit(1);
  }
  throw error;
}
