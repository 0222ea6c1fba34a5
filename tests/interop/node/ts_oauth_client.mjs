// The official TypeScript MCP SDK's OAuth client against Gatehouse's
// embedded authorization server: discovery (401 -> protected resource
// metadata -> AS metadata), dynamic registration, authorization code with
// PKCE S256 and `resource`, login and consent driven by a scripted browser,
// `state` and `iss` (RFC 9207) checked here (SDK 1.32.2 leaves both to the
// application), tool calls, role enforcement, and a refresh with rotation.
//
// Usage: node ts_oauth_client.mjs <mcp-url> <username> <password>
// The user must have the reader role (whoami allowed, execute_code not).
//
// run.sh copies this file and browser.mjs next to the installed packages
// (.tools/node-interop/) before running it: ESM resolves bare imports from
// the importing file's folder upwards and ignores NODE_PATH.
import { randomBytes } from 'node:crypto';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';
import { Browser } from './browser.mjs';

const REDIRECT_URI = 'http://localhost:9/callback'; // never contacted

function check(condition, message) {
  if (!condition) {
    console.error(`FAIL: ${message}`);
    process.exit(1);
  }
  console.log(`ok: ${message}`);
}

const [url, username, password] = process.argv.slice(2);
if (!password) {
  console.error('usage: node ts_oauth_client.mjs <mcp-url> <username> <password>');
  process.exit(2);
}
const issuer = url.replace(/\/mcp$/, '');
const browser = new Browser(username, password);

class HeadlessProvider {
  constructor() {
    this._tokens = undefined;
    this._client = undefined;
    this._verifier = undefined;
    this._state = undefined;
    this.code = undefined;
    this.authorizations = 0;
  }
  get redirectUrl() {
    return REDIRECT_URI;
  }
  get clientMetadata() {
    return {
      client_name: 'ts-sdk-interop',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }
  state() {
    this._state = randomBytes(16).toString('base64url');
    return this._state;
  }
  clientInformation() {
    return this._client;
  }
  saveClientInformation(info) {
    this._client = info;
  }
  tokens() {
    return this._tokens;
  }
  saveTokens(tokens) {
    this._tokens = tokens;
  }
  saveCodeVerifier(verifier) {
    this._verifier = verifier;
  }
  codeVerifier() {
    return this._verifier;
  }
  // Acts as the person at the browser: login, consent, read the redirect.
  async redirectToAuthorization(authorizationUrl) {
    this.authorizations += 1;
    const query = authorizationUrl.searchParams;
    check(query.get('code_challenge_method') === 'S256', 'the SDK sends a PKCE S256 challenge');
    check(query.getAll('resource').length === 1 && query.get('resource') === url,
      `the SDK names the MCP server as resource: ${query.get('resource')}`);
    const location = await browser.authorize(authorizationUrl.href);
    check(location.startsWith(REDIRECT_URI), 'after login and consent the browser goes to the redirect URI');
    const answer = new URL(location).searchParams;
    check(answer.get('iss') === issuer, `the response carries iss (RFC 9207): ${answer.get('iss')}`);
    check(answer.get('state') === this._state, 'the response returns our state');
    check(!answer.has('error') && !!answer.get('code'), 'the response carries a code and no error');
    this.code = answer.get('code');
  }
}

const provider = new HeadlessProvider();

async function connect() {
  const client = new Client({ name: 'ts-sdk-interop', version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(new URL(url), { authProvider: provider }));
  return client;
}

// First connection: 401, discovery, registration, the browser, then
// finishAuth(code) exchanges the code (code_verifier + resource).
let client;
const transport = new StreamableHTTPClientTransport(new URL(url), { authProvider: provider });
try {
  client = new Client({ name: 'ts-sdk-interop', version: '1.0.0' });
  await client.connect(transport);
  check(false, 'the first connection must be refused with 401');
} catch (error) {
  if (!(error instanceof UnauthorizedError)) throw error;
  check(provider.code !== undefined, 'the first connection was refused and sent the person to authorize');
}
await transport.finishAuth(provider.code);
check(!!provider.tokens()?.access_token, 'the code was exchanged for an access token');
check(provider.tokens()?.token_type?.toLowerCase() === 'bearer', 'the token type is Bearer');
check(!!provider.tokens()?.refresh_token, 'a refresh token was issued');
check(provider.clientInformation()?.client_id?.startsWith('ghc_'),
  `the SDK registered dynamically: ${provider.clientInformation()?.client_id}`);

client = await connect();
const tools = (await client.listTools()).tools.map((t) => t.name);
check(tools.includes('whoami') && !tools.includes('execute_code'), `the reader's tools are listed: ${tools}`);
const who = await client.callTool({ name: 'whoami', arguments: {} });
const whoText = who.content?.[0]?.text ?? '';
check(!who.isError && whoText.includes(username), `whoami names the signed-in user: ${whoText}`);
// The SDK sends the call (it does not check the tool list): the refusal
// is the server's, as a JSON-RPC error or an isError result.
let denied;
let detail;
try {
  const result = await client.callTool({ name: 'execute_code', arguments: { code: '1+1' } });
  denied = result.isError === true;
  detail = `isError result: ${result.content?.[0]?.text}`;
} catch (error) {
  denied = error instanceof McpError;
  detail = `JSON-RPC error ${error.code}: ${error.message}`;
}
check(denied, `a tool outside the user's role is denied (${detail})`);
await client.close();

check(browser.pages.some((p) => p.text.includes('Sign in')), 'the login page was shown');
check(browser.pages.some((p) => p.text.includes('Allow')), 'the consent page was shown');
for (const page of browser.pages) {
  check(page.headers.get('x-frame-options') === 'DENY', 'pages refuse framing (X-Frame-Options)');
  check((page.headers.get('content-security-policy') ?? '').includes("frame-ancestors 'none'"),
    'pages refuse framing (CSP frame-ancestors)');
}

// Spoil the access token: the server answers 401 and the SDK must refresh
// by itself (no second trip through the browser).
const first = provider.tokens();
provider.saveTokens({ ...first, access_token: 'spoiled' });
client = await connect();
const again = await client.callTool({ name: 'whoami', arguments: {} });
check((again.content?.[0]?.text ?? '').includes(username), 'a call after refresh works');
await client.close();
const second = provider.tokens();
check(provider.authorizations === 1, 'the refresh needed no second login');
check(second.access_token !== first.access_token && second.access_token !== 'spoiled',
  'refresh issued a new access token');
check(second.refresh_token && second.refresh_token !== first.refresh_token, 'refresh rotated the refresh token');
