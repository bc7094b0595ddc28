"""The browser page: static files from ``signal_server/web/``, served on the server's own port.

A person with only a browser opens ``http(s)://<server>/``, types a code to receive what a
``p2pcp send`` offers, or picks files and gets a code for ``p2pcp receive``. The page speaks the
same protocol as the CLI (docs/protocol.md); its crypto is WebCrypto plus ``vendor/noble.js``,
built from pinned npm packages by ``webbuild/build.sh`` and committed, so nothing is built or
fetched at install or run time. Only the files listed here are served, from memory; request paths
are never joined to file system paths.
"""

from __future__ import annotations

from http import HTTPStatus
from importlib import resources

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/p2pcp.js": ("p2pcp.js", "text/javascript; charset=utf-8"),
    "/transfer.js": ("transfer.js", "text/javascript; charset=utf-8"),
    "/wordlist.js": ("wordlist.js", "text/javascript; charset=utf-8"),
    "/constants.js": ("constants.js", "text/javascript; charset=utf-8"),
    "/vendor/noble.js": ("vendor/noble.js", "text/javascript; charset=utf-8"),
    "/vendor/qr.js": ("vendor/qr.js", "text/javascript; charset=utf-8"),
    "/vendor/zip.js": ("vendor/zip.js", "text/javascript; charset=utf-8"),
}

# Same origin only: the scripts, the style and the WebSocket back to this server ('self' covers
# ws:/wss: of the page's own host in CSP 3). Nothing inline, no frames, no referrer.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class Page:
    """The page's files, read once at start."""

    def __init__(self) -> None:
        root = resources.files("signal_server") / "web"
        self._files = {
            path: ((root / name).read_bytes(), kind) for path, (name, kind) in FILES.items()
        }

    def respond(self, request: Request) -> Response | None:
        """The page's answer to a plain HTTP GET, or None for a WebSocket upgrade."""
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        path = request.path.split("?", 1)[0]
        if path not in self._files:
            return _response(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
        body, kind = self._files[path]
        return _response(HTTPStatus.OK, body, kind)


def _response(status: HTTPStatus, body: bytes, kind: str) -> Response:
    headers = Headers({"Content-Type": kind, "Content-Length": str(len(body)), **SECURITY_HEADERS})
    return Response(status.value, status.phrase, headers, body)
