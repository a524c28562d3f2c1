"""
The dashboard's static files (CSS, scripts, icon) under C{/karajo/static/}.

Every regular file directly in C{templates/static/} is read once at start
and served from memory with a strong ETag; pages link them with a version
taken from that ETag, so a new release is never mixed with a cached old
script.  Nothing else on disk can be reached: the name must be one of the
files read at start.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
from typing import Any

__all__ = ["StaticFiles"]

_TYPES = {
    ".css": b"text/css; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".ico": b"image/x-icon",
    ".txt": b"text/plain; charset=utf-8",
}


class _Static:
    __slots__ = ("body", "etag", "content_type")

    def __init__(self, body: bytes, content_type: bytes) -> None:
        self.body = body
        self.etag = b'"' + hashlib.sha256(body).hexdigest()[:20].encode("ascii") + b'"'
        self.content_type = content_type


def _load(directory: str) -> dict[str, _Static]:
    """Every regular file directly in C{directory}, read once."""
    found: dict[str, _Static] = {}
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return found
    for name in names:
        path = os.path.join(directory, name)
        if name.startswith(".") or not os.path.isfile(path) or os.path.islink(path):
            continue
        ext = os.path.splitext(name)[1].lower()
        content_type = _TYPES.get(ext)
        if content_type is None:
            guessed = mimetypes.guess_type(name)[0]
            content_type = (guessed or "application/octet-stream").encode("ascii")
        with open(path, "rb") as f:
            found[name] = _Static(f.read(), content_type)
    return found


class StaticFiles:
    """The files of C{directory}, read at once."""

    def __init__(self, directory: str) -> None:
        self._files = _load(directory)

    def url(self, name: str) -> str:
        """Where a page links C{name}, with its version."""
        entry = self._files.get(name)
        version = entry.etag.strip(b'"')[:10].decode("ascii") if entry else "0"
        return f"/karajo/static/{name}?v={version}"

    def render(self, request: Any, name: str) -> bytes | None:
        """
        Answer C{request} with the file C{name} (or 304 Not Modified);
        None when there is no such file, for the caller's 404 page.
        """
        entry = self._files.get(name)
        if entry is None:
            return None
        request.setHeader(b"content-type", entry.content_type)
        request.setHeader(b"etag", entry.etag)
        request.setHeader(b"cache-control", b"no-cache")
        if request.getHeader(b"if-none-match") == entry.etag:
            request.setResponseCode(304)
            return b""
        request.setHeader(b"content-length", b"%d" % len(entry.body))
        return entry.body
