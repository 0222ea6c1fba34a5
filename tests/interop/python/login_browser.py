"""Stands in for the user's web browser when examples/python_oauth_client.py
calls webbrowser.open (Python honours the BROWSER variable): signs in with
GATEHOUSE_TEST_USER / GATEHOUSE_TEST_PASSWORD, allows access, and then
follows the final redirect to the example's loopback callback, as a real
browser would.

Usage: BROWSER="python login_browser.py %s" python examples/python_oauth_client.py URL
"""

import asyncio
import os
import sys

import httpx2

from browser import Browser


async def main(url):
    browser = Browser(os.environ["GATEHOUSE_TEST_USER"], os.environ["GATEHOUSE_TEST_PASSWORD"])
    location = await browser.authorize(url)
    await browser.close()
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.get(location)
        response.raise_for_status()


asyncio.run(main(sys.argv[1]))
