// Compares the conformance suite's results against the upstream directly
// with its results through Gatehouse, check by check.
//
// Usage: node compare.mjs REQUIREMENTS DIRECT_DIR GATEWAY_DIR
// Prints both pass counts and every check whose status differs, and exits
// 1 when a check's status differs in any way (a pass lost or gained, a
// failure, a WARNING, INFO or SKIPPED on one side only) that EXPECTED
// below does not list. The pass counts are therefore equal but for the
// listed differences, and the output says by how much and why when they
// are not.
import fs from 'node:fs';
import path from 'node:path';

// Differences that relaying cannot remove, keyed by "scenario:check-id",
// with the reason. Nothing that Gatehouse could fix belongs here. An entry
// whose difference did not show this run is reported, not failed (one is
// a race).
const upstreamNdjson =
  "the reference server streams this response as newline-delimited JSON documents in one " +
  "application/json body, which is no Streamable HTTP response (a POST is answered with one JSON " +
  "object, or with text/event-stream): Gatehouse's client (rmcp) cannot read it as a stream";
const gatehouseValidatesHeaders =
  "Gatehouse's own Streamable HTTP layer (rmcp) checks the Mcp-Method and Mcp-Name headers against " +
  "the body (SEP-2243) and answers a mismatch with HTTP 400 and -32020; the reference server does not " +
  "check them. Gatehouse cannot pass a request it refused on to be refused again";
const EXPECTED = {
  '2025-11-25': {
    'server-sse-polling:server-sse-disconnect-resume':
      "the reference server's test_reconnection closes its stream mid-call with retry: 5000; Gatehouse " +
      "closes the client's stream likewise and resumes the upstream's after the 5 s the upstream asked " +
      "for (SEP-1699), so the answer reaches the client's resumed stream about 5 s after it reconnects, " +
      "while the suite waits exactly 5 s. Reconnecting sooner would ignore the upstream's retry",
  },
  '2026-07-28': {
    'server-stateless:sep-2575-http-server-no-independent-requests-on-stream':
      `${upstreamNdjson}: the answer to test_streaming_elicitation is refused as an invalid message ` +
      "(-32603), so the suite cannot look at the stream. Gatehouse itself sends no independent request " +
      "on a response stream",
    'server-stateless:sep-2575-server-sends-tools-list-changed-on-subscription':
      `${upstreamNdjson}: Gatehouse's own subscriptions/listen stream at the upstream is never ` +
      "acknowledged, so Gatehouse does not hear of the tool change to pass it on. Gatehouse's listen " +
      "streams do relay list changes (e2e relay::a_listen_stream_hears_the_upstream_list_changes_it_asked_for)",
    'server-stateless:sep-2575-server-sends-prompts-list-changed-on-subscription':
      `${upstreamNdjson}: as for the tools list change`,
    'http-header-validation:sep-2243-server-reject-invalid-headers': gatehouseValidatesHeaders,
    'http-header-validation:sep-2243-server-reject-error-code': gatehouseValidatesHeaders,
    'tasks-request-headers:tasks-headers-reject-mismatched-method': gatehouseValidatesHeaders,
    'tasks-dispatch-and-envelope:sep-2663-legacy-task-param-ignored':
      "the reference server answers a tools/call carrying the legacy `task` parameter with an error " +
      "(\"Server does not support task creation\"); Gatehouse's server (rmcp) has no field for that " +
      "parameter, so it does not reach the upstream and the call succeeds, as SEP-2663 asks",
  },
};

const [requirements, directDir, gatewayDir] = process.argv.slice(2);

// scenario -> check id -> status, from `server-<scenario>-<timestamp>/checks.json`.
function results(dir) {
  const scenarios = new Map();
  for (const entry of fs.readdirSync(dir)) {
    const file = path.join(dir, entry, 'checks.json');
    if (!fs.existsSync(file)) continue;
    const scenario = entry.replace(/^server-/, '').replace(/-\d{4}-\d{2}-\d{2}T[\d-]+Z$/, '');
    const checks = new Map();
    for (const check of JSON.parse(fs.readFileSync(file, 'utf8'))) {
      // A check id may repeat (one per message validated): keep the worst.
      if (checks.get(check.id) !== 'FAILURE') checks.set(check.id, check.status);
    }
    scenarios.set(scenario, checks);
  }
  return scenarios;
}

function count(scenarios) {
  let passed = 0, failed = 0;
  for (const checks of scenarios.values()) {
    for (const status of checks.values()) {
      if (status === 'SUCCESS') passed++;
      if (status === 'FAILURE') failed++;
    }
  }
  return { passed, failed, scenarios: scenarios.size };
}

const direct = results(directDir);
const gateway = results(gatewayDir);
const a = count(direct), b = count(gateway);
console.log(`conformance ${requirements}: directly ${a.passed} passed, ${a.failed} failed (${a.scenarios} scenarios); ` +
  `through Gatehouse ${b.passed} passed, ${b.failed} failed (${b.scenarios} scenarios)`);

const outcome = (status) =>
  ({ SUCCESS: 'passes', FAILURE: 'fails', undefined: 'did not run' })[status] ?? `is ${status}`;
const expectedHere = EXPECTED[requirements] ?? {};
const unexpected = [], expected = [];
let gained = 0, lost = 0;
const seen = new Set();
for (const scenario of new Set([...direct.keys(), ...gateway.keys()])) {
  const d = direct.get(scenario) ?? new Map(), g = gateway.get(scenario) ?? new Map();
  for (const id of new Set([...d.keys(), ...g.keys()])) {
    const was = d.get(id), is = g.get(id);
    if (was === is) continue;
    const key = `${scenario}:${id}`;
    const line = `${key}: ${outcome(was)} directly, ${outcome(is)} through Gatehouse`;
    if (expectedHere[key]) {
      seen.add(key);
      expected.push(`${line}\n      expected: ${expectedHere[key]}`);
      if (was === 'SUCCESS') lost++;
      if (is === 'SUCCESS') gained++;
    } else {
      unexpected.push(line);
    }
  }
}
for (const line of expected) console.log(`  ${line}`);
for (const key of Object.keys(expectedHere).filter((key) => !seen.has(key))) {
  console.log(`  expected difference not seen this run: ${key}`);
}
for (const line of unexpected) console.error(`  DIFFERENT: ${line}`);
if (unexpected.length) {
  console.error(`conformance ${requirements}: ${unexpected.length} check(s) differ through Gatehouse`);
  process.exit(1);
}
if (a.passed === b.passed) {
  console.log(`conformance ${requirements}: equal pass counts (${a.passed})`);
} else {
  // Only listed differences remain (else the run failed above), and they
  // account for the whole gap.
  console.log(`conformance ${requirements}: PASS COUNTS DIFFER: ${a.passed} directly, ${b.passed} ` +
    `through Gatehouse (${gained} gained, ${lost} lost, each by a listed difference above)`);
  if (b.passed - gained + lost !== a.passed) {
    console.error(`conformance ${requirements}: the listed differences do not account for the gap`);
    process.exit(1);
  }
}
