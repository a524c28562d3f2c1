"""
gzip for the answers of the JSON API, the web UI and the metrics, when the
client asks for it (C{Accept-Encoding: gzip}), as the original always does
(docs/http-api.md, "Compression").

Twisted applies an encoder to whatever a wrapped resource writes
(L{twisted.web.resource.EncodingResourceWrapper}); this module gives it one
that compresses at zlib's default level (Go's too, not Twisted's 9, which
costs about three times the CPU for a few per cent), says C{Vary:
Accept-Encoding}, honours C{q=0}, and keeps the compressed form of the last
few large bodies it saw: the environment document is the same megabyte for
every dashboard's poll until a job changes, and compressing it each time
would cost more than building it.

The events stream is never wrapped (L{karajo.web.site.Root}): a compressor
holds small writes back, and a follower must see each piece as it comes.
"""

from __future__ import annotations

import zlib
from collections import deque
from typing import Any

from twisted.web.resource import EncodingResourceWrapper, IResource

__all__ = ["GZIP_LEVEL", "accepts_gzip", "asks_for_gzip", "gzip_whole", "gzipped"]

#: zlib's (and Go's) default level.
GZIP_LEVEL = 6
#: Bodies written at once from this size on have their compressed form kept.
CACHE_MIN_BYTES = 32 * 1024
#: How many such bodies are kept.
CACHE_ENTRIES = 4
#: A body written in pieces (a streamed page) is flushed to the client at
#: least every this many bytes of input, so the browser can paint the
#: page's head and first rows while the rest is built; zlib alone would
#: hold tens of KiB back.
STREAM_FLUSH_BYTES = 8 * 1024


def accepts_gzip(header: bytes | None) -> bool:
    """Whether an C{Accept-Encoding} value accepts gzip (RFC 9110 §12.5.3)."""
    if not header:
        return False
    for item in header.split(b","):
        coding, _, params = item.partition(b";")
        coding = coding.strip().lower()
        if coding not in (b"gzip", b"x-gzip", b"*"):
            continue
        q = 1.0
        for param in params.split(b";"):
            name, _, value = param.partition(b"=")
            if name.strip().lower() == b"q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        if q > 0:
            return True
    return False


def asks_for_gzip(headers: Any) -> bool:
    """Whether a request's C{Accept-Encoding} headers (Twisted's C{Headers}) accept gzip."""
    return accepts_gzip(b",".join(headers.getRawHeaders(b"Accept-Encoding", [])))


def _compressor() -> Any:
    """A gzip-format compressor at L{GZIP_LEVEL}: the one setting of both writers."""
    return zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)


def gzip_whole(body: bytes) -> bytes:
    """
    C{body} as one gzip member, for an answer written whole without the
    wrapper (L{karajo.web.hotpath}), at the wrapper's level.
    """
    compressor = _compressor()
    out: bytes = compressor.compress(body) + compressor.flush()
    return out


class _Cache:
    """The compressed forms of the last few large bodies, oldest dropped first."""

    def __init__(self) -> None:
        self._entries: deque[tuple[bytes, bytes]] = deque(maxlen=CACHE_ENTRIES)

    def get(self, body: bytes) -> bytes | None:
        for plain, packed in self._entries:
            if plain is body or (len(plain) == len(body) and plain == body):
                return packed
        return None

    def put(self, body: bytes, packed: bytes) -> None:
        self._entries.append((body, packed))


class _GzipFactory:
    """
    What C{EncodingResourceWrapper} asks for an encoder per request (it
    calls C{encoderForRequest}; the encoder needs C{encode} and C{finish}).
    """

    def __init__(self) -> None:
        self.cache = _Cache()

    def encoderForRequest(self, request: Any) -> _GzipEncoder | None:
        request.responseHeaders.addRawHeader(b"Vary", b"Accept-Encoding")
        if not asks_for_gzip(request.requestHeaders):
            return None
        request.responseHeaders.setRawHeaders(b"Content-Encoding", [b"gzip"])
        return _GzipEncoder(request, self.cache)


class _GzipEncoder:
    """Compresses one answer; a large body written at once may come from the cache."""

    def __init__(self, request: Any, cache: _Cache) -> None:
        self._request = request
        self._cache = cache
        self._compressor: Any = None
        self._started = False
        #: input bytes compressed since the last flush to the client
        self._unflushed = 0
        #: a large first write and its compressed start, kept at the end
        #: when nothing else was written
        self._whole: tuple[bytes, bytes] | None = None

    def _compress(self, data: bytes) -> bytes:
        if self._compressor is None:
            # A body after a cached one starts a new gzip member (RFC 1952
            # allows several); with one write per answer it never happens.
            self._compressor = _compressor()
        out: bytes = self._compressor.compress(data)
        return out

    def encode(self, data: bytes) -> bytes:
        if self._started:
            self._whole = None  # written in pieces: not a body to keep
            return self._streamed(data)
        self._started = True
        # The length is the compressed one's, unknown before the end.
        self._request.responseHeaders.removeHeader(b"Content-Length")
        if len(data) < CACHE_MIN_BYTES:
            return self._streamed(data)
        packed = self._cache.get(data)
        if packed is not None:
            return packed
        out = self._compress(data)
        self._whole = (data, out)
        return out

    def _streamed(self, data: bytes) -> bytes:
        """A piece of a body that may go on: flushed once enough is held back."""
        out = self._compress(data)
        self._unflushed += len(data)
        if self._unflushed >= STREAM_FLUSH_BYTES:
            self._unflushed = 0
            out += self._compressor.flush(zlib.Z_SYNC_FLUSH)
        return out

    def finish(self) -> bytes:
        head = b""
        if self._compressor is None:
            if self._started:
                return b""  # only a cached body was written: it is whole
            head = self._compress(b"")  # nothing written: an empty gzip body
        rest: bytes = head + self._compressor.flush()
        self._compressor = None
        if self._whole is not None:
            data, head = self._whole
            self._cache.put(data, head + rest)
        return rest


def gzipped(resource: IResource) -> IResource:
    """C{resource}, its answers gzip-compressed for the clients that ask."""
    return EncodingResourceWrapper(resource, [_GzipFactory()])
