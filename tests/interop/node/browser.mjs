// A scripted browser for Gatehouse's login and consent pages (the Node
// twin of tests/interop/python/browser.py).
//
// The official SDK clients hand the authorization URL to the application
// and expect it to come back with a code. A person would log in and click
// "Allow"; this does the same over plain HTTP with fetch: it keeps cookies
// in a tiny jar, reads the hidden form fields, posts the forms, and never
// follows the final redirect to the client (the redirect URI is not
// contacted here). Nothing in Gatehouse is switched into a test mode.
//
// Also usable as a command: node browser.mjs <authorize-url> <user> <password>
// prints the Location the browser would go to (the client's redirect URI
// with code, state and iss).

import { pathToFileURL } from 'node:url';

function unescapeHtml(text) {
  return text
    .replace(/&quot;/g, '"')
    .replace(/&#39;|&#x27;/g, "'")
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');
}

// The hidden inputs of the first form: a page may hold another (the
// sign-out form) with fields of the same name.
export function hiddenFields(html) {
  const fields = {};
  const first = html.match(/<form[\s\S]*?<\/form>/);
  for (const tag of (first ? first[0] : html).match(/<input[^>]*>/g) ?? []) {
    if (!tag.includes('type="hidden"')) continue;
    const name = tag.match(/name="([^"]*)"/);
    const value = tag.match(/value="([^"]*)"/);
    if (name) fields[unescapeHtml(name[1])] = value ? unescapeHtml(value[1]) : '';
  }
  return fields;
}

export function formAction(html) {
  const match = html.match(/<form[^>]*action="([^"]*)"/);
  if (!match) throw new Error(`no form on the page:\n${html.slice(0, 500)}`);
  return unescapeHtml(match[1]);
}

export class Browser {
  constructor(username, password) {
    this.username = username;
    this.password = password;
    this.cookies = new Map(); // name -> value (one origin only: Gatehouse)
    this.pages = []; // {status, headers, text, url}
  }

  async request(url, init = {}) {
    const headers = new Headers(init.headers ?? {});
    if (this.cookies.size > 0) {
      headers.set('cookie', [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; '));
    }
    const response = await fetch(url, { ...init, headers, redirect: 'manual' });
    for (const line of response.headers.getSetCookie()) {
      const [pair, ...attributes] = line.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const expired = attributes.some((a) => /^\s*max-age\s*=\s*0\s*$/i.test(a));
      if (expired || value === '') this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
    const text = await response.text();
    return { status: response.status, headers: response.headers, text, url: String(url) };
  }

  post(url, fields) {
    return this.request(url, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(fields).toString(),
    });
  }

  // Follows Gatehouse's own (relative) redirects until a page or an
  // external redirect.
  async followToPage(response) {
    while (response.status === 302 || response.status === 303) {
      const location = response.headers.get('location');
      if (!location.startsWith('/')) return response;
      response = await this.request(new URL(location, response.url));
    }
    return response;
  }

  // Logs in (if needed), answers the consent page, and returns the
  // Location the browser would go to: the client's redirect URI.
  async authorize(url, decision = 'approve') {
    let response = await this.followToPage(await this.request(url));
    if (response.status === 302 || response.status === 303) return response.headers.get('location');
    let html = response.text;
    this.pages.push(response);
    if (html.includes('name="password"')) {
      const fields = { ...hiddenFields(html), username: this.username, password: this.password };
      response = await this.post(new URL(formAction(html), response.url), fields);
      if (response.status !== 303) {
        throw new Error(`login failed with ${response.status}:\n${response.text.slice(0, 400)}`);
      }
      response = await this.followToPage(response);
      if (response.status === 302 || response.status === 303) return response.headers.get('location');
      html = response.text;
      this.pages.push(response);
    }
    if (!html.includes('name="decision"')) {
      throw new Error(`expected the consent page, got ${response.status}:\n${html.slice(0, 400)}`);
    }
    const fields = { ...hiddenFields(html), decision };
    response = await this.post(new URL(formAction(html), response.url), fields);
    if (response.status !== 303) {
      throw new Error(`consent answered ${response.status}:\n${response.text.slice(0, 400)}`);
    }
    return response.headers.get('location');
  }
}

// Command-line use: print the final Location.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [url, username, password] = process.argv.slice(2);
  const location = await new Browser(username, password).authorize(url);
  console.log(location);
}
