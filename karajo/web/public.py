"""
The files of C{dir_public}, served under C{/}.

This directory is exposed to anyone who can reach the port, next to a
configuration that holds secrets, so every request path is checked before
the file system is touched, and again after symlinks are resolved:

  - Each path segment (already percent-decoded once by Twisted) must be
    non-empty, valid UTF-8, and free of C{/}, C{\\}, NUL and other control
    characters, and of C{%} -- a C{%} left after one decoding means a
    double-encoded path (C{%252e%252e}), which is refused rather than
    guessed at.  As a consequence a file whose name contains C{%} cannot be
    served; that is the price of never decoding twice.
  - Hidden names (starting with C{.}) are refused: C{.}, C{..}, and also
    C{.git}, C{.env}, C{.htpasswd} and the like, which are almost never
    meant to be published.  The check is repeated on the resolved path, so a
    symlink cannot lead to a hidden file either.
  - The resolved path (C{os.path.realpath}) must lie inside the resolved
    directory (compared with a trailing separator, so C{/srv/pub} does not
    admit C{/srv/public-secret}).  Symlinks inside the directory pointing
    inside it are followed; pointing outside, refused.
  - Only regular files are sent (never a FIFO or device, which could block
    the server).  A directory is answered with its C{index.html} (itself
    checked the same way) and otherwise 404: there are no listings.  A
    directory asked for without a trailing slash is redirected (with a
    relative C{Location}) so that relative links in its index work.

Every file is served with the restrictive L{CSP} (a sandbox).

Every refusal is the same JSON 404 (L{karajo.web.errors.error}: not
cached, not sniffed), which never repeats the requested path.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any
from urllib.parse import quote

from twisted.logger import Logger
from twisted.web import resource, static
from twisted.web.iweb import IRequest

from karajo.web.errors import error

__all__ = ["CSP", "INDEX", "PublicFiles"]

log = Logger()

#: The file served for a directory.
INDEX = "index.html"

#: The policy of every public file.  The files share the dashboard's origin,
#: so an HTML file there could otherwise drive the API with a logged-in
#: admin's session.  C{sandbox} (without C{allow-same-origin} or
#: C{allow-scripts}) gives the document an opaque origin and runs none of
#: its scripts: its requests carry no same-origin cookie (the session
#: cookie is C{SameSite=Strict}) and say C{Origin: null}, which the API
#: refuses.  Images, styles, fonts and media of the same server still load.
CSP = (
    b"sandbox; default-src 'none'; img-src 'self'; style-src 'self'; "
    b"font-src 'self'; media-src 'self'"
)

# Control characters, the path separators of any OS, and "%" (see above).
_FORBIDDEN_CHARS = frozenset(chr(c) for c in range(0x20)) | {"\x7f", "/", "\\", "%"}


def _not_found(request: IRequest) -> bytes:
    return error(request, 404, "ERR_NOT_FOUND", "not found")


class _NotFound(resource.Resource):
    """The JSON 404, also used for files that vanish or cannot be read."""

    isLeaf = True

    def render(self, request: IRequest) -> bytes:
        return _not_found(request)


def _segment(raw: bytes) -> str | None:
    """One decoded path segment as text, or None if it must be refused."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text or text.startswith(".") or not _FORBIDDEN_CHARS.isdisjoint(text):
        return None
    return text


class _File(static.File):
    """
    Sends one already-checked regular file.

    Errors opening it (a permission problem, a file removed meanwhile) are
    the JSON 404 instead of Twisted's HTML pages, which would say why.
    """

    # Twisted's types for these two are inferred from its own defaults
    # (private resource classes); any resource renders there.
    childNotFound = _NotFound()  # type: ignore[assignment]
    forbidden = _NotFound()  # type: ignore[assignment]
    # Send files as they are: Twisted would label "x.tar.gz" as
    # Content-Encoding gzip and browsers would silently unpack it.
    contentEncodings: dict[str, str] = {}

    def render_GET(self, request: IRequest) -> Any:
        try:
            return super().render_GET(request)
        except OSError:
            return _NotFound().render(request)

    render_HEAD = render_GET

    def directoryListing(self) -> resource.Resource:  # pragma: no cover - never a directory
        return _NotFound()


class PublicFiles(resource.Resource):
    """
    Serves the regular files under C{directory}, read-only, and nothing else.

    A leaf resource: it reads the rest of the path from C{request.postpath},
    so it works as a Site's root, under C{putChild}, or returned from a Klein
    branch route.
    """

    isLeaf = True

    def __init__(self, directory: str) -> None:
        super().__init__()
        self.directory = directory

    def render(self, request: IRequest) -> Any:
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return error(request, 405, "ERR_METHOD_NOT_ALLOWED",
                         "only GET and HEAD are allowed here")
        found = self._resolve(list(request.postpath or [b""]))
        if found is None:
            return _not_found(request)
        kind, value = found
        if kind == "redirect":
            request.setResponseCode(301)
            request.setHeader(b"location", value.encode("ascii"))
            request.setHeader(b"content-type", b"application/json")
            return json.dumps(
                {"code": 301, "message": "moved", "data": None}, separators=(",", ":")
            ).encode("ascii")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"content-security-policy", CSP)
        return _File(value, defaultType="application/octet-stream").render(request)

    def _resolve(self, postpath: list[bytes]) -> tuple[str, str] | None:
        """
        What to answer for the path segments after this resource:
        C{("file", real path)}, C{("redirect", relative location)}, or None
        for 404.
        """
        # A trailing slash (the root itself is [b""]) asks for a directory.
        wants_dir = postpath[-1] == b""
        if wants_dir:
            postpath = postpath[:-1]
        parts: list[str] = []
        for raw in postpath:
            part = _segment(raw)
            if part is None:
                return None
            parts.append(part)

        root = os.path.realpath(self.directory)
        real = self._inside(root, os.path.join(root, *parts))
        if real is None:
            return None
        try:
            mode = os.stat(real).st_mode
        except OSError:
            return None
        if stat.S_ISDIR(mode):
            if not wants_dir:
                # parts is not empty here: an empty path is the root, "/".
                return ("redirect", quote(parts[-1], safe="") + "/")
            real = self._inside(root, os.path.join(real, INDEX))
            if real is None:
                return None
            try:
                mode = os.stat(real).st_mode
            except OSError:
                return None
        elif wants_dir:
            # "file.txt/" is not a directory.
            return None
        if not stat.S_ISREG(mode):
            return None
        return ("file", real)

    def _inside(self, root: str, candidate: str) -> str | None:
        """
        C{candidate} with every symlink resolved, if that lies inside C{root}
        and no component below C{root} is hidden; else None.
        """
        real = os.path.realpath(candidate)
        if real == root:
            return real
        prefix = root if root.endswith(os.sep) else root + os.sep
        if not real.startswith(prefix):
            log.debug("refused a public path resolving outside {root}", root=root)
            return None
        relative = os.path.relpath(real, root)
        if any(part.startswith(".") for part in relative.split(os.sep)):
            return None
        return real

