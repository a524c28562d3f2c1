"""
Notifications: one mail or webhook post per notif named in a job's
C{notif_on_success} or C{notif_on_failed} after each run
(docs/configuration.md, "[notif] sections").

The queue below (bounded, retries with backoff, give-ups counted) is the
one queue of both kinds: what differs per kind is how the message is built
and how one attempt is made, the mail's here, the webhook's in
L{karajo.notify_webhook}.  The rest of this docstring is about mail.

Everything runs on the reactor through L{twisted.mail.smtp}'s ESMTP client:

  - C{smtps://host[:port]} is implicit TLS (default port 465);
    C{smtp+starttls://host[:port]} is plain TCP that must be upgraded with
    STARTTLS (default port 587).  There is never a plaintext fallback: a
    server that does not offer STARTTLS is a permanent failure.
  - Certificates are verified with service-identity
    (L{optionsForClientTLS}) unless the notif says C{smtp_insecure}.
  - AUTH (CRAM-MD5, LOGIN or PLAIN, whatever the server offers first in
    that order) is required as soon as C{smtp_user} is set.

L{Notifier} is a child service of the server and one of each runner's
listeners (L{karajo.runlistener.RunListener}).  Sending never delays or fails a
run: L{Notifier.run_finished} only queues.
The queue is bounded (a mail that does not fit is dropped and logged).  A
temporary failure (a 4xx reply, connection refused or lost, a timeout, a
DNS failure) is retried with exponential backoff for at most C{retry_for}
seconds after the mail was queued; then, or at once on a permanent failure
(5xx reply, AUTH refused, no STARTTLS, an untrusted certificate), the mail
is given up, logged and counted in L{Notifier.failures}.

The SMTP password never reaches a log event: the client's own session
transcript (which would hold the AUTH exchange) is switched off, failures
are logged as their reply code and text only, and the password is scrubbed
from any text a server sends back.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping
from io import BytesIO
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, ssl
from twisted.internet import error as neterror
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from karajo.joblog import LogName, RunRecord
from karajo.model import Notif
from karajo.notify_email import SenderFactory, build_message, cap_body
from karajo.notify_webhook import WebhookFailed, WebhookSender, payload, summary
from karajo.status import RunStatus
from karajo.twisted_private import reactor_bound_late
from karajo.validators import addr_spec, check_notif, parse_smtp_server

# twisted.mail.smtp binds the global reactor when imported (installing the
# default one): deferred, so that importing karajo leaves the choice to the
# entry point.
with reactor_bound_late():
    from twisted.mail import smtp

log = Logger()

#: What run_finished sends for a run whose log cannot be read.
NO_LOG = "(the log of this run could not be read; see the dashboard)"


def subject_of(job: Any, name: LogName | RunRecord, server_name: str = "karajo") -> str:
    """C{[karajo] job hello-world #27: failed}."""
    return f"[{server_name}] {job.kind} {name.job_id} #{name.counter}: {name.status}"


def _is_tls_error(exc: BaseException | None) -> bool:
    while exc is not None:
        module = type(exc).__module__ or ""
        if module.startswith(("OpenSSL", "service_identity")) or isinstance(exc, smtp.TLSError):
            return True
        exc = exc.__cause__
    return False


_TEMPORARY = (
    neterror.ConnectError,  # refused, timed out, DNS, no route, ...
    neterror.ConnectionLost,
    neterror.ConnectionDone,
    neterror.TimeoutError,
    smtp.SMTPTimeoutError,
)


def is_temporary(failure: Failure) -> bool:
    """
    Whether a failed attempt is worth retrying: a 4xx reply, a connection
    that could not be made or was lost, a timeout.  A 5xx reply, a refused
    AUTH, a missing STARTTLS, a TLS/certificate failure or anything
    unexpected is permanent.
    """
    exc = failure.value
    if isinstance(exc, WebhookFailed):
        return exc.temporary
    if _is_tls_error(exc):
        return False
    if isinstance(exc, _TEMPORARY):
        return True
    if isinstance(exc, smtp.SMTPClientError):
        if 400 <= exc.code < 500:
            return True
        if isinstance(exc, smtp.SMTPDeliveryError) and exc.code < 0:
            # No recipient accepted: temporary when one was refused with 4xx.
            # Twisted types addresses as object; ESMTPSender sets a list
            # of (address, code, response).
            refused = exc.addresses if isinstance(exc.addresses, list | tuple) else ()
            codes = [code for _, code, _ in refused]
            return any(400 <= code < 500 for code in codes)
        if isinstance(exc, smtp.SMTPConnectError) and exc.code < 0:
            return isinstance(exc.__cause__, _TEMPORARY) or exc.__cause__ is None
        return False
    return False


def describe(failure: Failure, password: str = "") -> str:
    """
    A one-line reason for a log: the reply code and text, or the exception's
    type and message; never the session transcript, never C{password}.
    """
    exc = failure.value
    if isinstance(exc, WebhookFailed):
        return str(exc)
    if isinstance(exc, smtp.SMTPClientError):
        resp = exc.resp
        text = resp.decode("utf-8", "replace") if isinstance(resp, bytes) else str(resp)
        text = " ".join(text.split())
        if exc.code > 0:
            text = f"{exc.code:03d} {text}"
        cause = exc.__cause__
        if isinstance(exc, smtp.SMTPConnectError) and cause is not None and _is_tls_error(cause):
            text = f"TLS failed: {type(cause).__name__}: {cause}"
        reason = f"{type(exc).__name__}: {text}"
    else:
        reason = f"{type(exc).__name__}: {exc}"
    if password and password in reason:
        reason = reason.replace(password, "***")
    return reason


class _Mail:
    """One queued mail: the message is built once, so retries resend the
    same Date and Message-ID and a receiver can spot a duplicate."""

    __slots__ = ("notif", "subject", "message", "queued_at", "attempts", "delay", "timer")

    def __init__(self, notif: Notif, subject: str, message: bytes, queued_at: float, delay: float):
        self.notif = notif
        self.subject = subject
        self.message = message
        self.queued_at = queued_at
        self.attempts = 0
        self.delay = delay
        self.timer: IDelayedCall | None = None


class Notifier(Service):
    """
    Sends the mails of finished runs; see the module docstring.  Stopping
    the service is L{stop}.

    @param notifs: every C{[notif]}, by name; each is checked at once.
    @param reactor: provides C{callLater}, C{seconds}, C{connectTCP},
        C{connectSSL}.
    @param max_queue: mails held at most (waiting, being sent or waiting to
        be retried); a further one is dropped and logged.
    @param retry_for: seconds after queueing during which a temporarily
        failing mail is retried.
    @param first_delay: the first retry's delay; each next one doubles, up
        to C{max_delay}.
    @param max_body: bytes of the log put in a mail (see L{cap_body}).
    @param context_factory_for: C{notif -> IOpenSSLClientConnectionCreator
        | None}; a non-None result replaces the default TLS settings (tests
        use it to trust their own CA).
    @param server_name: the C{[karajo] name}, the subject's prefix.
    @param timeout: seconds to connect, and to wait for each server reply.
    @param max_concurrent: attempts in flight at once.
    @param webhook: posts webhook notifs; by default one on C{reactor} with
        C{timeout}, made when a webhook notif exists.

    @raise karajo.validators.NotifConfigError: a notif cannot work as configured.

    @ivar failures: mails given up (after retries, at once when permanent,
        or still unsent at L{stop}); dropped ones are in C{dropped}.
    """

    def __init__(
        self,
        notifs: Mapping[str, Notif],
        reactor: Any,
        *,
        max_queue: int = 1000,
        retry_for: float = 3600.0,
        first_delay: float = 5.0,
        max_body: int = 256 * 1024,
        context_factory_for: Callable[[Notif], Any] | None = None,
        server_name: str = "karajo",
        timeout: float = 60.0,
        max_delay: float = 600.0,
        max_concurrent: int = 4,
        webhook: WebhookSender | None = None,
    ) -> None:
        for notif in notifs.values():
            check_notif(notif)
        self.notifs = dict(notifs)
        self.failures = 0
        self.dropped = 0
        self.sent = 0
        self._reactor = reactor
        self._max_queue = max_queue
        self._retry_for = retry_for
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._max_body = max_body
        self._context_factory_for = context_factory_for
        self._server_name = server_name
        self._timeout = timeout
        self._max_concurrent = max(1, max_concurrent)
        self._pending: collections.deque[_Mail] = collections.deque()
        self._waiting: set[_Mail] = set()
        self._in_flight = 0
        self._reading = 0
        self._stopped = False
        if webhook is None and any(n.kind == "webhook" for n in self.notifs.values()):
            webhook = WebhookSender(reactor, timeout=timeout)
        self._webhook = webhook

    def reconfigure(self, notifs: Mapping[str, Notif], server_name: str) -> None:
        """
        A reload's notifs and server name, for the mails of runs that end
        from now on; mails already queued keep the notif they were made for.
        """
        for notif in notifs.values():
            check_notif(notif)
        self.notifs = dict(notifs)
        self._server_name = server_name

    @property
    def outstanding(self) -> int:
        """Mails on their way: logs being read, mails queued, in flight or to be retried."""
        return self._reading + self._held()

    # --- the listener (karajo.runlistener.RunListener) -----------------------------

    def run_started(self, runner: Any, record: RunRecord) -> None:
        pass

    def run_finished(self, runner: Any, record: RunRecord) -> None:
        """
        After each finished run: queue one mail per notif named for this
        outcome.  C{success} goes to C{notif_on_success}; C{failed} and
        C{canceled} (a run that did not do its work) go to
        C{notif_on_failed}.  A failed run that a retry follows
        (C{runner.retry_pending}) sends nothing: only the last attempt is
        reported.  Returns at once and never raises; the log is
        read off the reactor thread (L{karajo.joblog.LogStore.read_in_thread}).
        """
        try:
            self._on_finished(runner, record)
        except Exception:
            log.failure("Notification of run {counter} of {job} failed",
                        counter=getattr(record, "counter", None),
                        job=getattr(record, "job_id", None))

    def _on_finished(self, runner: Any, name: RunRecord) -> None:
        if getattr(runner, "retry_pending", False):
            return
        job = runner.job
        names = job.notif_on_success if name.status == RunStatus.SUCCESS else job.notif_on_failed
        if not names:
            return
        if self._stopped:
            log.warn(
                "Not mailing run {counter} of {kind} {job}: notifications are stopped",
                counter=name.counter, kind=job.kind, job=name.job_id,
            )
            return
        d = runner.store.read_in_thread(name.counter)
        self._reading += 1

        def read(found: Any) -> None:
            self._reading -= 1
            if found is None:
                log.warn("Log of run {counter} of {job} not found; mailing without it",
                         counter=name.counter, job=name.job_id)
                self._enqueue_all(job, name, tuple(names), None)
            else:
                self._enqueue_all(job, name, tuple(names), found[1])

        def unreadable(f: Failure) -> None:
            self._reading -= 1
            log.failure("Reading log of run {counter} of {job} failed", f,
                        counter=name.counter, job=name.job_id)
            self._enqueue_all(job, name, tuple(names), None)

        d.addCallbacks(read, unreadable)
        d.addErrback(lambda f: log.failure("Queueing mails of {job} failed", f, job=name.job_id))

    def _enqueue_all(
        self, job: Any, name: RunRecord, names: tuple[str, ...], log_bytes: bytes | None
    ) -> None:
        """Each notif's message, built once per kind (every webhook posts the same bytes)."""
        subject = subject_of(job, name, self._server_name)
        body: str | None = None
        posted: bytes | None = None
        for notif_name in dict.fromkeys(names):
            notif = self.notifs.get(notif_name)
            if notif is None:
                log.error("{kind} {job} names notif {notif}, which does not exist",
                          kind=job.kind, job=name.job_id, notif=notif_name)
                continue
            if notif.kind == "webhook":
                if posted is None:
                    posted = payload(job, name, log_bytes, self._server_name)
                self._enqueue(notif, summary(job, name, self._server_name), posted)
                continue
            if body is None:
                body = NO_LOG if log_bytes is None else cap_body(log_bytes, self._max_body)
            self.enqueue(notif, subject, body)

    # --- the queue ---------------------------------------------------------

    def enqueue(self, notif: Notif, subject: str, body: str) -> bool:
        """
        Queue one mail; C{False} when it was dropped (queue full, stopped,
        or the message cannot be built).
        """
        try:
            message = self._build(notif, subject, body)
        except Exception:
            log.failure("Building mail to notif {notif} failed", notif=notif.name)
            self.dropped += 1
            return False
        return self._enqueue(notif, subject, message)

    def _enqueue(self, notif: Notif, subject: str, message: bytes) -> bool:
        """Queue one built message (a mail, or a webhook's body) for C{notif}."""
        if self._stopped:
            log.warn("Dropped mail to notif {notif} ({subject}): notifications are stopped",
                     notif=notif.name, subject=subject)
            self.dropped += 1
            return False
        if self._held() >= self._max_queue:
            log.error(
                "Mail queue full ({max_queue} mails); dropped mail to notif {notif}: {subject}",
                max_queue=self._max_queue, notif=notif.name, subject=subject,
            )
            self.dropped += 1
            return False
        self._pending.append(_Mail(notif, subject, message, self._reactor.seconds(), self._first_delay))
        self._pump()
        return True

    def _held(self) -> int:
        return len(self._pending) + len(self._waiting) + self._in_flight

    def _pump(self) -> None:
        while self._pending and self._in_flight < self._max_concurrent and not self._stopped:
            mail = self._pending.popleft()
            mail.attempts += 1
            self._in_flight += 1
            d = defer.maybeDeferred(self._attempt, mail.notif, mail.message)
            d.addBoth(self._attempted, mail)
            d.addErrback(lambda f: log.failure("Mail queue error", f))

    def _attempted(self, result: Any, mail: _Mail) -> None:
        self._in_flight -= 1
        notif = mail.notif
        if not isinstance(result, Failure):
            self.sent += 1
            if notif.kind == "webhook":
                log.info(
                    "Posted notif {notif} ({subject}) after {attempts} attempt(s)",
                    notif=notif.name, subject=mail.subject, attempts=mail.attempts,
                )
            else:
                log.info(
                    "Mailed notif {notif} ({subject}) to {to} after {attempts} attempt(s)",
                    notif=notif.name, subject=mail.subject, to=list(notif.to),
                    attempts=mail.attempts,
                )
        else:
            reason = describe(result, notif.smtp_password)
            now = self._reactor.seconds()
            temporary = is_temporary(result)
            if temporary and not self._stopped and now + mail.delay <= mail.queued_at + self._retry_for:
                log.warn(
                    "{what} to notif {notif} ({subject}) failed, retrying in {delay:.2f}s: {reason}",
                    what="Webhook" if notif.kind == "webhook" else "Mail",
                    notif=notif.name, subject=mail.subject, delay=mail.delay, reason=reason,
                    attempts=mail.attempts,
                )
                mail.timer = self._reactor.callLater(mail.delay, self._retry, mail)
                mail.delay = min(mail.delay * 2, self._max_delay)
                self._waiting.add(mail)
            else:
                self._give_up(mail, reason, "temporary" if temporary else "permanent")
        self._pump()

    def _retry(self, mail: _Mail) -> None:
        mail.timer = None
        self._waiting.discard(mail)
        self._pending.append(mail)
        self._pump()

    def _give_up(self, mail: _Mail, reason: str, kind: str) -> None:
        self.failures += 1
        log.error(
            "Gave up {doing} notif {notif} ({subject}) after {attempts} attempt(s): {reason}",
            doing="posting to" if mail.notif.kind == "webhook" else "mailing",
            notif=mail.notif.name, subject=mail.subject, attempts=mail.attempts,
            reason=reason, failure_kind=kind,
        )

    def stopService(self) -> None:
        super().stopService()
        self.stop()

    def stop(self) -> None:
        """
        At shutdown: cancel retries and drop what was not sent yet (each
        logged and counted as given up).  An attempt in flight ends on its
        own and is not retried; later mails are dropped.
        """
        self._stopped = True
        for mail in list(self._waiting):
            if mail.timer is not None and mail.timer.active():
                mail.timer.cancel()
            self._give_up(mail, "karajo is stopping", "shutdown")
        self._waiting.clear()
        while self._pending:
            self._give_up(self._pending.popleft(), "karajo is stopping", "shutdown")

    # --- one attempt -------------------------------------------------------

    def _attempt(self, notif: Notif, message: bytes) -> defer.Deferred[None]:
        """One attempt of the notif's kind."""
        if notif.kind == "webhook":
            if self._webhook is None:
                self._webhook = WebhookSender(self._reactor, timeout=self._timeout)
            return self._webhook.deliver(notif, message)
        return self._deliver(notif, message)

    def _build(self, notif: Notif, subject: str, body: str) -> bytes:
        domain = addr_spec(notif.sender).rpartition("@")[2] or "localhost"
        return build_message(notif, subject, body, self._reactor.seconds(), domain)

    def _context_for(self, notif: Notif, host: str) -> Any:
        if self._context_factory_for is not None:
            creator = self._context_factory_for(notif)
            if creator is not None:
                return creator
        if notif.smtp_insecure:
            return ssl.CertificateOptions(verify=False)
        return ssl.optionsForClientTLS(host)

    def _deliver(self, notif: Notif, message: bytes) -> defer.Deferred[None]:
        """
        One attempt to hand C{message} to the notif's server.  Fires with
        C{None} once the server accepted it for at least one recipient and
        the connection is closed, or fails with the reason.
        """
        scheme, host, port = parse_smtp_server(notif.smtp_server)
        context = self._context_for(notif, host)
        result: defer.Deferred[Any] = defer.Deferred()
        user = notif.smtp_user.encode("utf-8") if notif.smtp_user else None
        secret = notif.smtp_password.encode("utf-8") if notif.smtp_user else None
        factory = SenderFactory(
            self._reactor,
            user,
            secret,
            addr_spec(notif.sender),
            [addr_spec(to) for to in notif.to],
            # Twisted's client turns LF into CRLF itself.
            BytesIO(message.replace(b"\r\n", b"\n")),
            result,
            retries=0,
            timeout=self._timeout,
            contextFactory=context,
            heloFallback=False,
            requireAuthentication=bool(notif.smtp_user),
            requireTransportSecurity=True,
            hostname=host,
        )
        if scheme == "smtps":
            self._reactor.connectSSL(host, port, factory, context, timeout=self._timeout)
        else:
            self._reactor.connectTCP(host, port, factory, timeout=self._timeout)

        def accepted(outcome: Any) -> None:
            _count, addresses = outcome
            refused = [
                (addr.decode("ascii", "replace") if isinstance(addr, bytes) else str(addr), code)
                for addr, code, _resp in addresses
                if code not in smtp.SUCCESS
            ]
            if refused:
                log.warn("Notif {notif}: server refused some recipients: {refused}",
                         notif=notif.name, refused=refused)
            return None

        result.addCallback(accepted)
        # Over only once the socket is gone: wait for the close, keep the outcome.
        both = defer.DeferredList([result, factory.closed], consumeErrors=True)

        def outcome(results: list[tuple[bool, Any]]) -> Any:
            ok, value = results[0]
            return value if not ok else None

        return both.addCallback(outcome)
