// Gatehouse against a real OpenID provider (oidc-provider, see provider.mjs):
//
// 1. delegated validation: the provider's JWT access token (client
//    credentials, resource = Gatehouse's /mcp) calls a tool; its opaque
//    token is checked by introspection and calls a tool; a made-up opaque
//    token is refused;
// 2. federated sign-in in headless Chromium: Gatehouse's login page,
//    "Sign in with Test OP", the provider's own login and consent pages,
//    back to Gatehouse's consent, a code, a Gatehouse token; the person is
//    created just in time with the role their provider group maps to;
// 3. the same sign-in by a scripted browser over plain HTTP (bob, a reader),
//    and its callback replayed.
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
const REDIRECT_URI = 'http://localhost:9/callback';
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

// --- 3. Federated sign-in by a scripted browser (plain HTTP) --------------
// The same path without Chromium: cookies kept per origin by hand, forms
// posted as a browser would, every redirect followed explicitly.
{
  const jars = new Map();
  const jar = (url) => {
    const origin = new URL(url).origin;
    if (!jars.has(origin)) jars.set(origin, new Map());
    return jars.get(origin);
  };
  async function request(url, { method = 'GET', form } = {}) {
    const cookies = [...jar(url)].map(([k, v]) => `${k}=${v}`).join('; ');
    const response = await fetch(url, {
      method,
      redirect: 'manual',
      headers: {
        cookie: cookies,
        accept: 'text/html',
        // As a browser's top-level navigation.
        'sec-fetch-mode': 'navigate',
        'sec-fetch-dest': 'document',
        ...(form ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
      },
      body: form ? new URLSearchParams(form) : undefined,
    });
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(';');
      const at = pair.indexOf('=');
      jar(url).set(pair.slice(0, at).trim(), pair.slice(at + 1));
    }
    const location = response.headers.get('location');
    return {
      status: response.status,
      location: location && new URL(location, url).toString(),
      body: await response.text(),
      url,
    };
  }
  // Follows redirects while they stay on `origin`; returns the last answer.
  async function follow(answer, origin) {
    while (answer.location && answer.location.startsWith(origin)) {
      answer = await request(answer.location);
    }
    return answer;
  }
  const formAction = (page) => {
    const found = /<form[^>]*action="([^"]+)"/.exec(page.body);
    assert.ok(found, `no form at ${page.url} (${page.status} ${page.location}): ${page.body.replace(/\s+/g, ' ').slice(0, 1500)}`);
    return new URL(found[1].replace(/&amp;/g, '&'), page.url).toString();
  };
  const hidden = (page, name) => new RegExp(`name="${name}" value="([^"]*)"`).exec(page.body)[1].replace(/&amp;/g, '&');

  const verifier = crypto.randomBytes(32).toString('base64url');
  const challenge = crypto.createHash('sha256').update(verifier).digest('base64url');
  const authorize = new URL(`${BASE}/authorize`);
  for (const [k, v] of Object.entries({
    response_type: 'code', client_id: CLIENT_ID, redirect_uri: REDIRECT_URI,
    code_challenge: challenge, code_challenge_method: 'S256', state: 'st-scripted', scope: 'tools:read',
  })) authorize.searchParams.set(k, v);
  const login = await follow(await request(authorize.toString()), BASE);
  const link = /href="(\/oauth\/federated\/start\?[^"]+)"/.exec(login.body)[1].replace(/&amp;/g, '&');
  const started = await request(`${BASE}${link}`);
  assert.equal(started.status, 303);
  assert.ok(started.location.startsWith(OP), started.location);

  // At the provider: its login form, then its consent form.
  let page = await follow(await request(started.location), OP);
  // The hidden fields of a page's form, as a browser would post them.
  const hiddenFields = (page) => Object.fromEntries(
    [...page.body.matchAll(/<input[^>]*type="hidden"[^>]*>/g)].map(([input]) => [
      /name="([^"]*)"/.exec(input)[1],
      (/value="([^"]*)"/.exec(input) || [, ''])[1],
    ]),
  );
  page = await follow(await request(formAction(page), {
    method: 'POST', form: { ...hiddenFields(page), login: 'bob', password: 'anything' },
  }), OP);
  if (!page.location) {
    page = await follow(await request(formAction(page), { method: 'POST', form: hiddenFields(page) }), OP);
  }
  assert.ok(page.location && page.location.startsWith(`${BASE}/oauth/federated/op/callback?`), JSON.stringify(page.location));

  // Back at Gatehouse: the callback, then Gatehouse's own consent.
  const consent = await follow(await request(page.location), BASE);
  assert.match(consent.body, /op:bob/);
  const decided = await request(`${BASE}/authorize/consent`, {
    method: 'POST',
    form: { csrf: hidden(consent, 'csrf'), txn: hidden(consent, 'txn'), decision: 'approve' },
  });
  assert.ok(decided.location.startsWith(REDIRECT_URI), decided.location);
  const code = new URL(decided.location).searchParams.get('code');
  const response = await fetch(`${BASE}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI,
      code_verifier: verifier, client_id: CLIENT_ID, resource: MCP,
    }),
  });
  assert.equal(response.status, 200);
  const answer = await whoami((await response.json()).access_token);
  assert.equal(answer.status, 200, answer.text);
  assert.match(answer.text, /op:bob/);
  const bob = gatehouse('users', 'list').find((u) => u.username === 'op:bob');
  assert.deepEqual(bob.roles, ['reader']);
  ok('a scripted browser signs bob in through the provider; created just in time as a reader (mcp-readers)');

  // The same callback again: refused, the sign-in was used.
  const replay = await request(page.location);
  assert.equal(replay.status, 400);
  ok('the provider callback replayed is refused');
}

console.log(`${passed} checks passed against oidc-provider`);
