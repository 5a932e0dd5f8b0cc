"""The web console (``/ui/``: static files from ``gateway/console``) and ``GET /api/whoami``.

The console's files need no key: they hold no data. The page signs in with a pasted API key, kept in the
tab's sessionStorage and sent as the bearer header of the JSON routes it calls (never in a URL or a cookie).
Every console answer carries a strict Content-Security-Policy: scripts, styles and connections from this
origin only (no inline script or style), no framing.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from gateway import state
from gateway.errors import NotFound
from gateway.http.responses import success

routes = web.RouteTableDef()

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml",
                 ".png": "image/png", ".txt": "text/plain"}
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",  # revalidated (ETag-less but small): a new gateway version is seen at once
}


def console_files() -> dict[str, Path]:
    """The files the console serves, by name (a fixed list read once: no path from a request reaches the disk)."""
    return {path.relative_to(CONSOLE_DIR).as_posix(): path for path in sorted(CONSOLE_DIR.rglob("*"))
            if path.is_file() and path.suffix in CONTENT_TYPES}


FILES = console_files()


@routes.get("/ui/")
async def ui_index(request: web.Request) -> web.Response:
    return _file("index.html")


@routes.get("/ui/{name:.+}")
async def ui_file(request: web.Request) -> web.Response:
    return _file(request.match_info["name"])


def _file(name: str) -> web.Response:
    path = FILES.get(name)
    if path is None:
        raise NotFound(f"the console has no file {name!r}")
    charset = "utf-8" if path.suffix in (".html", ".js", ".css", ".svg", ".txt") else None
    return web.Response(body=path.read_bytes(), content_type=CONTENT_TYPES[path.suffix], charset=charset,
                        headers=HEADERS)


@routes.get("/api/whoami")
async def whoami(request: web.Request) -> web.Response:
    """The calling key's endpoint and scope, so that a page offers only what the key may do. Like every
    ``/api`` read it needs ``write``: a ``read`` key gets 403 (the console then offers the read-only views)."""
    principal = request[state.PRINCIPAL]
    return success({"endpoint": principal.endpoint_name, "scope": principal.scope})
