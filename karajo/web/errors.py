"""
Errors have one home: the exceptions the API raises, the table that maps
every exception type to its HTTP status and C{ERR_*} name, and the one
writer of a JSON error, which every error of the site goes through (the
API, the body cap and parser refusals of L{karajo.web.limits}, the public
files, the site's own 404 and the metrics page).

An error is the envelope of L{karajo.web.envelope} with a C{name}::

    {"code": 404, "message": "job not found", "name": "ERR_JOB_NOT_FOUND", "data": null}

and always the headers of L{karajo.web.envelope.JSON_HEADERS}
(C{application/json}, C{Cache-Control: no-store}, C{nosniff}).  Messages
are fixed strings or short reasons that never repeat what the client sent.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from karajo.errors import ClusterUnavailable, JobBusy, JobPaused, ServerStarting, ServerStopping
from karajo.replay import InvalidEpoch
from karajo.users import LoginFailed, LoginThrottled
from karajo.web.envelope import JSON_HEADERS, envelope, set_json_headers

__all__ = [
    "ERRORS",
    "APIError",
    "BodyTooLarge",
    "CSRFRefused",
    "InvalidJobID",
    "InvalidParameter",
    "JobNotFound",
    "JobNotRunning",
    "LogNotFound",
    "ReplayMemoryFull",
    "RequestExpired",
    "RequestReplayed",
    "TokenScope",
    "Unauthorized",
    "WebhookForbidden",
    "describe",
    "error",
    "error_response",
]


class APIError(Exception):
    """An error whose C{str()} is a short message that is safe to send."""


class InvalidJobID(APIError):
    """The C{id} parameter is missing or empty."""


class InvalidParameter(APIError):
    """A parameter other than C{id} is missing or malformed."""


class JobNotFound(APIError):
    """No job with that ID (or webhook path)."""


class LogNotFound(APIError):
    """The job has no log of that counter."""


class Unauthorized(APIError):
    """Neither a valid signature nor a valid session."""


class TokenScope(APIError):
    """A valid API token whose scope does not cover the call (a read token managing)."""


class CSRFRefused(APIError):
    """A session without the CSRF token or a same-origin C{Origin}."""


class WebhookForbidden(APIError):
    """A webhook's signature is missing or wrong."""


class RequestReplayed(APIError):
    """A signed payload or delivery id that was accepted already."""


class RequestExpired(APIError):
    """A signed payload whose C{_karajo_epoch} is too far from now."""


class BodyTooLarge(APIError):
    """A body larger than its route accepts (the login's small cap)."""


class ReplayMemoryFull(APIError):
    """The replay guard has no room to remember one more signed request."""


class JobNotRunning(APIError):
    """Cancel of a job that has no run to cancel."""


#: exception type -> (HTTP status, ERR_ name); looked up along the MRO.
ERRORS: dict[type, tuple[int, str]] = {
    InvalidJobID: (400, "ERR_INVALID_JOB_ID"),
    InvalidParameter: (400, "ERR_INVALID_PARAMETER"),
    InvalidEpoch: (400, "ERR_INVALID_PARAMETER"),
    LoginFailed: (400, "ERR_AUTH_LOGIN"),
    Unauthorized: (401, "ERR_UNAUTHORIZED"),
    WebhookForbidden: (403, "ERR_JOB_FORBIDDEN"),
    CSRFRefused: (403, "ERR_CSRF"),
    TokenScope: (403, "ERR_TOKEN_SCOPE"),
    RequestReplayed: (403, "ERR_REQUEST_REPLAYED"),
    RequestExpired: (403, "ERR_REQUEST_EXPIRED"),
    JobNotFound: (404, "ERR_JOB_NOT_FOUND"),
    LogNotFound: (404, "ERR_LOG_NOT_FOUND"),
    NotFound: (404, "ERR_NOT_FOUND"),
    MethodNotAllowed: (405, "ERR_METHOD_NOT_ALLOWED"),
    JobNotRunning: (409, "ERR_JOB_NOT_RUNNING"),
    BodyTooLarge: (413, "ERR_BODY_TOO_LARGE"),
    JobPaused: (412, "ERR_JOB_PAUSED"),
    JobBusy: (429, "ERR_JOB_ALREADY_RUN"),
    LoginThrottled: (429, "ERR_AUTH_THROTTLED"),
    ServerStopping: (503, "ERR_SERVER_STOPPING"),
    ServerStarting: (503, "ERR_SERVER_STARTING"),
    ReplayMemoryFull: (503, "ERR_REPLAY_MEMORY_FULL"),
    ClusterUnavailable: (503, "ERR_CLUSTER_UNAVAILABLE"),
}

#: Seconds a client is asked to wait (C{Retry-After}) after a 503
#: C{ERR_CLUSTER_UNAVAILABLE}: about two heartbeats of a node.
CLUSTER_RETRY_AFTER = 5

#: Fixed messages for exceptions whose text is not ours to send.
_MESSAGES: dict[type, str] = {
    LoginFailed: "invalid name or password",
    LoginThrottled: "too many failed logins; try again later",
    NotFound: "no such API endpoint",
    MethodNotAllowed: "method not allowed on this endpoint",
}

_INTERNAL = (500, "ERR_INTERNAL", "internal server error")


def describe(exc: BaseException) -> tuple[int, str, str, list[tuple[bytes, bytes]]]:
    """
    The status, C{ERR_} name, message and extra headers of an exception;
    C{500 ERR_INTERNAL} for anything L{ERRORS} does not know.
    """
    for cls in type(exc).__mro__:
        entry = ERRORS.get(cls)
        if entry is None:
            continue
        status, name = entry
        message = _MESSAGES.get(cls)
        if message is None:
            message = str(exc)[:200] or name
        headers: list[tuple[bytes, bytes]] = []
        if isinstance(exc, LoginThrottled):
            retry = getattr(exc, "retry_after", None) or 1
            try:
                retry = max(1, int(-(-float(retry) // 1)))
            except (TypeError, ValueError, OverflowError):
                retry = 60
            headers.append((b"retry-after", b"%d" % retry))
        elif isinstance(exc, ClusterUnavailable):
            headers.append((b"retry-after", b"%d" % CLUSTER_RETRY_AFTER))
        elif isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            headers.append((b"allow", ", ".join(sorted(exc.valid_methods)).encode("ascii")))
        return status, name, message, headers
    if isinstance(exc, HTTPException) and exc.code and 400 <= exc.code < 500:
        return exc.code, "ERR_HTTP", exc.name or "request error", []
    status, name, message = _INTERNAL
    return status, name, message, []


def error(
    request: Any,
    code: int,
    name: str,
    message: str,
    data: Any = None,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> bytes:
    """
    The JSON error writer: set the status and headers of an error on a
    Twisted request and return its body, for the caller to return or write.
    """
    set_json_headers(request, code)
    for header, value in headers:
        request.setHeader(header, value)
    if data is None:
        return _error_body(code, message, name)
    return envelope(code, message, data, name)


@functools.lru_cache(maxsize=1024)
def _error_body(code: int, message: str, name: str) -> bytes:
    """
    An error's body without data, encoded once: refusals (a forged
    signature's 403, a busy job's 429) come by the thousand a second with a
    few messages (fixed strings, or naming a job); the cache is bounded.
    """
    return envelope(code, message, None, name)


def error_response(code: int, reason: bytes, name: str, message: str) -> bytes:
    """
    A whole HTTP/1.1 error response, for answers written straight to a
    connection before any request object exists (the body cap, requests
    Twisted's parser refuses); the connection is closed after it.
    """
    body = envelope(code, message, None, name)
    head = b"HTTP/1.1 %d %s\r\n" % (code, reason)
    for header, value in JSON_HEADERS:
        head += header + b": " + value + b"\r\n"
    return head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
