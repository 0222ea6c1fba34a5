// Gatehouse against a real OpenID provider (oidc-provider, see provider.mjs):
//
// 1. delegated validation: the provider's JWT access token (client
//    credentials, resource = Gatehouse's /mcp) calls a tool; its opaque
//    token is checked by introspection and calls a tool; a made-up opaque
//    token is refused;
// 2. federated sign-in in headless Chromium: Gatehouse's login page,
//    "Sign in with Test OP", the provider's own login and consent pages,
//    back to Gatehouse's consent, a code, a Gatehouse token; the person is
//    created just in time with the role their provider group maps to.
//
// Environment: GATEHOUSE_BASE, GATEHOUSE_CLIENT_ID (a public client whose
// redirect URI is REDIRECT_URI), OP_ISSUER, CHROMIUM, GATEHOUSE_BIN,
// GATEHOUSE_DATA_DIR, GATEHOUSE_CONFIG.
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const BASE = process.env.GATEHOUSE_BASE;
const MCP = `${BASE}/mcp`;
const CLIENT_ID = process.env.GATEHOUSE_CLIENT_ID;
const OP = process.env.OP_ISSUER;
const REDIRECT_URI = 'http://127.0.0.1:9/callback';
const TIMEOUT = 15000;

let passed = 0;
function ok(what) {
  passed += 1;
  console.log(`ok ${passed} - ${what}`);
}

async function machineToken(resource) {
  const response = await fetch(`${OP}/token`, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from('agent:agent-secret-for-tests').toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams({ grant_type: 'client_credentials', resource, scope: 'tools:read' }),
  });
  assert.equal(response.status, 200, await response.clone().text());
  return (await response.json()).access_token;
}

// One stateless MCP request (protocol 2026-07-28).
async function whoami(token) {
  const response = await fetch(MCP, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${token}`,
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': '2026-07-28',
      'mcp-method': 'tools/call',
      'mcp-name': 'whoami',
    },
    body: JSON.stringify({
      jsonrpc: '2.0', id: 1, method: 'tools/call',
      params: {
        name: 'whoami', arguments: {},
        _meta: {
          'io.modelcontextprotocol/protocolVersion': '2026-07-28',
          'io.modelcontextprotocol/clientCapabilities': {},
        },
      },
    }),
  });
  return { status: response.status, text: await response.text() };
}

function gatehouse(...args) {
  return JSON.parse(execFileSync(process.env.GATEHOUSE_BIN, [
    ...args, '--json', '--data-dir', process.env.GATEHOUSE_DATA_DIR,
    '--config', process.env.GATEHOUSE_CONFIG,
  ]).toString());
}

// --- 1. Delegated validation --------------------------------------------
{
  const jwt = await machineToken(MCP);
  assert.equal(jwt.split('.').length, 3);
  const answer = await whoami(jwt);
  assert.equal(answer.status, 200, answer.text);
  assert.match(answer.text, /agent/);
  ok("the provider's JWT access token calls a tool as its client");

  const opaque = await machineToken('urn:gatehouse:opaque');
  assert.equal(opaque.split('.').length, 1);
  const viaIntrospection = await whoami(opaque);
  assert.equal(viaIntrospection.status, 200, viaIntrospection.text);
  assert.match(viaIntrospection.text, /agent/);
  ok("the provider's opaque token is introspected and calls a tool");

  const madeUp = await whoami('NotAToken-' + crypto.randomBytes(16).toString('hex'));
  assert.equal(madeUp.status, 401);
  ok('a made-up opaque token is refused');
}

// --- 2. Federated sign-in in Chromium -------------------------------------
{
  const verifier = crypto.randomBytes(32).toString('base64url');
  const challenge = crypto.createHash('sha256').update(verifier).digest('base64url');
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM, args: ['--no-sandbox'] });
  try {
    const context = await browser.newContext();
    context.setDefaultTimeout(TIMEOUT);
    context.setDefaultNavigationTimeout(TIMEOUT);
    await context.route(`${REDIRECT_URI}**`, (route) =>
      route.fulfill({ status: 200, contentType: 'text/plain', body: 'redirect captured by the test' }));
    const page = await context.newPage();
    const authorize = new URL(`${BASE}/authorize`);
    for (const [k, v] of Object.entries({
      response_type: 'code', client_id: CLIENT_ID, redirect_uri: REDIRECT_URI,
      code_challenge: challenge, code_challenge_method: 'S256', state: 'st-oidc', scope: 'tools:read',
    })) authorize.searchParams.set(k, v);
    await page.goto(authorize.toString());
    // Password sign-in is off: only the provider is offered.
    assert.equal(await page.locator('input[type=password]').count(), 0);
    await page.getByRole('link', { name: 'Sign in with Test OP' }).click();

    // The provider's own pages (oidc-provider's development login).
    await page.waitForURL((url) => url.toString().startsWith(OP));
    await page.locator('input[name=login]').fill('alice');
    await page.locator('input[name=password]').fill('any password works here');
    await page.locator('button[type=submit]').click();
    // The provider asks for consent to share the identity with Gatehouse.
    await page.waitForURL((url) => url.toString().startsWith(OP) && url.pathname.includes('/interaction/'));
    await page.locator('button[type=submit]').click();

    // Back at Gatehouse: its own consent page, for the new user.
    await page.getByRole('button', { name: 'Allow' }).waitFor();
    assert.match(await page.content(), /op:alice/);
    ok('signed in through the provider: Gatehouse asks op:alice for consent');
    const redirected = page.waitForRequest((r) => r.url().startsWith(REDIRECT_URI));
    await page.getByRole('button', { name: 'Allow' }).click();
    const params = new URL((await redirected).url()).searchParams;
    assert.equal(params.get('state'), 'st-oidc');
    const code = params.get('code');
    assert.ok(code);

    const response = await fetch(`${BASE}/oauth/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI,
        code_verifier: verifier, client_id: CLIENT_ID, resource: MCP,
      }),
    });
    assert.equal(response.status, 200);
    const tokens = await response.json();
    const answer = await whoami(tokens.access_token);
    assert.equal(answer.status, 200, answer.text);
    assert.match(answer.text, /op:alice/);
    ok("Gatehouse's own token for the provider's person calls a tool");

    const users = gatehouse('users', 'list');
    const alice = users.find((u) => u.username === 'op:alice');
    assert.ok(alice, JSON.stringify(users));
    assert.deepEqual(alice.roles, ['executor']);
    ok('the person was created just in time with the role their group maps to (mcp-ops -> executor)');
  } finally {
    await browser.close();
  }
}

console.log(`${passed} checks passed against oidc-provider`);
