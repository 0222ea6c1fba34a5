// A real OpenID provider for Gatehouse's tests: oidc-provider (npm) with a
// test configuration. Usage: node provider.mjs PORT GATEHOUSE_BASE_URL
// (the client secret of Gatehouse's client in $OIDC_GATEHOUSE_SECRET).
//
// - client `gatehouse`: Gatehouse signs people in through this provider
//   (code + PKCE) and introspects opaque tokens with it;
// - client `agent`: a machine client whose client-credentials tokens are
//   JWTs (resource = Gatehouse's /mcp) or opaque (resource urn:gatehouse:opaque);
// - people `alice` (group mcp-ops) and `bob` (group mcp-readers); the
//   development login form accepts any password.
import Provider from 'oidc-provider';

const [port, gatehouse] = process.argv.slice(2);
// On `localhost`, another site than Gatehouse's 127.0.0.1: the browser comes
// back to Gatehouse's callback from another site, as from a real provider,
// and carries no SameSite=Strict cookie (the listener is on 127.0.0.1;
// clients that try ::1 first fall back to it).
const issuer = `http://localhost:${port}`;
const resource = `${gatehouse}/mcp`;
const OPAQUE = 'urn:gatehouse:opaque';

const people = {
  alice: { sub: 'alice', email: 'alice@example.test', email_verified: true, groups: ['mcp-ops', 'staff'] },
  bob: { sub: 'bob', email: 'bob@example.test', email_verified: true, groups: ['mcp-readers'] },
};

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'gatehouse',
      client_secret: process.env.OIDC_GATEHOUSE_SECRET,
      redirect_uris: [`${gatehouse}/oauth/federated/op/callback`],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    {
      client_id: 'agent',
      client_secret: 'agent-secret-for-tests',
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
    },
  ],
  findAccount: async (_ctx, id) =>
    people[id] && { accountId: id, claims: async () => people[id] },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], groups: ['groups'] },
  scopes: ['openid', 'email', 'groups', 'tools:read'],
  // The machine client's tokens say which group it is in.
  extraTokenClaims: async (_ctx, token) =>
    token.clientId === 'agent' ? { groups: ['mcp-readers'] } : undefined,
  features: {
    devInteractions: { enabled: true },
    introspection: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, indicator) => {
        if (indicator === resource) {
          return { scope: 'tools:read', audience: resource, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } };
        }
        if (indicator === OPAQUE) {
          return { scope: 'tools:read', audience: resource, accessTokenFormat: 'opaque' };
        }
        throw new Provider.errors.InvalidTarget();
      },
    },
  },
  pkce: { required: () => true },
});
provider.proxy = false;
// Its own failures go to its log (run.sh prints the log when a test fails).
provider.on('server_error', (_ctx, error) => console.error('server_error:', error));
const server = provider.listen(Number(port), '127.0.0.1', () => {
  console.log(JSON.stringify({ event: 'listening', issuer }));
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
