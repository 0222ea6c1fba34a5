// An identity provider for bench/external.sh: serves an OpenID
// configuration and a JWKS (one RS256 and one ES256 key) on a free loopback
// port, counts JWKS fetches, and writes the tokens the benchmark sends.
//
//   node bench/external_idp.mjs OUT_DIR AUDIENCE
//
// Writes OUT_DIR/issuer, OUT_DIR/rs256.token, OUT_DIR/es256.token (access
// tokens valid for two hours), OUT_DIR/es256_distinct.tokens (5,000
// distinct valid ES256 tokens) and OUT_DIR/unknown_kid.tokens (2,000 tokens
// naming key ids the JWKS does not have), one per line, then serves until
// killed. GET /count answers the number of JWKS fetches so far.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';

const [out, audience] = process.argv.slice(2);
const b64 = (value) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const jwk = (pair, kid, alg) => ({ ...pair.publicKey.export({ format: 'jwk' }), kid, alg, use: 'sig' });
const jwks = JSON.stringify({ keys: [jwk(rsa, 'bench-rs', 'RS256'), jwk(ec, 'bench-ec', 'ES256')] });

function sign(header, claims, pair) {
  const input = `${b64(header)}.${b64(claims)}`;
  const signature = header.alg === 'RS256'
    ? crypto.sign('sha256', Buffer.from(input), pair.privateKey)
    : crypto.sign('sha256', Buffer.from(input), { key: pair.privateKey, dsaEncoding: 'ieee-p1363' });
  return `${input}.${signature.toString('base64url')}`;
}

let fetches = 0;
const server = http.createServer((req, res) => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  if (req.url === '/.well-known/openid-configuration') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ issuer, jwks_uri: `${issuer}/keys` }));
  } else if (req.url === '/keys') {
    fetches += 1;
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=3600' });
    res.end(jwks);
  } else if (req.url === '/count') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(String(fetches));
  } else {
    res.writeHead(404);
    res.end();
  }
});
server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const now = Math.floor(Date.now() / 1000);
  const claims = (jti) => ({
    iss: issuer, sub: 'bench-user', azp: 'bench-agent', aud: audience,
    groups: ['mcp-readers'], scope: 'tools:read', jti, iat: now, exp: now + 7200,
  });
  fs.writeFileSync(`${out}/rs256.token`, sign({ alg: 'RS256', typ: 'at+jwt', kid: 'bench-rs' }, claims('rs-1'), rsa));
  fs.writeFileSync(`${out}/es256.token`, sign({ alg: 'ES256', typ: 'at+jwt', kid: 'bench-ec' }, claims('ec-1'), ec));
  const unknown = [];
  for (let i = 0; i < 2000; i += 1) {
    unknown.push(sign({ alg: 'ES256', typ: 'at+jwt', kid: `rotated-${crypto.randomUUID()}` }, claims(`x-${i}`), ec));
  }
  fs.writeFileSync(`${out}/unknown_kid.tokens`, unknown.join('\n') + '\n');
  // Distinct valid tokens, so that no validation can be reused.
  const many = [];
  for (let i = 0; i < 5000; i += 1) {
    many.push(sign({ alg: 'ES256', typ: 'at+jwt', kid: 'bench-ec' }, claims(`many-${i}`), ec));
  }
  fs.writeFileSync(`${out}/es256_distinct.tokens`, many.join('\n') + '\n');
  fs.writeFileSync(`${out}/issuer`, issuer);
});
