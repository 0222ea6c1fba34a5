// Compares the conformance suite's results against the upstream directly
// with its results through Gatehouse, check by check.
//
// Usage: node compare.mjs REQUIREMENTS DIRECT_DIR GATEWAY_DIR
// Prints both pass counts and every check whose status differs; exits 1
// when a check that does not fail directly fails (or does not run) through
// Gatehouse, unless EXPECTED below lists it with the reason. A status
// change between SUCCESS and WARNING, INFO or SKIPPED is listed as a note. A
// check that fails directly but passes through Gatehouse is listed, not
// failed: Gatehouse re-encodes every message (rmcp's types), which can
// repair an upstream's wire format.
import fs from 'node:fs';
import path from 'node:path';

// Differences that real relaying cannot remove, keyed by
// "scenario:check-id", with the reason. Nothing that relaying could fix
// belongs here.
const EXPECTED = {
  'server-stateless:sep-2575-http-server-no-independent-requests-on-stream':
    "the reference server answers its tool test_streaming_elicitation with two JSON documents in one " +
    "application/json body (newline-delimited), which is no Streamable HTTP response: Gatehouse's client " +
    "refuses it as an invalid message (-32603), so the suite cannot look at the stream. Gatehouse itself " +
    "sends no independent request on a response stream.",
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
const unexpected = [], expected = [], better = [], notes = [];
for (const scenario of new Set([...direct.keys(), ...gateway.keys()])) {
  const d = direct.get(scenario) ?? new Map(), g = gateway.get(scenario) ?? new Map();
  for (const id of new Set([...d.keys(), ...g.keys()])) {
    const was = outcome(d.get(id)), is = outcome(g.get(id));
    if (was === is) continue;
    const key = `${scenario}:${id}`;
    const line = `${key}: ${was} directly, ${is} through Gatehouse`;
    if (EXPECTED[key]) expected.push(`${line} (expected: ${EXPECTED[key]})`);
    else if (was === 'fails' && is !== 'fails') better.push(line);
    // Neither side failed: a WARNING, INFO or SKIPPED on one side (the
    // suite does not count those as failures either). Listed, not failed.
    else if (was !== 'fails' && is !== 'fails' && is !== 'did not run') notes.push(line);
    else unexpected.push(line);
  }
}
for (const line of better) console.log(`  better through Gatehouse: ${line}`);
for (const line of notes) console.log(`  note: ${line}`);
for (const line of expected) console.log(`  ${line}`);
for (const line of unexpected) console.error(`  DIFFERENT: ${line}`);
if (unexpected.length) {
  console.error(`conformance ${requirements}: ${unexpected.length} check(s) differ through Gatehouse`);
  process.exit(1);
}
console.log(`conformance ${requirements}: no check passes directly and not through Gatehouse but those listed`);
