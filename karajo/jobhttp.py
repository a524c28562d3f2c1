"""
JobHttp: each run sends one signed HTTP request with treq.

The request carries C{_karajo_epoch} (the server's Unix time) in the query
string, a urlencoded body or a JSON body, and the hex HMAC-SHA256 of the
exact payload bytes sent in the job's C{header_sign} header, so the receiver
(typically a karajo webhook) can authenticate it and refuse replays.

Everything runs on the reactor: no call here blocks.  One timer covers the
whole exchange (connecting, sending, the response headers and reading the
body), and stopping a run cancels the request wherever it is.  The response
body goes to the run's log as it arrives, up to a cap, so a huge or endless
response never sits in memory.

All JobHttp jobs of a server share one L{karajo.httpclients.HttpClients}
(TLS verified unless C{http_insecure}; a fresh connection per run).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from hyperlink import EncodedURL
from OpenSSL import SSL
from twisted.internet import defer, error
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorTime,
)
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import (
    ResponseDone,
    ResponseFailed,
)
from twisted.web.error import SchemeNotSupported
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from karajo.duration import format_duration
from karajo.errors import RunFailed
from karajo.httpclients import USER_AGENT, HttpClients
from karajo.model import Environment, JobHttp
from karajo.redact import MASK, masked_headers, masked_url
from karajo.runlog import RunLog
from karajo.signature import sign
from karajo.work import Stopped

__all__ = [
    "MAX_LOGGED_BODY",
    "MAX_RESPONSE_BODY",
    "JobHttpWork",
    "effective_timeout",
    "self_base_url",
]

#: How much of a response body is read; the rest is not read at all.
MAX_RESPONSE_BODY = 1024 * 1024

#: How much of the body read goes to the log: a run's log stays readable
#: in the dashboard; the note at the end says how much more there was.
MAX_LOGGED_BODY = 64 * 1024

_EPOCH = "_karajo_epoch"


# --- the request -----------------------------------------------------------


def effective_timeout(job: JobHttp, env: Environment) -> timedelta | None:
    """
    The job's C{http_timeout} when positive, the global one when zero,
    none when negative (or when the global one is not positive).
    """
    if job.http_timeout > timedelta(0):
        return job.http_timeout
    if job.http_timeout < timedelta(0):
        return None
    if env.http_timeout > timedelta(0):
        return env.http_timeout
    return None


def self_base_url(listen_address: str) -> str:
    """
    C{http://host:port} of this server itself, from C{listen_address}: an
    empty or wildcard host (C{:port}, C{0.0.0.0}, C{[::]}) is reached
    through the loopback address of the same family.
    """
    host, sep, port = listen_address.strip().rpartition(":")
    if not sep:
        host, port = port, "31937"
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host in ("", "0.0.0.0", "*"):  # nosec B104: a wildcard is mapped to loopback here
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class _Prepared:
    """What one run sends, computed before anything goes out."""

    def __init__(
        self,
        method: str,
        url: str,
        headers: Headers,
        body: bytes | None,
        auth: tuple[str, str] | None,
    ) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.auth = auth


def _uri(text: str) -> EncodedURL:
    """
    The URL as treq will send it (percent-encoded, IDNA host).  An IPv6
    literal host is kept as it is: hyperlink would IDNA-encode it, and fail.
    """
    url = EncodedURL.from_text(text)
    host = url.host
    if ":" in host:
        return url.replace(host="ipv6-literal.invalid").to_uri().replace(host=host)
    return url.to_uri()


def _to_uri(text: str) -> str:
    return _uri(text).to_text()


class _OnTheWire(EncodedURL):
    """
    A URL already in the form it is sent in (made by L{_uri}).  treq
    converts every URL it is given once more, which IDNA-encodes an IPv6
    literal host and fails; this one converts to itself.
    """

    def to_uri(self) -> _OnTheWire:
        return self


def prepare(job: JobHttp, env: Environment, epoch: int) -> _Prepared:
    """
    Build the request of one run: URL, headers and body, and the signature
    over the exact payload bytes.

    @raise RunFailed: when the URL cannot be used.
    """
    raw = job.http_url.strip()
    if raw.startswith("/"):
        raw = self_base_url(env.listen_address) + raw
    try:
        url = _uri(raw)
    except Exception as e:
        raise RunFailed(f"invalid http_url {masked_url(job.http_url)!r}: {e}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise RunFailed(f"invalid http_url {masked_url(job.http_url)!r}: need an http or https URL")
    auth = None
    if url.userinfo:
        user, _, password = url.userinfo.partition(":")
        auth = (unquote(user), unquote(password))
    url = url.replace(userinfo="", fragment="")
    scheme, netloc, path, query, _ = urlsplit(url.to_text())

    kind = job.http_request_type
    headers = Headers()
    headers.setRawHeaders(b"User-Agent", [USER_AGENT])
    body: bytes | None = None
    if kind == "query":
        kept = [p for p in query.split("&") if p and p.split("=", 1)[0] != _EPOCH]
        query = "&".join(kept + [f"{_EPOCH}={epoch}"])
        final = _to_uri(urlunsplit((scheme, netloc, path, query, "")))
        payload = urlsplit(final).query.encode("ascii")
    else:
        final = _to_uri(urlunsplit((scheme, netloc, path, query, "")))
        if kind == "json":
            body = json.dumps({_EPOCH: epoch}, separators=(",", ":")).encode("ascii")
            content_type = b"application/json"
        else:
            body = f"{_EPOCH}={epoch}".encode("ascii")
            content_type = b"application/x-www-form-urlencoded"
        headers.setRawHeaders(b"Content-Type", [content_type])
        payload = body

    # The job's own headers replace ours of the same name (Content-Type,
    # User-Agent), and repeat when the job repeats them...
    own: dict[str, list[str]] = {}
    for name, value in job.http_headers:
        own.setdefault(name.strip().lower(), []).append(value)
    for name, values in own.items():
        headers.setRawHeaders(name, values)
    # ... except the signature, which must match what is sent.
    secret = env.secret_of(job)
    if secret:
        headers.setRawHeaders(job.header_sign, [sign(secret, payload)])

    return _Prepared(job.http_method.upper(), final, headers, body, auth)


# --- reading the body ------------------------------------------------------


class _BodyToLog(Protocol):
    """
    Write a response body to the log as it arrives, its first C{logged}
    bytes; the rest is only counted.  At C{limit} bytes it stops reading
    and closes the connection; C{done} fires with C{(bytes_read, cut)}.
    Cancelling C{done} closes the connection too.
    """

    def __init__(self, write: Callable[[bytes], None], limit: int, logged: int) -> None:
        self._write = write
        self._limit = limit
        self._logged = logged
        self.size = 0
        self.written = 0
        self._over = False
        self.done: defer.Deferred[tuple[int, bool]] = defer.Deferred(self._cancel)

    def _close(self) -> None:
        transport = self.transport
        if transport is not None:
            stop = getattr(transport, "stopProducing", None) or transport.loseConnection
            stop()

    def _cancel(self, _: defer.Deferred) -> None:
        self._over = True
        self._close()

    def _end(self, result: Any) -> None:
        if not self._over:
            self._over = True
            if isinstance(result, Failure):
                self.done.errback(result)
            else:
                self.done.callback(result)

    def dataReceived(self, data: bytes) -> None:
        if self._over:
            return
        try:
            room = self._limit - self.size
            over = len(data) > room
            data = data[:room]
            shown = data[: max(0, self._logged - self.written)]
            if shown:
                self._write(shown)
                self.written += len(shown)
            self.size += len(data)
            if not over:
                return
        except Exception:
            self._end(Failure())
            self._close()
            return
        self._end((self.size, True))
        self._close()

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:  # noqa: B008
        if reason.check(ResponseDone, PotentialDataLoss):
            self._end((self.size, False))
        else:
            self._end(reason)


# --- errors ------------------------------------------------------------------


def _tls_reason(exc: SSL.Error) -> str:
    """The OpenSSL reasons of a TLS error, e.g. C{certificate verify failed}."""
    parts = []
    for item in exc.args[0] if exc.args and isinstance(exc.args[0], list) else ():
        if isinstance(item, tuple) and item:
            parts.append(str(item[-1]))
    return ", ".join(p for p in parts if p) or str(exc) or "handshake failed"


def _leaves(failure: Failure) -> list[Failure]:
    """The underlying failures of twisted.web's wrapper exceptions."""
    reasons = getattr(failure.value, "reasons", None)
    if isinstance(failure.value, ResponseFailed) or reasons:
        out: list[Failure] = []
        for reason in reasons or ():
            if isinstance(reason, Failure):
                out.extend(_leaves(reason))
        return out or [failure]
    return [failure]


def _describe(failure: Failure, where: str, reading_body: bool) -> str:
    """A clear one-line message for a failed exchange with C{where}."""
    leaves = _leaves(failure)
    for leaf in leaves:
        value = leaf.value
        if isinstance(value, SSL.Error):
            return f"TLS error with {where}: {_tls_reason(value)}"
        if type(value).__name__ == "VerificationError":  # service_identity
            return f"TLS error with {where}: certificate does not match the host name ({value})"
    for leaf in leaves:
        value = leaf.value
        if isinstance(value, error.ConnectionRefusedError):
            return f"connection refused by {where}"
        if isinstance(value, error.DNSLookupError):
            return f"DNS lookup failed for {where.rsplit(':', 1)[0]}"
        if isinstance(value, error.TimeoutError):
            return f"connecting to {where} timed out"
        if isinstance(value, error.NoRouteError):
            return f"no route to {where}"
        if isinstance(value, SchemeNotSupported):
            return f"unsupported URL scheme: {value}"
        if isinstance(value, error.ConnectError):
            return f"cannot connect to {where}: {value}"
        if isinstance(value, (error.ConnectionLost, error.ConnectionDone)):
            if reading_body:
                return f"connection to {where} lost while reading the response body"
            return f"connection to {where} closed before a response was received"
    value = leaves[0].value
    text = str(value) or type(value).__name__
    if reading_body:
        return f"reading the response body from {where} failed: {text}"
    return f"request to {where} failed: {text}"


# --- the work ----------------------------------------------------------------


class _Attempt:
    """
    The state of one run: the Deferred now awaited (cancelled by a stop or
    the timeout) and why it was cancelled, the first reason winning.
    """

    def __init__(self) -> None:
        self.pending: defer.Deferred | None = None
        self.reason: str | None = None
        self.timer: IDelayedCall | None = None

    def wait(self, d: defer.Deferred) -> defer.Deferred:
        self.pending = d
        if self.reason is not None:
            d.cancel()
        return d

    def interrupt(self, reason: str) -> None:
        if self.reason is not None:
            return
        self.reason = reason
        if self.pending is not None:
            # A Deferred waiting on an inner one counts as called: cancel()
            # forwards to the inner one, and is a no-op on a finished one.
            self.pending.cancel()

    def disarm(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


_STOP = "stop"
_TIMEOUT = "timeout"


class JobHttpWork:
    """
    The work of a JobHttp run (see L{karajo.work.Work}): one request, its
    response status, headers of interest and body in the log.  A status
    outside 2xx, a connection or TLS error or the timeout fails the run
    (L{RunFailed}); L{stop} makes it fail with L{Stopped}.

    Redirects are not followed: a 3xx fails the run and its C{Location} is
    in the log, so the signed payload and the job's headers (which may hold
    credentials) only ever go to the URL the operator configured.
    """

    def __init__(
        self,
        job: JobHttp,
        env: Environment,
        reactor: IReactorTime,
        clients: HttpClients | None = None,
        max_body: int = MAX_RESPONSE_BODY,
        max_logged_body: int = MAX_LOGGED_BODY,
    ) -> None:
        self.job = job
        self.env = env
        self._reactor = reactor
        self._clients = clients if clients is not None else HttpClients(reactor)
        self._max_body = max_body
        self._max_logged_body = max_logged_body
        self._attempt: _Attempt | None = None

    def run(self, log: RunLog, counter: int, request: Any) -> defer.Deferred[None]:
        attempt = self._attempt = _Attempt()

        def done(result: Any) -> Any:
            attempt.disarm()
            if self._attempt is attempt:
                self._attempt = None
            return result

        return defer.ensureDeferred(self._run(attempt, log)).addBoth(done)

    def stop(self) -> None:
        if self._attempt is not None:
            self._attempt.interrupt(_STOP)

    async def _run(self, attempt: _Attempt, log: RunLog) -> None:
        job = self.job
        epoch = int(self._reactor.seconds())
        prepared = prepare(job, self.env, epoch)
        where = _origin(prepared.url)
        note = " (TLS certificate not verified)" if job.http_insecure else ""
        log.line(f"--- {prepared.method} {prepared.url}{note}")
        for text in _request_lines(prepared, job.header_sign):
            log.line(f"--- > {text}")
        if prepared.body is not None:
            log.line(f"--- request body: {prepared.body.decode('utf-8', 'backslashreplace')}")

        timeout = effective_timeout(job, self.env)
        if timeout is not None:
            attempt.timer = self._reactor.callLater(
                timeout.total_seconds(), attempt.interrupt, _TIMEOUT
            )

        def interrupted(doing: str) -> Exception | None:
            if attempt.reason == _STOP:
                return Stopped()
            if attempt.reason == _TIMEOUT:
                assert timeout is not None
                return RunFailed(f"timeout after {format_duration(timeout)} {doing}")
            return None

        client = self._clients.client(job.http_insecure)
        kwargs: dict[str, Any] = dict(
            headers=prepared.headers,
            data=prepared.body,
            allow_redirects=False,
            unbuffered=True,
        )
        if prepared.auth is not None:
            kwargs["auth"] = prepared.auth
        try:
            response: IResponse = await attempt.wait(
                defer.maybeDeferred(
                    client.request, prepared.method, _OnTheWire.from_text(prepared.url), **kwargs
                )
            )
        except Exception:
            failure = Failure()
            stop = interrupted(f"waiting for a response from {where}")
            if stop is not None:
                raise stop from None
            raise RunFailed(_describe(failure, where, reading_body=False)) from None
        finally:
            attempt.pending = None

        log.line(f"--- {_status_line(response)}")
        for text in _response_lines(response):
            log.line(f"--- < {text}")

        reader = _BodyToLog(log.write, self._max_body, self._max_logged_body)
        try:
            response.deliverBody(reader)
            size, cut = await attempt.wait(reader.done)
        except Exception:
            failure = Failure()
            stop = interrupted(f"while reading the response body from {where}")
            if stop is not None:
                raise stop from None
            raise RunFailed(_describe(failure, where, reading_body=True)) from None
        finally:
            attempt.pending = None
        if reader.written < size:
            more = "at least " if cut else ""
            log.line(f"--- response body: {more}{size} bytes, the first {reader.written} logged")
        if cut:
            log.line(f"--- response body cut after {size} bytes")
        stop = interrupted(f"while reading the response body from {where}")
        if stop is not None:
            raise stop
        if not 200 <= response.code < 300:
            raise RunFailed(f"HTTP status {response.code}")


def _request_lines(prepared: _Prepared, header_sign: str) -> list[str]:
    """
    The request headers as sent, C{Name: value}: the signature, credentials (L{masked_headers}) and the basic-auth password
    of the URL are masked, so the log can be shown to anyone who may read it.
    """
    host = urlsplit(prepared.url).netloc
    pairs = [("Host", host)]
    sign_name = header_sign.strip().lower()
    for raw_name, values in prepared.headers.getAllRawHeaders():
        name = raw_name.decode("latin-1")
        for value in values:
            shown = MASK if name.lower() == sign_name else value.decode("latin-1")
            pairs.append((_title(name), shown))
    if prepared.auth is not None:
        # treq's basic auth replaces a job's own Authorization header.
        pairs = [p for p in pairs if p[0].lower() != "authorization"]
        pairs.append(("Authorization", f"Basic {MASK}"))
    if prepared.body is not None:
        pairs.append(("Content-Length", str(len(prepared.body))))
    return masked_headers(pairs)


def _response_lines(response: IResponse) -> list[str]:
    """The response headers, C{Name: value}, credentials (cookies) masked."""
    pairs: list[tuple[str, str]] = []
    for raw_name, values in response.headers.getAllRawHeaders():
        name = raw_name.decode("latin-1")
        if name.lower() == "content-encoding" and not any(values):
            # treq's decoder leaves an empty one after decoding gzip.
            continue
        pairs.extend((_title(name), v.decode("latin-1")) for v in values)
    if isinstance(response.length, int) and not any(
        n.lower() == "content-length" for n, _ in pairs
    ):
        # twisted.web keeps Content-Length out of the headers.
        pairs.append(("Content-Length", str(response.length)))
    return masked_headers(pairs)


def _title(name: str) -> str:
    """C{content-type} as C{Content-Type}, the way it is usually written."""
    return "-".join(part[:1].upper() + part[1:] for part in name.split("-"))


def _status_line(response: IResponse) -> str:
    """C{HTTP/1.1 200 OK}."""
    try:
        proto, major, minor = response.version
        version = f"{proto.decode('ascii', 'replace')}/{major}.{minor}"
    except (TypeError, ValueError, AttributeError):
        version = "HTTP"
    phrase = response.phrase.decode("latin-1") if response.phrase else ""
    return f"{version} {response.code} {phrase}".rstrip()


def _origin(url: str) -> str:
    """C{host:port} of a URL, for messages (never the path or query)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}"
