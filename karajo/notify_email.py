"""
What an e-mail notification is on the wire: the message (subject, headers,
the run's log capped for a mail) and the ESMTP client that sends it
(L{karajo.notify} queues, retries and routes; this module only builds and
speaks).  Mail goes through L{twisted.mail.smtp}'s ESMTP client with its
session transcript off, so the AUTH exchange never reaches a log.
"""

from __future__ import annotations

import datetime
import email.policy
import email.utils
from email.message import EmailMessage
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from karajo.model import Notif
from karajo.twisted_private import reactor_bound_late

# twisted.mail.smtp binds the global reactor when imported (installing the
# default one): deferred, so that importing karajo leaves the choice to the
# entry point.
with reactor_bound_late():
    from twisted.mail import smtp

__all__ = ["build_message", "cap_body", "SenderFactory"]


def cap_body(log_bytes: bytes, max_body: int) -> str:
    """
    The log as mail text, at most about C{max_body} bytes of it.

    A longer log keeps its beginning and its end (where a failed run says
    what went wrong), cut at line boundaries where possible, with the note
    C{... (log cut: N bytes more; see the dashboard)} where the middle was
    left out.  Bytes that are not UTF-8 are replaced, never an error.
    """
    if len(log_bytes) <= max_body:
        return log_bytes.decode("utf-8", "replace")
    half = max(max_body // 2, 0)
    head = log_bytes[:half]
    newline = head.rfind(b"\n")
    if newline >= 0:
        head = head[: newline + 1]
    tail = log_bytes[len(log_bytes) - half:] if half else b""
    newline = tail.find(b"\n")
    if 0 <= newline < len(tail) - 1:
        tail = tail[newline + 1:]
    cut = len(log_bytes) - len(head) - len(tail)
    note = f"... (log cut: {cut} bytes more; see the dashboard)\n"
    if head and not head.endswith(b"\n"):
        note = "\n" + note
    return head.decode("utf-8", "replace") + note + tail.decode("utf-8", "replace")


def build_message(
    notif: Notif,
    subject: str,
    body: str,
    clock_seconds: float,
    message_id_domain: str,
) -> bytes:
    """
    An RFC 5322 message (CRLF line ends) with Date, Message-ID, From, To,
    Subject, MIME-Version, C{text/plain; charset=utf-8} and
    C{Auto-Submitted: auto-generated} (RFC 3834: no auto-replies to it).

    The body goes as C{8bit} when it is ASCII with lines of at most 998
    bytes, else as C{quoted-printable}: the Twisted client does not
    negotiate 8BITMIME, so raw non-ASCII bytes are never sent.
    """
    msg = EmailMessage(policy=email.policy.SMTP)
    when = datetime.datetime.fromtimestamp(clock_seconds, datetime.UTC)
    msg["Date"] = email.utils.format_datetime(when)
    msg["Message-ID"] = email.utils.make_msgid("karajo", domain=message_id_domain)
    msg["From"] = notif.sender
    msg["To"] = ", ".join(notif.to)
    msg["Subject"] = subject
    msg["Auto-Submitted"] = "auto-generated"
    if not body.endswith("\n"):
        body += "\n"
    plain = body.isascii() and all(len(line) <= 998 for line in body.splitlines())
    msg.set_content(body, charset="utf-8", cte="8bit" if plain else "quoted-printable")
    return msg.as_bytes()


class _Sender(smtp.ESMTPSender):
    """
    L{ESMTPSender} with the fixes a daemon needs:

      - no session transcript (C{debug}): it would record the AUTH
        exchange, and it ends up in the text of every error;
      - dot-stuffing also for a line that starts a new file chunk (the
        stock C{transformChunk} only sees C{\\n.} inside one chunk);
      - the idle timeout runs on the injected reactor;
      - an error after the outcome was reported (say the server does not
        answer QUIT) only closes the connection: the stock code would fire
        the factory's spent Deferred a second time.
    """

    debug = False
    _at_line_start = True

    def sendError(self, exc: Exception) -> None:
        if self.factory.sendFinished:
            smtp.SMTPClient.sendError(self, exc)
        else:
            super().sendError(exc)

    def transformChunk(self, chunk: bytes) -> bytes:
        out = super().transformChunk(chunk)
        if self._at_line_start and out.startswith(b"."):
            out = b"." + out
        if chunk:
            self._at_line_start = chunk.endswith(b"\n")
        return out


class SenderFactory(smtp.ESMTPSenderFactory):
    """
    One attempt, no retries of its own (the queue retries), and a
    C{closed} Deferred that fires once the connection is gone, so an
    attempt counts as over only when it holds no socket any more.
    """

    protocol = _Sender
    noisy = False

    def __init__(self, reactor: Any, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._reactor = reactor
        self.closed: defer.Deferred[None] = defer.Deferred()

    def buildProtocol(self, addr: Any) -> _Sender:
        p = super().buildProtocol(addr)
        p.callLater = self._reactor.callLater
        return p

    def clientConnectionFailed(self, connector: Any, err: Failure) -> None:
        try:
            super().clientConnectionFailed(connector, err)
        finally:
            self._closed()

    def clientConnectionLost(self, connector: Any, err: Failure) -> None:
        try:
            super().clientConnectionLost(connector, err)
        finally:
            self._closed()

    def _closed(self) -> None:
        if not self.closed.called:
            self.closed.callback(None)
