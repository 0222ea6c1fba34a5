// Gatehouse's server-rendered pages in a real headless Chromium, driven by
// playwright-core. Run by tests/browser/run.sh, which starts a Gatehouse,
// creates a reader user and a public client, and passes them in the
// environment:
//
//   GATEHOUSE_BASE       http://127.0.0.1:PORT (the issuer)
//   GATEHOUSE_MCP_URL    http://127.0.0.1:PORT/mcp (the resource)
//   GATEHOUSE_USER       a reader's username
//   GATEHOUSE_PASSWORD   that reader's password
//   GATEHOUSE_USER2, GATEHOUSE_PASSWORD2
//                        a second reader, who never approves the code flow
//                        (consent is remembered per user and client, so
//                        the Deny and CSRF checks need a user who has not
//                        consented yet to see the consent page)
//   GATEHOUSE_CLIENT_ID  a public client whose redirect URI is REDIRECT_URI
//   CHROMIUM             the browser binary (default /usr/bin/chromium)
//
// For the approval page (operation tokens):
//
//   GATEHOUSE_APPROVER, GATEHOUSE_APPROVER_PASSWORD
//                        an executor (alice), the owner of the agent key
//   GATEHOUSE_OUTSIDER, GATEHOUSE_OUTSIDER_PASSWORD
//                        another executor of the same tenant (bob), who may
//                        not decide alice's approvals
//   GATEHOUSE_AGENT_KEY  an executor API key created with --owner alice
//   GATEHOUSE_BIN, GATEHOUSE_DATA_DIR
//                        the gatehouse binary and the server's data
//                        directory, for `gatehouse approvals list --json`
//
// Each check prints `ok: ...`; the first failure prints `FAIL: ...` and
// exits non-zero. The browser and the helper server are always closed.

import { chromium } from 'playwright-core';
import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const BASE = must('GATEHOUSE_BASE').replace(/\/$/, '');
const MCP_URL = process.env.GATEHOUSE_MCP_URL || `${BASE}/mcp`;
const USER = must('GATEHOUSE_USER');
const PASSWORD = must('GATEHOUSE_PASSWORD');
const OTHER = { user: must('GATEHOUSE_USER2'), password: must('GATEHOUSE_PASSWORD2') };
const CLIENT_ID = must('GATEHOUSE_CLIENT_ID');
const CLIENT_NAME = process.env.GATEHOUSE_CLIENT_NAME || 'web';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const APPROVER = { user: must('GATEHOUSE_APPROVER'), password: must('GATEHOUSE_APPROVER_PASSWORD') };
const OUTSIDER = { user: must('GATEHOUSE_OUTSIDER'), password: must('GATEHOUSE_OUTSIDER_PASSWORD') };
const AGENT_KEY = must('GATEHOUSE_AGENT_KEY');
const GATEHOUSE_BIN = must('GATEHOUSE_BIN');
const DATA_DIR = must('GATEHOUSE_DATA_DIR');
// The stateless MCP revision the agent speaks, and where the operation
// token goes in a retried tools/call.
const MCP_VERSION = '2026-07-28';
const OPERATION_TOKEN_META = 'io.gatehouse/operation_token';
// Registered for the client; nothing listens on port 9, and the browser is
// never expected to load it: we watch for the navigation request instead.
// On `localhost`, another cookie host than Gatehouse's 127.0.0.1 (a client
// on Gatehouse's own host is signed out by each redirect: see
// sameHostRedirect).
const REDIRECT_URI = 'http://localhost:9/callback';
const SCOPE = 'tools:read';
const ACTION_TIMEOUT = 15_000;

function must(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`FAIL: ${name} is not set (run tests/browser/run.sh)`);
    process.exit(2);
  }
  return value;
}

let passed = 0;
function ok(message) {
  passed += 1;
  console.log(`ok: ${message}`);
}
class CheckFailed extends Error {}
function assert(condition, message) {
  if (!condition) throw new CheckFailed(message);
}
function assertEqual(actual, expected, message) {
  if (actual !== expected) {
    throw new CheckFailed(`${message}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
}

const b64url = (buf) => buf.toString('base64url');
function pkce() {
  const verifier = b64url(randomBytes(32));
  const challenge = b64url(createHash('sha256').update(verifier).digest());
  return { verifier, challenge };
}

function authorizeUrl({ state, challenge }) {
  const params = new URLSearchParams({
    response_type: 'code',
    client_id: CLIENT_ID,
    redirect_uri: REDIRECT_URI,
    code_challenge: challenge,
    code_challenge_method: 'S256',
    state,
    scope: SCOPE,
    resource: MCP_URL,
  });
  return `${BASE}/authorize?${params}`;
}

// ---------------------------------------------------------------------------
// A second origin for the framing and CSRF checks: a tiny HTTP server on
// another loopback port. Reached as http://localhost:PORT it is cross-site
// to http://127.0.0.1:GATEHOUSE_PORT (another host); reached as
// http://127.0.0.1:PORT it is cross-origin but same-site (ports don't
// make a site), so the browser still sends SameSite cookies.
const attackerPages = new Map();
// The Cookie header of each request to /cb: a native client's listener on
// Gatehouse's own host, receiving the redirect.
const callbackCookies = [];
const attacker = createServer((req, res) => {
  if (new URL(req.url, 'http://x').pathname === '/cb') {
    callbackCookies.push(req.headers.cookie || '');
    res.writeHead(200, { 'content-type': 'text/plain' }).end('callback received');
    return;
  }
  const html = attackerPages.get(new URL(req.url, 'http://x').pathname);
  if (!html) {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
    return;
  }
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(html);
});
await new Promise((resolve) => attacker.listen(0, '127.0.0.1', resolve));
const ATTACKER_PORT = attacker.address().port;
const CROSS_SITE = `http://localhost:${ATTACKER_PORT}`;
const SAME_SITE = `http://127.0.0.1:${ATTACKER_PORT}`;

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// ---------------------------------------------------------------------------
// Every HTML page Gatehouse sends to the browser must refuse framing.
const htmlResponses = [];
function watchHeaders(context) {
  context.on('response', (response) => {
    if (!response.url().startsWith(BASE)) return;
    const type = response.headers()['content-type'] || '';
    if (!type.startsWith('text/html')) return;
    htmlResponses.push({ url: response.url(), status: response.status(), headers: response.headers() });
  });
}
function checkFramingHeaders(seen, what) {
  assert(seen.length > 0, `no HTML response from Gatehouse seen for ${what}`);
  for (const { url, status, headers } of seen) {
    const xfo = headers['x-frame-options'];
    const csp = headers['content-security-policy'] || '';
    assert(xfo && xfo.toUpperCase() === 'DENY', `${status} ${url}: X-Frame-Options is ${JSON.stringify(xfo)}, expected DENY`);
    assert(/(^|;)\s*frame-ancestors\s+'none'\s*(;|$)/.test(csp), `${status} ${url}: CSP has no frame-ancestors 'none': ${JSON.stringify(csp)}`);
  }
}

// Records navigation requests to the client's redirect URI (redirects
// included), and makes sure they never reach the network.
function watchRedirects(context) {
  const seen = [];
  context.on('request', (request) => {
    if (request.url().startsWith(REDIRECT_URI)) seen.push(request.url());
  });
  return seen;
}
async function newContext(browser) {
  const context = await browser.newContext();
  context.setDefaultTimeout(ACTION_TIMEOUT);
  context.setDefaultNavigationTimeout(ACTION_TIMEOUT);
  watchHeaders(context);
  const redirects = watchRedirects(context);
  // If a route is ever consulted for the redirect target, answer it
  // locally instead of touching port 9.
  await context.route(`${REDIRECT_URI}**`, (route) =>
    route.fulfill({ status: 200, contentType: 'text/plain', body: 'redirect captured by the test' }));
  return { context, redirects };
}

// Waits for the browser to be sent to the redirect URI and returns its
// query parameters.
async function redirectParams(page, action) {
  const request = page.waitForRequest((r) => r.url().startsWith(REDIRECT_URI));
  await action();
  const redirected = await request;
  // Let that navigation settle (fulfilled by the route, or failed: port 9
  // is one of Chromium's unsafe ports) before anything else uses the page.
  await redirected.response().catch(() => null);
  await page.waitForLoadState('load').catch(() => {});
  return new URL(redirected.url()).searchParams;
}

async function signIn(page, { user = USER, password = PASSWORD } = {}) {
  await page.locator('form[action="/login"]').waitFor();
  await page.getByLabel('Username').fill(user);
  await page.getByLabel('Password').fill(password);
  const response = page.waitForResponse((r) => r.url() === `${BASE}/login` && r.request().method() === 'POST');
  await page.getByRole('button', { name: 'Sign in' }).click();
  return response;
}

// The same, typing key by key as a person would instead of filling in.
async function typeAndSignIn(page, { user, password }) {
  await page.locator('form[action="/login"]').waitFor();
  await page.getByLabel('Username').click();
  await page.getByLabel('Username').pressSequentially(user);
  await page.getByLabel('Password').click();
  await page.getByLabel('Password').pressSequentially(password);
  const response = page.waitForResponse((r) => r.url() === `${BASE}/login` && r.request().method() === 'POST');
  await page.getByRole('button', { name: 'Sign in' }).click();
  return response;
}

// Opens /authorize, signs in and stops on the consent page.
async function toConsent(page, state, creds = OTHER) {
  const { challenge, verifier } = pkce();
  await page.goto(authorizeUrl({ state, challenge }));
  // Signed in already in this browser: straight to the consent page.
  const loginForm = page.locator('form[action="/login"]');
  await loginForm.or(page.locator('form[action="/authorize/consent"]')).first().waitFor();
  if (await loginForm.isVisible()) {
    const login = await signIn(page, creds);
    assertEqual(login.status(), 303, 'POST /login status');
  }
  await expectPage(page, 'form[action="/authorize/consent"]', 'the consent page');
  return { verifier };
}

// Waits for a page element, and on failure says what the page was instead.
async function expectPage(page, selector, what) {
  try {
    await page.locator(selector).waitFor();
  } catch (e) {
    const text = await page.locator('body').innerText().catch(() => '(no body)');
    throw new CheckFailed(`expected ${what} (${selector}) but the page at ${page.url()} shows:\n${text.trim().slice(0, 600)}`);
  }
}

async function noRedirectFor(redirects, ms = 750) {
  await new Promise((r) => setTimeout(r, ms));
  assertEqual(redirects.length, 0, `requests to the redirect URI (${redirects.join(', ')})`);
}

// ---------------------------------------------------------------------------
// The checks.

async function authorizationCodeFlow(browser) {
  const { context, redirects } = await newContext(browser);
  const page = await context.newPage();
  const state = b64url(randomBytes(12));
  const { verifier } = await toConsent(page, state, { user: USER, password: PASSWORD });

  const main = page.locator('main');
  await main.getByRole('heading', { name: 'Allow access?' }).waitFor();
  const text = await main.innerText();
  assert(text.includes(CLIENT_NAME), `consent page does not name the client ${CLIENT_NAME}: ${text}`);
  assert(text.includes(CLIENT_ID), `consent page does not show the client id: ${text}`);
  assert(text.includes(SCOPE), `consent page does not list the scope ${SCOPE}: ${text}`);
  assert(text.includes(USER), `consent page does not name the user ${USER}: ${text}`);
  ok(`consent page names the client "${CLIENT_NAME}" (${CLIENT_ID}), the scope ${SCOPE} and the user`);

  // The double-click guard (the page's one script, allowed by its hash in
  // the CSP): Allow is disabled while the window is not focused, and for a
  // moment after it is again, so a second click of a double click an
  // attacker's page asked for cannot land on it as the page appears.
  const allow = page.getByRole('button', { name: 'Allow' });
  await page.evaluate(() => window.dispatchEvent(new Event('blur')));
  assert(await allow.isDisabled(), 'Allow is enabled in a window that is not focused (is the guard script blocked by the CSP?)');
  await page.evaluate(() => window.dispatchEvent(new Event('focus')));
  assert(await allow.isDisabled(), 'Allow is enabled at once when the window is focused again');
  await page.waitForFunction(() => !document.querySelector('button[name=decision][value=approve]').disabled, null, { timeout: 5000 });
  ok('double-click guard: Allow is disabled while the window is unfocused and for a moment after');

  const consent = page.waitForResponse((r) => r.url() === `${BASE}/authorize/consent`);
  const params = await redirectParams(page, () => allow.click());
  assertEqual((await consent).status(), 303, 'POST /authorize/consent status');
  const code = params.get('code');
  assert(code, `no code in the redirect: ${params}`);
  assertEqual(params.get('state'), state, 'state in the redirect');
  assertEqual(params.get('iss'), BASE, 'iss in the redirect');
  assertEqual(params.get('error'), null, 'error in the redirect');
  assertEqual(redirects.length, 1, 'number of requests to the redirect URI');
  ok('authorization code flow by clicking: redirect has code, the same state and iss = issuer');

  // The code is real: it redeems once, with the verifier, for a token.
  const token = await fetch(`${BASE}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'authorization_code',
      code,
      redirect_uri: REDIRECT_URI,
      client_id: CLIENT_ID,
      code_verifier: verifier,
      resource: MCP_URL,
    }),
  });
  const body = await token.json();
  assertEqual(token.status, 200, `token endpoint status (${JSON.stringify(body)})`);
  assert(body.access_token, `no access_token: ${JSON.stringify(body)}`);
  ok('the code from the browser redeems for an access token');

  await cookieChecks(context);
  await context.close();

  // Consent is remembered per user and client: the same user, signing in
  // again in a new browser, is sent back with a code without being asked.
  const again = await newContext(browser);
  const page2 = await again.context.newPage();
  const state2 = b64url(randomBytes(12));
  await page2.goto(authorizeUrl({ state: state2, challenge: pkce().challenge }));
  const params2 = await redirectParams(page2, () => signIn(page2));
  assert(params2.get('code'), `no code after the remembered consent: ${params2}`);
  assertEqual(params2.get('state'), state2, 'state after the remembered consent');
  ok('consent is remembered: the same user signing in again is redirected with a code at once');
  await again.context.close();
}

async function cookieChecks(context) {
  const cookies = await context.cookies(BASE);
  const byName = Object.fromEntries(cookies.map((c) => [c.name, c]));
  const session = byName.gh_session;
  const csrf = byName.gh_csrf;
  assert(session, `no gh_session cookie; cookies: ${cookies.map((c) => c.name).join(', ')}`);
  assert(csrf, `no gh_csrf cookie; cookies: ${cookies.map((c) => c.name).join(', ')}`);
  assertEqual(session.httpOnly, true, 'gh_session HttpOnly');
  assertEqual(session.sameSite, 'Lax', 'gh_session SameSite');
  assertEqual(session.path, '/', 'gh_session Path');
  assertEqual(csrf.httpOnly, true, 'gh_csrf HttpOnly');
  assertEqual(csrf.sameSite, 'Strict', 'gh_csrf SameSite');
  assertEqual(csrf.path, '/', 'gh_csrf Path');
  assertEqual(session.secure, false, 'gh_session Secure on http');
  // Loopback http: no Secure flag, so no __Host- prefix either.
  assert(!cookies.some((c) => c.name.startsWith('__Host-')), 'a __Host- cookie on plain http');
  ok('cookies: gh_session HttpOnly SameSite=Lax, gh_csrf HttpOnly SameSite=Strict, both Path=/');
  // Not readable from the page's script either. (A new page: the old one
  // may still be settling the navigation to the redirect URI.)
  const page = await context.newPage();
  await page.goto(`${BASE}/device`);
  const visible = await page.evaluate(() => document.cookie);
  assertEqual(visible, '', 'document.cookie on a Gatehouse page');
  ok('cookies: document.cookie on a Gatehouse page is empty');
}

async function wrongPassword(browser) {
  const { context, redirects } = await newContext(browser);
  const page = await context.newPage();
  await page.goto(authorizeUrl({ state: 'wrong-password', challenge: pkce().challenge }));
  const response = await signIn(page, { password: `${PASSWORD}-wrong` });
  assert(response.status() >= 400 && response.status() < 500, `POST /login with a wrong password answered ${response.status()}`);
  await page.locator('.error').waitFor();
  const error = (await page.locator('.error').innerText()).trim();
  assert(error.length > 0, 'the error box is empty');
  assert(await page.locator('input[name="password"]').isVisible(), 'the login form is not shown again');
  assertEqual(await page.locator('input[name="password"]').inputValue(), '', 'password field after a failed sign-in');
  assert(!(await context.cookies(BASE)).some((c) => c.name === 'gh_session'), 'a gh_session cookie after a wrong password');
  await noRedirectFor(redirects);
  ok(`wrong password: ${response.status()}, error "${error}", login form shown again, no session, no redirect`);
  await context.close();
}

async function deny(browser) {
  const { context } = await newContext(browser);
  const page = await context.newPage();
  const state = 'deny-' + b64url(randomBytes(6));
  await toConsent(page, state);
  const params = await redirectParams(page, () => page.getByRole('button', { name: 'Deny' }).click());
  assertEqual(params.get('error'), 'access_denied', 'error in the redirect after Deny');
  assertEqual(params.get('state'), state, 'state in the redirect after Deny');
  assertEqual(params.get('code'), null, 'code in the redirect after Deny');
  ok(`Deny redirects with error=access_denied and the state${params.get('iss') === BASE ? ' (and iss)' : ''}`);
  await context.close();
}

// Opens a page at `origin` + `path` that puts `target` in an iframe;
// returns Gatehouse's response to the framed request, the frame and what
// the frame displays.
async function framedBy(page, origin, path, target) {
  attackerPages.set(path, `<!DOCTYPE html><title>attacker</title><h1>attacker</h1>
<iframe id="victim" name="victim" src="${escapeHtml(target)}" width="600" height="400"></iframe>`);
  const framed = page.waitForResponse((r) => r.url() === target);
  await page.goto(`${origin}${path}`, { waitUntil: 'load' });
  const response = await framed;
  // Give the browser a moment to settle the frame.
  await page.waitForTimeout(300);
  const frame = page.frames().find((f) => f.name() === 'victim');
  assert(frame, 'the iframe has no frame');
  let content = '';
  try {
    content = await frame.content();
  } catch (e) {
    content = `(frame content unavailable: ${e.message.split('\n')[0]})`;
  }
  return { response, frame, content };
}

// Which of Gatehouse's cookies the browser sent with a request.
async function cookiesSent(request) {
  const header = (await request.allHeaders()).cookie || '';
  return ['gh_session', 'gh_csrf'].filter((n) => new RegExp(`(^|;\\s*)${n}=`).test(header));
}

async function framing(browser) {
  const { context } = await newContext(browser);
  const page = await context.newPage();
  const console_ = [];
  page.on('console', (m) => console_.push(m.text()));
  const target = authorizeUrl({ state: 'framed', challenge: pkce().challenge });
  const before = htmlResponses.length;
  for (const [origin, path] of [[CROSS_SITE, '/frame-cross-site'], [SAME_SITE, '/frame-same-site']]) {
    const { response, frame, content } = await framedBy(page, origin, path, target);
    assertEqual(response.status(), 200, 'status of the framed /authorize');
    assert(!content.includes('name="password"'), `the login form is displayed in a frame at ${origin}; frame URL ${frame.url()}`);
    assert(!content.includes('Sign in to Gatehouse'), `the login page is displayed in a frame at ${origin}`);
    assert(!frame.url().startsWith(BASE), `the frame is at ${frame.url()}`);
    ok(`framing: the login page in an iframe at ${origin} is blocked (frame URL ${frame.url()})`);
  }
  const refused = console_.filter((t) => /frame-ancestors|X-Frame-Options|Refused to (display|frame)/i.test(t));
  assert(refused.length > 0, `no console error about the refused frame; console: ${JSON.stringify(console_)}`);
  ok(`framing: Chromium reports: ${refused[0].trim().slice(0, 160)}`);
  checkFramingHeaders(htmlResponses.slice(before), 'the framed login page');
  ok('framing: the framed responses carry X-Frame-Options: DENY and CSP frame-ancestors \'none\'');
  await context.close();
}

// The consent form is answered from another origin with the victim's real
// txn but without the right csrf: Gatehouse must answer 403 and never send
// the browser to the redirect URI.
async function csrf(browser) {
  for (const [origin, label] of [[CROSS_SITE, 'cross-site'], [SAME_SITE, 'same-site cross-origin']]) {
    const { context, redirects } = await newContext(browser);
    const victim = await context.newPage();
    await toConsent(victim, `csrf-${label}`);
    const txn = await victim.locator('input[name="txn"]').inputValue();
    const realCsrf = await victim.locator('form[action="/authorize/consent"] input[name="csrf"]').inputValue();
    const forged = realCsrf.replace(/^./, (c) => (c === '0' ? '1' : '0'));
    const path = `/csrf-${label.replace(/\W+/g, '-')}`;
    attackerPages.set(path, `<!DOCTYPE html><title>win a prize</title>
<form method="post" action="${BASE}/authorize/consent">
<input type="hidden" name="csrf" value="${escapeHtml(forged)}">
<input type="hidden" name="txn" value="${escapeHtml(txn)}">
<button type="submit" name="decision" value="approve">Claim your prize</button>
</form>`);
    const page = await context.newPage();
    await page.goto(`${origin}${path}`);
    const response = page.waitForResponse((r) => r.url() === `${BASE}/authorize/consent`);
    await page.getByRole('button', { name: 'Claim your prize' }).click();
    const answered = await response;
    assertEqual(answered.status(), 403, `${label} POST /authorize/consent with a forged csrf`);
    await noRedirectFor(redirects);
    // Which of Gatehouse's cookies the browser sent with the forged POST:
    // none cross-site (SameSite Lax and Strict), both same-site, where
    // only the csrf token stops the forgery.
    const cookieHeader = (await answered.request().allHeaders()).cookie || '';
    const sent = ['gh_session', 'gh_csrf'].filter((n) => new RegExp(`(^|;\\s*)${n}=`).test(cookieHeader));
    const expected = origin === CROSS_SITE ? [] : ['gh_session', 'gh_csrf'];
    assertEqual(sent.join(','), expected.join(','), `cookies the browser sent with the ${label} POST`);
    ok(`csrf: ${label} form POST (${origin}) to /authorize/consent with the real txn and a forged csrf `
      + `(cookies sent: ${sent.join(', ') || 'none'}): 403, no redirect`);

    // The victim's own page still works after the refused attempt
    // (the forgery did not consume or approve the transaction).
    await victim.bringToFront();
    const params = await redirectParams(victim, () => victim.getByRole('button', { name: 'Deny' }).click());
    assertEqual(params.get('error'), 'access_denied', 'the victim\'s own answer after the forgery');
    ok(`csrf: after the ${label} forgery the victim's own consent page still answers (Deny: access_denied)`);
    await context.close();
  }

  // The real page, with its hidden csrf field altered before Allow.
  const { context, redirects } = await newContext(browser);
  const page = await context.newPage();
  await toConsent(page, 'csrf-tampered');
  await page.evaluate(() => {
    const input = document.querySelector('form[action="/authorize/consent"] input[name="csrf"]');
    input.value = input.value.split('').reverse().join('');
  });
  const response = page.waitForResponse((r) => r.url() === `${BASE}/authorize/consent`);
  await page.getByRole('button', { name: 'Allow' }).click();
  assertEqual((await response).status(), 403, 'POST /authorize/consent with the csrf altered in the page');
  await noRedirectFor(redirects);
  ok('csrf: the real consent page with its csrf field altered: Allow gives 403, no redirect');

  // And with the csrf field removed altogether.
  await toConsent(page, 'csrf-missing');
  await page.evaluate(() => document.querySelector('form[action="/authorize/consent"] input[name="csrf"]').remove());
  const missing = page.waitForResponse((r) => r.url() === `${BASE}/authorize/consent`);
  await page.getByRole('button', { name: 'Allow' }).click();
  assertEqual((await missing).status(), 403, 'POST /authorize/consent without a csrf field');
  await noRedirectFor(redirects);
  ok('csrf: the real consent page with its csrf field removed: Allow gives 403, no redirect');
  await context.close();
}

async function tokenRequest(deviceCode) {
  const response = await fetch(`${BASE}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'urn:ietf:params:oauth:grant-type:device_code',
      device_code: deviceCode,
      client_id: CLIENT_ID,
    }),
  });
  return { status: response.status, body: await response.json() };
}

async function deviceFlow(browser) {
  const started = await fetch(`${BASE}/oauth/device_authorization`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ client_id: CLIENT_ID, scope: SCOPE }),
  });
  const grant = await started.json();
  assertEqual(started.status, 200, `device_authorization status (${JSON.stringify(grant)})`);
  for (const field of ['device_code', 'user_code', 'verification_uri', 'verification_uri_complete']) {
    assert(grant[field], `device_authorization has no ${field}: ${JSON.stringify(grant)}`);
  }
  assert(/^[A-Z0-9]{4}-[A-Z0-9]{4}$/.test(grant.user_code), `user_code ${grant.user_code}`);
  const interval = (grant.interval || 5) * 1000;

  const pending = await tokenRequest(grant.device_code);
  let lastPoll = Date.now();
  assertEqual(pending.body.error, 'authorization_pending', `token poll before approval (${pending.status})`);
  ok(`device flow: user_code ${grant.user_code}; polling before approval gives authorization_pending`);

  const { context } = await newContext(browser);
  const page = await context.newPage();
  await page.goto(grant.verification_uri_complete);
  const login = await signIn(page, OTHER);
  assertEqual(login.status(), 303, 'POST /login status (device)');
  // The entry page (prefilled from verification_uri_complete or not).
  const entry = page.locator('form[action="/device"]');
  const confirm = page.locator('form[action="/device/confirm"]');
  await entry.or(confirm).first().waitFor();
  if (await entry.isVisible()) {
    const input = page.locator('input[name="user_code"]');
    const prefilled = await input.inputValue();
    if (prefilled) assertEqual(prefilled.toUpperCase(), grant.user_code, 'prefilled user_code');
    else await input.fill(grant.user_code);
    await page.getByRole('button', { name: 'Continue' }).click();
  }
  await confirm.waitFor();
  const confirmText = await page.locator('main').innerText();
  assert(confirmText.includes(grant.user_code), `the confirm page does not show ${grant.user_code}: ${confirmText}`);
  const approve = page.locator('form[action="/device/confirm"] button[name="decision"][value="approve"]');
  await approve.click();
  await page.getByText('Device approved').waitFor();
  ok('device flow: signed in, confirmed the code, saw "Device approved"');

  let result;
  let wait = interval;
  for (let attempt = 0; attempt < 6; attempt += 1) {
    const due = lastPoll + wait - Date.now();
    if (due > 0) await new Promise((r) => setTimeout(r, due + 100));
    result = await tokenRequest(grant.device_code);
    lastPoll = Date.now();
    if (result.body.error === 'slow_down') wait += 5000;
    else if (result.body.error !== 'authorization_pending') break;
  }
  assertEqual(result.status, 200, `token poll after approval (${JSON.stringify(result.body)})`);
  assert(result.body.access_token, `no access_token after approval: ${JSON.stringify(result.body)}`);
  ok(`device flow: the poll after approval returns an access token (${result.body.token_type || 'no token_type'})`);

  // The Sign out button on a page a signed-in person sees ends the session.
  await page.goto(`${BASE}/device`);
  await page.locator('form[action="/device"]').waitFor();
  await page.locator('form[action="/logout"]').getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('heading', { name: 'Signed out' }).waitFor();
  const left = (await context.cookies(BASE)).map((c) => c.name);
  assert(!left.some((name) => name.endsWith('gh_session')), `the session cookie survived sign-out: ${left}`);
  await page.goto(`${BASE}/device`);
  await page.locator('form[action="/login"]').waitFor();
  ok('sign out: clicking "Sign out" on the device page ends the session (cookie cleared, /device asks to sign in again)');
  await context.close();
}

// ---------------------------------------------------------------------------
// The approval page. Tools marked for approval (send_email for executors
// in the default policy) are refused with an approval URL; the human the
// agent acts for approves on that page and gets a single-use operation
// token, which the agent puts in the retried call's _meta.

const runFile = promisify(execFile);
async function cliJson(args) {
  const { stdout } = await runFile(GATEHOUSE_BIN, [...args, '--data-dir', DATA_DIR, '--json'], { encoding: 'utf8' });
  return JSON.parse(stdout);
}
// The approval as `gatehouse approvals list --all --json` shows it.
async function listedApproval(id) {
  const all = await cliJson(['approvals', 'list', '--all']);
  const approval = all.find((a) => a.id === id);
  assert(approval, `approval ${id} is not in \`gatehouse approvals list --all --json\`: ${JSON.stringify(all)}`);
  return approval;
}
async function assertStillPending(id, after) {
  const pending = await cliJson(['approvals', 'list']);
  const approval = pending.find((a) => a.id === id);
  assert(approval, `after ${after}, approval ${id} is no longer in \`gatehouse approvals list --json\` (pending only): ${JSON.stringify(pending)}`);
  assertEqual(approval.status, 'pending', `status of ${id} after ${after}`);
  assertEqual(approval.decided_by, null, `decided_by of ${id} after ${after}`);
}

const email = (to) => ({ to, subject: 'Quarterly report', body: 'Attached.' });

// A JSON answer, or the last JSON-RPC message of an event stream.
function rpcBody(text) {
  try {
    return JSON.parse(text);
  } catch {}
  for (const line of text.split('\n').reverse()) {
    if (!line.startsWith('data:')) continue;
    try {
      const message = JSON.parse(line.slice(5).trim());
      if (message.jsonrpc) return message;
    } catch {}
  }
  throw new CheckFailed(`not a JSON-RPC answer: ${text.slice(0, 400)}`);
}

// The agent's stateless (2026-07-28) tools/call, as the e2e harness's rpc()
// builds it, with the operation token in _meta when there is one.
async function agentCall(name, args, token) {
  const meta = {
    'io.modelcontextprotocol/protocolVersion': MCP_VERSION,
    'io.modelcontextprotocol/clientCapabilities': {},
  };
  if (token) meta[OPERATION_TOKEN_META] = token;
  const response = await fetch(MCP_URL, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${AGENT_KEY}`,
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': MCP_VERSION,
      'mcp-method': 'tools/call',
      'mcp-name': name,
    },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name, arguments: args, _meta: meta } }),
  });
  const text = await response.text();
  assertEqual(response.status, 200, `POST /mcp tools/call ${name} status (${text.slice(0, 400)})`);
  return rpcBody(text);
}
const reasonOf = (body) => body?.error?.data?.reason;

// The agent's first call: refused, with where a human may approve it.
async function requestApproval(to) {
  const body = await agentCall('send_email', email(to));
  assertEqual(reasonOf(body), 'approval_required', `reason for send_email without a token (${JSON.stringify(body)})`);
  assertEqual(body.error.code, -32001, 'JSON-RPC error code of approval_required');
  const { approval_id: id, approval_url: url } = body.error.data;
  assert(typeof id === 'string' && id.startsWith('apr_'), `approval_id ${JSON.stringify(id)}`);
  assertEqual(url, `${BASE}/approvals/${id}`, 'approval_url');
  return { id, url, body };
}

// .eml files in the data directory (the outbox) that name `to`.
function outboxMessagesTo(to) {
  return readdirSync(DATA_DIR, { recursive: true })
    .filter((f) => String(f).endsWith('.eml'))
    .filter((f) => readFileSync(join(DATA_DIR, String(f)), 'utf8').includes(to));
}

// Opens an approval URL in a browser that is not signed in, types in the
// credentials and clicks Sign in; returns Gatehouse's answer to the GET of
// the approval URL that follows the login.
async function openApproval(page, url, creds) {
  await page.goto(url);
  await expectPage(page, 'form[action="/login"]', 'the login page');
  const shown = page.waitForResponse((r) => r.url() === url && r.request().method() === 'GET');
  const login = await typeAndSignIn(page, creds);
  assertEqual(login.status(), 303, `POST /login status (${creds.user})`);
  return shown;
}

const approvalState = {};

async function approvalApproved(browser) {
  const to = 'quarterly@example.com';
  const { id, url, body } = await requestApproval(to);
  ok(`approval (b): the agent's send_email is refused with -32001 approval_required, id ${id}, `
    + `approval_url ${url.replace(BASE, '')} (${body.error.message.slice(0, 60)}…)`);
  const again = await requestApproval(to);
  assertEqual(again.id, id, 'approval id when the agent asks again for the same call');
  ok('approval (b): asking again for the same call gives the same approval id');

  const { context } = await newContext(browser);
  const page = await context.newPage();
  await page.goto(url);
  await expectPage(page, 'form[action="/login"]', 'the login page');
  const continueTo = await page.locator('form[action="/login"] input[name="continue"]').inputValue();
  assertEqual(continueTo, `/approvals/${id}`, 'the login form\'s continue field');
  assert(!(await page.content()).includes(to), 'the login page in front of the approval page shows the recipient');
  ok('approval (c): not signed in, the approval URL shows the login form, continuing to /approvals/ID, no arguments');

  const shown = page.waitForResponse((r) => r.url() === url && r.request().method() === 'GET');
  const login = await typeAndSignIn(page, APPROVER);
  assertEqual(login.status(), 303, 'POST /login status (approver)');
  assertEqual((await shown).status(), 200, 'GET of the approval page after signing in');
  await expectPage(page, '#approval-id', 'the approval page');
  assertEqual(page.url(), url, 'the URL after signing in');
  assertEqual((await page.locator('#tool').innerText()).trim(), 'send_email', '#tool');
  assertEqual((await page.locator('#approval-id').innerText()).trim(), id, '#approval-id');
  const shownArgs = JSON.parse(await page.locator('pre#arguments').innerText());
  const sorted = (o) => JSON.stringify(Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : 1))));
  assertEqual(sorted(shownArgs), sorted(email(to)), 'the arguments on the approval page');
  const mainText = await page.locator('main').innerText();
  assert(mainText.includes(APPROVER.user), `the approval page does not say on whose behalf: ${mainText}`);
  const form = page.locator(`form[action="/approvals/${id}"]`);
  assert((await form.locator('input[type="hidden"][name="csrf"]').inputValue()).length > 0, 'no csrf in the approval form');
  ok(`approval (c): typed in ${APPROVER.user}'s password, clicked Sign in; the approval page shows #tool send_email, `
    + `#approval-id, the exact arguments (to ${to}) and on whose behalf`);

  const decided = page.waitForResponse((r) => r.url() === url && r.request().method() === 'POST');
  await form.getByRole('button', { name: 'Approve' }).click();
  assertEqual((await decided).status(), 200, 'POST /approvals/ID (Approve) status');
  await expectPage(page, 'pre#operation-token', 'the approved page');
  const token = (await page.locator('pre#operation-token').innerText()).trim();
  assert(/^gho_[A-Za-z0-9_-]{20,}$/.test(token), `operation token ${JSON.stringify(token)}`);
  const listed = await listedApproval(id);
  assertEqual(listed.status, 'approved', 'status in `approvals list` after Approve');
  assertEqual(listed.decided_by, APPROVER.user, 'decided_by in `approvals list`');
  ok(`approval (c): clicking Approve shows the operation token (gho_…, ${token.length} chars); `
    + `\`approvals list\` says approved by ${APPROVER.user}`);

  // The page, opened again, shows the decision and no buttons.
  await page.goto(url);
  await expectPage(page, '#status', 'the decided approval page');
  assertEqual((await page.locator('#status').innerText()).trim(), 'approved', '#status after Approve');
  assertEqual(await page.locator('button[name="decision"]').count(), 0, 'decision buttons after Approve');
  ok('approval (c): the approval page opened again says approved and has no buttons');

  const ran = await agentCall('send_email', email(to), token);
  assert(ran.result && !ran.error && ran.result.isError !== true, `the retry with the token did not run: ${JSON.stringify(ran)}`);
  assertEqual(outboxMessagesTo(to).length, 1, `.eml files to ${to} in the outbox after the retry`);
  ok('approval (d): the agent\'s retry with the token in _meta runs send_email (result, one message in the outbox)');
  const replay = await agentCall('send_email', email(to), token);
  assertEqual(reasonOf(replay), 'operation_token_used', `reason for a second retry (${JSON.stringify(replay)})`);
  assertEqual(outboxMessagesTo(to).length, 1, `.eml files to ${to} in the outbox after the second retry`);
  ok('approval (d): a second retry with the same token is refused with operation_token_used (still one message)');

  approvalState.approver = context;
}

// Another executor of the same tenant signs in on the approval URL.
async function approvalNotYours(browser) {
  const to = 'carol@example.com';
  const { id, url } = await requestApproval(to);
  const { context } = await newContext(browser);
  const page = await context.newPage();
  const shown = await openApproval(page, url, OUTSIDER);
  assertEqual(shown.status(), 403, `GET ${url.replace(BASE, '')} as ${OUTSIDER.user}`);
  await page.getByText('Not yours to decide').waitFor();
  const html = await page.content();
  assert(!html.includes(to), `${OUTSIDER.user} sees the recipient ${to}`);
  assert(!html.includes('id="arguments"'), `${OUTSIDER.user} sees the arguments`);
  assertEqual(await page.locator('button[name="decision"]').count(), 0, `decision buttons shown to ${OUTSIDER.user}`);
  await assertStillPending(id, `${OUTSIDER.user} opened it`);
  ok(`approval (e): ${OUTSIDER.user} (executor, same tenant) signing in on another approval URL gets 403 `
    + '"Not yours to decide", no arguments, no buttons; it stays pending');
  await context.close();
  approvalState.other = { id, url, to };
}

// The approval page in an iframe on another origin, in the approver's
// signed-in browser: same-site, the frame request carries her session, so
// Gatehouse answers with the approval page itself.
async function approvalFraming() {
  const { id, url, to } = approvalState.other;
  const page = await approvalState.approver.newPage();
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(m.text()));
  const before = htmlResponses.length;
  for (const [origin, path, label] of [
    [CROSS_SITE, '/frame-approval-cross-site', 'cross-site'],
    [SAME_SITE, '/frame-approval-same-site', 'same-site'],
  ]) {
    const { response, frame, content } = await framedBy(page, origin, path, url);
    assertEqual(response.status(), 200, `status of the ${label} framed approval page`);
    const sent = await cookiesSent(response.request());
    const expected = origin === CROSS_SITE ? [] : ['gh_session', 'gh_csrf'];
    assertEqual(sent.join(','), expected.join(','), `cookies the browser sent with the ${label} framed request`);
    // Same-site, the frame request carried alice's session, so what
    // Gatehouse answered was the approval page itself (Playwright only
    // gives the error page's body for a refused frame, so the request's
    // cookies are replayed from node to see that answer).
    if (origin === SAME_SITE) {
      const cookie = (await response.request().allHeaders()).cookie;
      const replay = await fetch(url, { headers: { cookie } });
      const body = await replay.text();
      assert(replay.status === 200 && body.includes('id="arguments"') && body.includes(to),
        `with the framed request's cookies Gatehouse does not answer with the approval page: ${replay.status} ${body.slice(0, 300)}`);
    }
    for (const shown of [to, 'id="arguments"', 'name="decision"', 'name="password"']) {
      assert(!content.includes(shown), `the ${label} frame displays ${shown}; frame URL ${frame.url()}`);
    }
    assert(!frame.url().startsWith(BASE), `the ${label} frame is at ${frame.url()}`);
    ok(`approval (f): the approval page in an iframe at ${origin} (cookies sent: ${sent.join(', ') || 'none'}) `
      + `is blocked (frame URL ${frame.url()})${origin === SAME_SITE ? '; Gatehouse had answered with the approval page' : ''}`);
  }
  const refused = consoleLines.filter((t) => /frame-ancestors|X-Frame-Options|Refused to (display|frame)/i.test(t));
  assert(refused.length >= 2, `expected a console error for each refused frame; console: ${JSON.stringify(consoleLines)}`);
  checkFramingHeaders(htmlResponses.slice(before), 'the framed approval page');
  await assertStillPending(id, 'the framing attempts');
  ok('approval (f): Chromium refused both frames; their responses carry X-Frame-Options: DENY and frame-ancestors \'none\'');
  await page.close();
}

// Forged decisions on the approver's pending request.
async function approvalForgery() {
  const { id, url } = approvalState.other;
  const context = approvalState.approver;
  const victim = await context.newPage();
  await victim.goto(url);
  await expectPage(victim, '#approval-id', 'the approval page (approver)');
  const form = victim.locator(`form[action="/approvals/${id}"]`);
  const realCsrf = await form.locator('input[name="csrf"]').inputValue();
  const forgedCsrf = realCsrf.replace(/^./, (c) => (c === '0' ? '1' : '0'));

  // Cross-site: no cookie, no token. Same-site: both cookies go along,
  // and a forged token must be enough to refuse it.
  for (const [origin, label, csrfField] of [
    [CROSS_SITE, 'cross-site', ''],
    [SAME_SITE, 'same-site cross-origin', `<input type="hidden" name="csrf" value="${escapeHtml(forgedCsrf)}">`],
  ]) {
    const path = `/approve-${label.replace(/\W+/g, '-')}`;
    attackerPages.set(path, `<!DOCTYPE html><title>win a prize</title>
<form method="post" action="${escapeHtml(url)}">
${csrfField}<button type="submit" name="decision" value="approve">Claim your prize</button>
</form>`);
    const page = await context.newPage();
    await page.goto(`${origin}${path}`);
    const response = page.waitForResponse((r) => r.url() === url && r.request().method() === 'POST');
    await page.getByRole('button', { name: 'Claim your prize' }).click();
    const answered = await response;
    assertEqual(answered.status(), 403, `${label} forged POST /approvals/ID`);
    const sent = await cookiesSent(answered.request());
    const expected = origin === CROSS_SITE ? [] : ['gh_session', 'gh_csrf'];
    assertEqual(sent.join(','), expected.join(','), `cookies the browser sent with the ${label} forged POST`);
    const text = await page.locator('body').innerText();
    assert(!/gho_/.test(text), `the ${label} forged POST shows an operation token: ${text}`);
    await assertStillPending(id, `the ${label} forged POST`);
    ok(`approval (g): ${label} form POST (${origin}) to /approvals/ID with decision=approve and `
      + `${csrfField ? 'a forged csrf' : 'no csrf'} (cookies sent: ${sent.join(', ') || 'none'}): 403, still pending`);
    await page.close();
  }

  // The real page with its csrf field altered.
  await victim.bringToFront();
  await victim.evaluate((action) => {
    const input = document.querySelector(`form[action="${action}"] input[name="csrf"]`);
    input.value = input.value.split('').reverse().join('');
  }, `/approvals/${id}`);
  const tampered = victim.waitForResponse((r) => r.url() === url && r.request().method() === 'POST');
  await form.getByRole('button', { name: 'Approve' }).click();
  assertEqual((await tampered).status(), 403, 'POST /approvals/ID with the csrf altered in the page');
  await assertStillPending(id, 'Approve with an altered csrf');
  ok('approval (g): the real approval page with its csrf field altered: Approve gives 403, still pending');

  // The approver's own page still answers: Deny.
  await victim.goto(url);
  await expectPage(victim, '#approval-id', 'the approval page again');
  const denied = victim.waitForResponse((r) => r.url() === url && r.request().method() === 'POST');
  await form.getByRole('button', { name: 'Deny' }).click();
  assertEqual((await denied).status(), 200, 'POST /approvals/ID (Deny) status');
  await victim.getByRole('heading', { name: 'Denied' }).waitFor();
  assertEqual((await listedApproval(id)).status, 'denied', 'status in `approvals list` after Deny');
  const retry = await agentCall('send_email', email(approvalState.other.to));
  assertEqual(reasonOf(retry), 'approval_required', 'reason for the call after Deny');
  assert(retry.error.data.approval_id !== id, 'the call after Deny reuses the denied approval');
  ok('approval (g): after the forgeries the approver\'s own Deny works (denied; the next call needs a new approval)');

  // Every approval page response carried the anti-framing headers.
  const approvalPages = htmlResponses.filter((r) => new URL(r.url).pathname.startsWith('/approvals/'));
  checkFramingHeaders(approvalPages, 'the approval pages');
  const statuses = [...new Set(approvalPages.map((r) => r.status))].sort().join(', ');
  ok(`approval: all ${approvalPages.length} HTML responses of /approvals/ID (statuses ${statuses}) `
    + 'carried X-Frame-Options: DENY and frame-ancestors \'none\'');
  await context.close();
}

async function approvals(browser) {
  await approvalApproved(browser);
  await approvalNotYours(browser);
  await approvalFraming();
  await approvalForgery();
}

// Cookies are kept apart by host, not by port: a client listening on
// http://127.0.0.1:<port>/cb next to Gatehouse on 127.0.0.1 received the
// person's browser session with the redirect. Gatehouse clears its cookies
// in the redirect itself; Chromium must drop them before following it.
async function sameHostRedirect(browser) {
  const client = await cliJson([
    'clients', 'create', '--name', 'same-host', '--public', '--redirect-uri', `${SAME_SITE}/cb`,
  ]);
  assert(client.client_id, `no client created: ${JSON.stringify(client)}`);
  const context = await browser.newContext();
  context.setDefaultTimeout(ACTION_TIMEOUT);
  const page = await context.newPage();
  const params = new URLSearchParams({
    response_type: 'code',
    client_id: client.client_id,
    redirect_uri: `${SAME_SITE}/cb`,
    code_challenge: pkce().challenge,
    code_challenge_method: 'S256',
    state: 'same-host',
    scope: SCOPE,
    resource: MCP_URL,
  });
  await page.goto(`${BASE}/authorize?${params}`);
  const login = await signIn(page, { user: USER, password: PASSWORD });
  assertEqual(login.status(), 303, 'POST /login status');
  await expectPage(page, 'form[action="/authorize/consent"]', 'the consent page');
  const before = (await context.cookies(BASE)).map((c) => c.name);
  assert(before.includes('gh_session'), `signed in, but no session cookie: ${before}`);
  const arrived = page.waitForRequest((r) => r.url().startsWith(`${SAME_SITE}/cb`));
  await page.getByRole('button', { name: 'Allow' }).click();
  await arrived;
  await page.waitForLoadState('load').catch(() => {});
  assertEqual(callbackCookies.length, 1, 'requests to the same-host callback');
  assert(!callbackCookies[0].includes('gh_session'), `the callback received the session: ${callbackCookies[0]}`);
  assert(!callbackCookies[0].includes('gh_csrf'), `the callback received the CSRF cookie: ${callbackCookies[0]}`);
  const after = (await context.cookies(BASE)).map((c) => c.name);
  assert(!after.includes('gh_session'), `the session cookie is still set: ${after}`);
  ok('a redirect to a client on Gatehouse\'s own host (another port) carries none of its cookies');
  await context.close();
}

// ---------------------------------------------------------------------------

const started = Date.now();
let browser;
let failed = false;
try {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  ok(`launched ${CHROMIUM} ${browser.version()}`);
  await authorizationCodeFlow(browser);
  await wrongPassword(browser);
  await deny(browser);
  await framing(browser);
  await csrf(browser);
  await deviceFlow(browser);
  await approvals(browser);
  await sameHostRedirect(browser);
  checkFramingHeaders(htmlResponses, 'all pages');
  ok(`all ${htmlResponses.length} HTML responses from Gatehouse carried X-Frame-Options: DENY and frame-ancestors 'none'`);
} catch (e) {
  failed = true;
  console.log(`FAIL: ${e instanceof CheckFailed ? e.message : e.stack || e}`);
} finally {
  if (browser) await browser.close().catch(() => {});
  await new Promise((r) => attacker.close(r));
}
console.log(`browser: ${passed} passed, ${failed ? 1 : 0} failed (${((Date.now() - started) / 1000).toFixed(1)} s)`);
process.exit(failed ? 1 : 0);
