"""The events explorer: a browser page over the events API, shipped inside this package.

:func:`mount_explorer` serves ``GET /explorer`` (the page), ``/explorer/app.js`` and
``/explorer/style.css`` from the files next to this module (``index.html``, ``app.js``,
``style.css``: plain HTML, JavaScript and CSS, no build step), and optionally redirects
``GET /`` to ``/explorer`` (not inside a worker, where Faust serves ``/``).

Contract of the page (see ``app.js``): it reads only this origin's ``/v1`` API, sends the API
key as ``X-Api-Key`` and keeps it in ``sessionStorage`` (the tab), never in a URL, a cookie
or a log; it renders every string of an event as text. Every answer carries a strict
Content-Security-Policy (:data:`CSP`: scripts, styles and requests from this origin only, no
inline script or style, no framing, no form posts), ``X-Content-Type-Options: nosniff`` and
``Referrer-Policy: no-referrer``. The page is revalidated by ETag at every load; it names its
script and style with their digest, which may then be cached for good: a new version of the
package is picked up at the next load.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import web
from aiohttp.typedefs import Handler

PAGE_PATH = "/explorer"

CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'none'",
    )
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

_FILES = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
}


@dataclass(frozen=True)
class PageFile:
    body: bytes
    content_type: str
    etag: str


def load_files() -> dict[str, PageFile]:
    """The page's files as shipped in the package (read once, at mount). The page names
    its script and style with their version (``app.js?v=<digest>``), so a browser keeps
    them without asking again until the package changes them."""
    folder = resources.files(__name__)
    files = {}
    for name, content_type in _FILES.items():
        body = folder.joinpath(name).read_bytes()
        files[name] = PageFile(body, content_type, _digest(body))
    page = files["index.html"].body.decode()
    for name in ("app.js", "style.css"):
        page = page.replace(
            f'"{PAGE_PATH}/{name}"', f'"{PAGE_PATH}/{name}?v={files[name].etag.strip(chr(34))}"'
        )
    body = page.encode()
    files["index.html"] = PageFile(body, "text/html", _digest(body))
    return files


def _digest(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def respond(request: web.Request, page_file: PageFile) -> web.Response:
    """``page_file`` with the security headers, or 304 when the client's copy is current.
    A request naming the file's current version may keep it for a year; anything else
    (the page itself) is revalidated at every load."""
    versioned = request.query.get("v") == page_file.etag.strip('"')
    cache = "public, max-age=31536000, immutable" if versioned else "no-cache"
    headers = {**SECURITY_HEADERS, "Cache-Control": cache, "ETag": page_file.etag}
    if page_file.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(
        body=page_file.body,
        content_type=page_file.content_type,
        charset="utf-8",
        headers=headers,
    )


def mount_explorer(root: web.Application, *, redirect_root: bool = False) -> None:
    """Serve the explorer on ``root``; with ``redirect_root``, ``GET /`` redirects to it."""
    files = load_files()

    def serving(name: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            return respond(request, files[name])

        return handler

    root.router.add_get(PAGE_PATH, serving("index.html"))
    root.router.add_get(f"{PAGE_PATH}/app.js", serving("app.js"))
    root.router.add_get(f"{PAGE_PATH}/style.css", serving("style.css"))

    async def to_page(request: web.Request) -> web.Response:
        raise web.HTTPFound(PAGE_PATH, headers=SECURITY_HEADERS)

    root.router.add_get(f"{PAGE_PATH}/", to_page)
    if redirect_root:
        root.router.add_get("/", to_page)
