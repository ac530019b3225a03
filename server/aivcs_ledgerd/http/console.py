"""The web console's files (static/, shipped in the wheel), and the headers every answer carries.

The console is plain HTML, one script and one style sheet, served from the
package: nothing is fetched from elsewhere, so it works offline. Every
answer carries a Content-Security-Policy that allows only this origin's
script, style and fetches (no inline script, no eval, no framing), so even
a rendering mistake could not run a payload's `<script>`; the script itself
writes every value with textContent.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

FILES = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "app.css": "text/css",
    "favicon.svg": "image/svg+xml",
}


def _read(name: str) -> bytes:
    return resources.files("aivcs_ledgerd.http").joinpath("static", name).read_bytes()


class Console:
    """The console's three files, read once at start."""

    def __init__(self) -> None:
        self._files = {name: _read(name) for name in FILES}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.index)
        app.router.add_get("/console/{name}", self.asset)
        app.router.add_get("/favicon.ico", self.icon)

    async def index(self, request: web.Request) -> web.Response:
        return self._answer("index.html")

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in FILES or name == "index.html":
            raise web.HTTPNotFound()
        return self._answer(name)

    async def icon(self, request: web.Request) -> web.Response:
        return self._answer("favicon.svg")

    def _answer(self, name: str) -> web.Response:
        charset = None if name.endswith(".svg") else "utf-8"
        response = web.Response(body=self._files[name], content_type=FILES[name], charset=charset)
        response.headers["Cache-Control"] = "no-cache"
        return response


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Application.on_response_prepare hook: SECURITY_HEADERS on every answer, errors and streams included."""
    response.headers.update(SECURITY_HEADERS)
