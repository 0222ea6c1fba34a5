// The unknown-kid flood for bench/external.sh: `tools/call whoami` with
// tokens naming key ids the issuer does not publish, CONCURRENCY at a time
// for SECONDS, each request on a new connection from another loopback
// address (127.1.x.y), as a distributed attacker would send them: no single
// source reaches the per-address lockout, so every token reaches the key
// lookup. Prints `RESULT rps=… requests=… not_refused=…`.
//
//   node bench/flood.mjs MCP_URL TOKENS_FILE SECONDS CONCURRENCY
import fs from 'node:fs';
import http from 'node:http';

const [url, file, seconds, concurrency] = process.argv.slice(2);
const target = new URL(url);
const tokens = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean);
const body = JSON.stringify({
  jsonrpc: '2.0', id: 1, method: 'tools/call',
  params: {
    name: 'whoami', arguments: {},
    _meta: { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {} },
  },
});
const until = Date.now() + Number(seconds) * 1000;
let sent = 0;
let notRefused = 0;

function one(n) {
  return new Promise((resolve) => {
    const request = http.request({
      host: target.hostname, port: target.port, path: target.pathname, method: 'POST',
      localAddress: `127.1.${(n >> 8) & 255}.${(n & 255) || 1}`,
      agent: false,
      headers: {
        authorization: `Bearer ${tokens[n % tokens.length]}`,
        'content-type': 'application/json', accept: 'application/json, text/event-stream',
        'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': 'whoami',
        'content-length': Buffer.byteLength(body),
      },
    }, (response) => {
      if (response.statusCode !== 401) notRefused += 1;
      response.resume();
      response.on('end', resolve);
    });
    request.on('error', () => { notRefused += 1; resolve(); });
    request.end(body);
  });
}

async function worker() {
  while (Date.now() < until) {
    sent += 1;
    await one(sent);
  }
}
const started = Date.now();
await Promise.all(Array.from({ length: Number(concurrency) }, worker));
const elapsed = (Date.now() - started) / 1000;
console.log(`RESULT rps=${(sent / elapsed).toFixed(1)} requests=${sent} not_refused=${notRefused}`);
