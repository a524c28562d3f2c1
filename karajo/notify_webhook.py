"""
Webhook notifications (C{[notif] kind = webhook}): what is posted about a
finished run, and one attempt to post it.

The body is one JSON object (docs/configuration.md, "[notif] sections"):
its C{text} is a one-line summary, so a Slack, Mattermost or Rocket.Chat
incoming webhook shows it as a message as is; the other fields are for
receivers of our own.  With a C{secret} the exact body bytes are signed,
hex HMAC-SHA256 in C{X-Karajo-Sign}, as karajo's own webhooks expect.

This module knows nothing of queues: L{karajo.notify.Notifier} holds the
one bounded queue, its retries and its give-ups for mails and webhooks
alike, and asks L{WebhookSender.deliver} for each attempt.  An attempt
fails with L{WebhookFailed}, which says whether it is worth retrying
(a 5xx, 408 or 429 answer, a refused or lost connection, a timeout) or not
(any other answer, a TLS failure).

The URL is never logged in full (an incoming-webhook URL is a credential):
reasons name its scheme, host and port only.
"""

from __future__ import annotations

import datetime
import json
from typing import Any
from urllib.parse import quote, urlsplit

from twisted.internet import defer, error
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http_headers import Headers

from karajo.duration import format_duration
from karajo.httpclients import USER_AGENT, HttpClients
from karajo.model import Notif
from karajo.runrecord import RunRecord
from karajo.signature import DEFAULT_HEADER_SIGN, sign

__all__ = [
    "LOG_TAIL_LINES",
    "WebhookFailed",
    "WebhookSender",
    "log_path",
    "payload",
    "summary",
]

#: Lines of the end of the run's log in C{log_tail}.
LOG_TAIL_LINES = 20
#: ... and at most this many bytes of them (a run may print one huge line).
LOG_TAIL_BYTES = 8 * 1024
#: Of a failed answer's body, this much goes into the reason logged.
_REASON_BODY = 200
#: Answers that say "try again later".
_TEMPORARY_STATUS = frozenset({408, 425, 429})


class WebhookFailed(Exception):
    """One attempt failed; C{temporary} when a later one may succeed."""

    def __init__(self, reason: str, temporary: bool) -> None:
        super().__init__(reason)
        self.temporary = temporary


def _time(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    when = datetime.datetime.fromtimestamp(int(epoch), datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(record: RunRecord) -> float | None:
    if record.started is None or record.ended is None:
        return None
    return round(max(0.0, record.ended - record.started), 3)


def log_path(kind: str, job_id: str, counter: int) -> str:
    """
    The dashboard page of one run's log, relative to the server
    (C{/karajo/app/log?kind=job&id=ID&counter=N}): karajo cannot know the
    name it is reached by (a proxy, a DNS name), so the receiver prefixes
    its own.
    """
    return (f"/karajo/app/log?kind={quote(kind, safe='')}&id={quote(job_id, safe='')}"
            f"&counter={counter}")


def summary(job: Any, record: RunRecord, server_name: str = "karajo") -> str:
    """C{[karajo] job hello-world #27: failed after 3.2s (attempt 2)}, one line."""
    seconds = _duration(record)
    text = f"[{server_name}] {job.kind} {record.job_id} #{record.counter}: {record.status}"
    if seconds is not None:
        text += f" after {format_duration(datetime.timedelta(seconds=seconds))}"
    if record.attempt > 1:
        text += f" (attempt {record.attempt})"
    return " ".join(text.split())


def _tail(log_bytes: bytes | None) -> str:
    if log_bytes is None:
        return ""
    lines = log_bytes.splitlines(keepends=True)[-LOG_TAIL_LINES:]
    tail = b"".join(lines)[-LOG_TAIL_BYTES:]
    return tail.decode("utf-8", "replace")


def payload(job: Any, record: RunRecord, log_bytes: bytes | None, server_name: str = "karajo") -> bytes:
    """
    The JSON body posted about one finished run, as UTF-8 bytes (signed
    and sent exactly as built; retries resend the same bytes).

    @param log_bytes: the run's log, or None when it could not be read
        (then C{log_tail} is empty).
    """
    document = {
        "text": summary(job, record, server_name),
        "job_id": record.job_id,
        "job_name": job.name,
        "kind": str(job.kind),
        "counter": record.counter,
        "status": str(record.status),
        "attempt": record.attempt,
        "started": _time(record.started),
        "ended": _time(record.ended),
        "duration_s": _duration(record),
        "log_tail": _tail(log_bytes),
        "log_url": log_path(str(job.kind), record.job_id, record.counter),
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _where(url: str) -> str:
    """C{https://host:port} of a URL: what a log may say of it."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


class _Drain(Protocol):
    """Reads a response body, keeping its first bytes for the reason."""

    def __init__(self, done: defer.Deferred[bytes]) -> None:
        self._done = done
        self._kept = b""

    def dataReceived(self, data: bytes) -> None:
        if len(self._kept) < _REASON_BODY:
            self._kept += data[: _REASON_BODY - len(self._kept)]

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:  # noqa: B008
        if not self._done.called:
            self._done.callback(self._kept)


def _connection_reason(failure: Failure, where: str) -> str:
    values = [failure.value]
    for reason in getattr(failure.value, "reasons", None) or ():
        if isinstance(reason, Failure):
            values.append(reason.value)
    for value in values:
        if isinstance(value, error.ConnectionRefusedError):
            return f"connection refused by {where}"
        if isinstance(value, error.DNSLookupError):
            return f"DNS lookup failed for {where}"
        if isinstance(value, error.TimeoutError):
            return f"no answer from {where} in time"
        if isinstance(value, error.ConnectError):
            return f"cannot connect to {where}: {type(value).__name__}"
        if isinstance(value, (error.ConnectionLost, error.ConnectionDone, ResponseFailed)):
            return f"connection to {where} lost"
    return f"request to {where} failed: {type(failure.value).__name__}"


def _is_tls(failure: Failure) -> bool:
    values = [failure.value]
    for reason in getattr(failure.value, "reasons", None) or ():
        if isinstance(reason, Failure):
            values.append(reason.value)
    return any((type(v).__module__ or "").startswith(("OpenSSL", "service_identity"))
               for v in values)


class WebhookSender:
    """
    Posts notification bodies: one attempt per L{deliver}, on a fresh
    connection (the clients of L{karajo.httpclients.HttpClients}: TLS verified
    with service-identity unless the notif says C{http_insecure}).

    @param reactor: C{callLater} for the timeout, and the agents' reactor.
    @param timeout: seconds for the whole exchange (connect, send, answer).
    @param clients: the HTTP clients; by default new ones on C{reactor}.
    """

    def __init__(self, reactor: Any, timeout: float = 60.0,
                 clients: HttpClients | None = None) -> None:
        self._reactor = reactor
        self._timeout = timeout
        self._clients = clients if clients is not None else HttpClients(reactor)

    def headers(self, notif: Notif, body: bytes) -> Headers:
        """The request's headers: JSON, the notif's own, the signature last."""
        headers = Headers()
        headers.setRawHeaders(b"Content-Type", [b"application/json"])
        headers.setRawHeaders(b"User-Agent", [USER_AGENT])
        own: dict[bytes, list[bytes]] = {}
        for name, value in notif.http_headers:
            own.setdefault(name.encode("latin-1"), []).append(value.encode("latin-1"))
        for raw_name, values in own.items():
            headers.setRawHeaders(raw_name, values)
        if notif.secret:
            headers.setRawHeaders(DEFAULT_HEADER_SIGN.encode("ascii"),
                                  [sign(notif.secret, body).encode("ascii")])
        return headers

    def deliver(self, notif: Notif, body: bytes) -> defer.Deferred[None]:
        """
        POST C{body} to the notif's URL.  Fires with None on a 2xx answer
        (its body read and dropped), else fails with L{WebhookFailed}.
        """
        where = _where(notif.url)
        client = self._clients.client(notif.http_insecure)
        d: defer.Deferred[Any] = client.request(
            "POST", notif.url, data=body, headers=self.headers(notif, body))
        timed_out: list[bool] = []

        def time_out() -> None:
            timed_out.append(True)
            d.cancel()

        timer = self._reactor.callLater(self._timeout, time_out)

        def answered(response: Any) -> defer.Deferred[None]:
            done: defer.Deferred[bytes] = defer.Deferred()
            # A body cut short still ends the read: the status decides.
            response.deliverBody(_Drain(done))

            def judged(text: bytes) -> None:
                code = response.code
                if 200 <= code < 300:
                    return None
                snippet = " ".join(text.decode("utf-8", "replace").split())[:_REASON_BODY]
                reason = f"{where} answered {code}" + (f": {snippet}" if snippet else "")
                raise WebhookFailed(reason, code >= 500 or code in _TEMPORARY_STATUS)

            return done.addCallback(judged)

        def failed(failure: Failure) -> None:
            failure.trap(Exception)
            if isinstance(failure.value, WebhookFailed):
                failure.raiseException()
            if timed_out:
                raise WebhookFailed(f"no answer from {where} within {self._timeout:g}s", True)
            if _is_tls(failure):
                raise WebhookFailed(f"TLS error with {where}", False)
            raise WebhookFailed(_connection_reason(failure, where), True)

        def stop_timer(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        d.addCallback(answered)
        d.addErrback(failed)
        d.addBoth(stop_timer)
        return d
