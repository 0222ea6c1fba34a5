"""A scripted browser for Gatehouse's login and consent pages.

The official SDK clients hand the authorization URL to the application
and expect it to come back with a code. A person would log in and click
"Allow"; this does the same over plain HTTP: it keeps cookies, reads the
hidden form fields, posts the forms, and never follows the final redirect
(the redirect URI is never contacted). Nothing in Gatehouse is switched
into a test mode for this.
"""

import re
from html import unescape
from urllib.parse import urljoin

import httpx2


def hidden_fields(html):
    """The hidden inputs of the first form on a page, by name."""
    fields = {}
    # Only the first form: a page may hold another (the sign-out form)
    # with fields of the same name.
    first = re.search(r"<form.*?</form>", html, re.S)
    for tag in re.findall(r"<input[^>]*>", first.group(0) if first else html):
        if 'type="hidden"' not in tag:
            continue
        name = re.search(r'name="([^"]*)"', tag)
        value = re.search(r'value="([^"]*)"', tag)
        if name:
            fields[unescape(name.group(1))] = unescape(value.group(1)) if value else ""
    return fields


def form_action(html):
    match = re.search(r'<form[^>]*action="([^"]*)"', html)
    if not match:
        raise AssertionError("no form on the page:\n" + html[:500])
    return unescape(match.group(1))


class Browser:
    def __init__(self, username, password):
        self.username = username
        self.password = password
        self.http = httpx2.AsyncClient(follow_redirects=False, timeout=30)
        self.pages = []

    async def close(self):
        await self.http.aclose()

    async def _follow_to_page(self, response):
        """Follows our own 303s until a page (200/4xx) or an external redirect."""
        while response.status_code in (302, 303):
            location = response.headers["location"]
            if not location.startswith("/"):
                return response
            response = await self.http.get(urljoin(str(response.url), location))
        return response

    async def authorize(self, url, decision="approve"):
        """Logs in (if needed), answers the consent page, and returns the
        Location the browser would go to: the client's redirect URI."""
        response = await self._follow_to_page(await self.http.get(url))
        if response.status_code in (302, 303):
            return response.headers["location"]
        html = response.text
        self.pages.append(response)
        if 'name="password"' in html:
            fields = hidden_fields(html)
            fields.update(username=self.username, password=self.password)
            response = await self.http.post(
                urljoin(str(response.url), form_action(html)), data=fields
            )
            if response.status_code != 303:
                raise AssertionError(
                    f"login failed with {response.status_code}:\n{response.text[:400]}"
                )
            response = await self._follow_to_page(response)
            if response.status_code in (302, 303):
                return response.headers["location"]
            html = response.text
            self.pages.append(response)
        if 'name="decision"' not in html:
            raise AssertionError(f"expected the consent page, got {response.status_code}:\n{html[:400]}")
        fields = hidden_fields(html)
        fields["decision"] = decision
        response = await self.http.post(
            urljoin(str(response.url), form_action(html)), data=fields
        )
        if response.status_code != 303:
            raise AssertionError(f"consent answered {response.status_code}:\n{response.text[:400]}")
        return response.headers["location"]
