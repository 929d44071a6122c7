// An AG-UI client (@ag-ui/client HttpAgent) against tether, stopping the run mid-answer.
// `make run`, then: cd examples/js && npm ci && npm run agui [-- agent-name]
import { HttpAgent } from '@ag-ui/client';

const BASE = process.env.TETHER_URL ?? 'http://127.0.0.1:8000';
const name = process.argv[2] ?? (await (await fetch(`${BASE}/agents`)).json())[0].name;
const threadId = `agui-example-${crypto.randomUUID()}`;
const agent = new HttpAgent({ url: `${BASE}/agents/${name}/agui`, threadId });
agent.addMessage({ id: crypto.randomUUID(), role: 'user', content: 'Tell me a long story.' });

let deltas = 0;
await agent.runAgent({}, {
  onTextMessageContentEvent: ({ event }) => {
    process.stdout.write(event.delta);
    if (++deltas === 8) agent.abortRun(); // the stop: drop the response
  },
  onRunFinishedEvent: ({ event }) => console.log(`\n-- RUN_FINISHED ${JSON.stringify(event.outcome)}`),
}).catch((error) => { if (error.name !== 'AbortError') throw error; });

const session = await (await fetch(`${BASE}/sessions/${threadId}`)).json();
const run = session.runs.at(-1);
console.log(`\n-- tether run ${run.run_id}: ${run.status} (${run.reason})`);
