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
// Each check prints `ok: ...`; the first failure prints `FAIL: ...` and
// exits non-zero. The browser and the helper server are always closed.

import { chromium } from 'playwright-core';
import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

const BASE = must('GATEHOUSE_BASE').replace(/\/$/, '');
const MCP_URL = process.env.GATEHOUSE_MCP_URL || `${BASE}/mcp`;
const USER = must('GATEHOUSE_USER');
const PASSWORD = must('GATEHOUSE_PASSWORD');
const OTHER = { user: must('GATEHOUSE_USER2'), password: must('GATEHOUSE_PASSWORD2') };
const CLIENT_ID = must('GATEHOUSE_CLIENT_ID');
const CLIENT_NAME = process.env.GATEHOUSE_CLIENT_NAME || 'web';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
// Registered for the client; nothing listens on port 9, and the browser is
// never expected to load it: we watch for the navigation request instead.
const REDIRECT_URI = 'http://127.0.0.1:9/callback';
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
const attacker = createServer((req, res) => {
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

  const consent = page.waitForResponse((r) => r.url() === `${BASE}/authorize/consent`);
  const params = await redirectParams(page, () => page.getByRole('button', { name: 'Allow' }).click());
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

async function framing(browser) {
  const { context } = await newContext(browser);
  const page = await context.newPage();
  const console_ = [];
  page.on('console', (m) => console_.push(m.text()));
  const target = authorizeUrl({ state: 'framed', challenge: pkce().challenge });
  const before = htmlResponses.length;
  for (const [origin, path] of [[CROSS_SITE, '/frame-cross-site'], [SAME_SITE, '/frame-same-site']]) {
    attackerPages.set(path, `<!DOCTYPE html><title>attacker</title><h1>attacker</h1>
<iframe id="victim" name="victim" src="${escapeHtml(target)}" width="600" height="400"></iframe>`);
    const framed = page.waitForResponse((r) => r.url() === target);
    await page.goto(`${origin}${path}`, { waitUntil: 'load' });
    const response = await framed;
    assertEqual(response.status(), 200, 'status of the framed /authorize');
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
