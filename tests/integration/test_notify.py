"""
Tests for L{karajo.notify}: e-mail notifications, against real ESMTP servers
(Twisted's own server classes) listening on loopback with a certificate made
for the test run.
"""

from __future__ import annotations

import base64
import datetime
import email
import email.policy
import ipaddress
import socket
import time
from typing import Any

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.cred import checkers, credentials, portal
from twisted.internet import defer, reactor, ssl, task
from twisted.logger import formatEvent, globalLogPublisher
from twisted.mail import smtp
from twisted.mail._cred import LOGINCredentials, PLAINCredentials
from twisted.trial import unittest
from zope.interface import implementer

from karajo.joblog import LogName, RunRecord
from karajo.model import Job, JobHttp, Notif
from karajo.notify import Notifier
from karajo.notify_email import _Sender, build_message, cap_body
from karajo.validators import NotifConfigError, check_notif, parse_smtp_server

# --- certificates ----------------------------------------------------------


@attrs.frozen
class _Certs:
    ca_pem: bytes
    server_pem: bytes  # key + certificate


def _make_certs() -> _Certs:
    """A CA and a server certificate for localhost/127.0.0.1, signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "karajo test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return _Certs(
        ca_pem=ca.public_bytes(serialization.Encoding.PEM),
        server_pem=key_pem + cert.public_bytes(serialization.Encoding.PEM),
    )


_certs: _Certs | None = None


def certs() -> _Certs:
    global _certs
    if _certs is None:
        _certs = _make_certs()
    return _certs


def trust_test_ca(notif: Notif) -> Any:
    """A C{context_factory_for} that trusts the test CA (and verifies)."""
    host = parse_smtp_server(notif.smtp_server)[1]
    return ssl.optionsForClientTLS(host, trustRoot=ssl.Certificate.loadPEM(certs().ca_pem))


def parse(data: bytes) -> email.message.EmailMessage:
    """A message on the wire (CRLF) as Python sees one read from a file (LF)."""
    return email.message_from_bytes(data.replace(b"\r\n", b"\n"), policy=email.policy.default)


# --- an ESMTP server ------------------------------------------------------


@attrs.define
class Received:
    """One message as the server stored it for one recipient."""

    sender: str
    recipient: str
    data: bytes

    def parsed(self) -> email.message.EmailMessage:
        return parse(self.data)


@implementer(smtp.IMessage)
class _Message:
    def __init__(self, server: SMTPServer, sender: str, recipient: str) -> None:
        self.server, self.sender, self.recipient = server, sender, recipient
        self.lines: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)

    def eomReceived(self) -> defer.Deferred:
        self.server.messages.append(
            Received(self.sender, self.recipient, b"\r\n".join(self.lines) + b"\r\n")
        )
        return defer.succeed(None)

    def connectionLost(self) -> None:
        pass


@implementer(smtp.IMessageDelivery)
class _Delivery:
    def __init__(self, server: SMTPServer) -> None:
        self.server = server
        self.origin = ""

    def receivedHeader(self, helo: Any, origin: Any, recipients: Any) -> None:
        return None

    def validateFrom(self, helo: Any, origin: smtp.Address) -> smtp.Address:
        self.origin = str(origin)
        return origin

    def validateTo(self, user: smtp.User) -> Any:
        return lambda: _Message(self.server, self.origin, str(user.dest))


@implementer(portal.IRealm)
class _Realm:
    def __init__(self, server: SMTPServer) -> None:
        self.server = server

    def requestAvatar(self, avatar_id: Any, mind: Any, *interfaces: Any) -> Any:
        if smtp.IMessageDelivery in interfaces:
            return smtp.IMessageDelivery, _Delivery(self.server), lambda: None
        raise NotImplementedError()


class _ESMTP(smtp.ESMTP):
    """Answers 451 to MAIL FROM while the server's C{fail_first} lasts."""

    def do_MAIL(self, rest: bytes) -> None:
        if self.factory.server.fail_first > 0:
            self.factory.server.fail_first -= 1
            self.sendCode(451, b"Try again later")
            return
        super().do_MAIL(rest)

    def connectionMade(self) -> None:
        super().connectionMade()
        self.factory.server.connections += 1
        self.factory.server.open.add(self)

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        server = self.factory.server
        server.open.discard(self)
        if not server.open:
            waiters, server.idle = server.idle, []
            for d in waiters:
                d.callback(None)


MECHANISMS = {
    b"CRAM-MD5": credentials.CramMD5Credentials,
    b"LOGIN": LOGINCredentials,
    b"PLAIN": PLAINCredentials,
}


class _Factory(smtp.SMTPFactory):
    noisy = False

    def __init__(self, server: SMTPServer) -> None:
        super().__init__(server.portal)
        self.server = server
        self.domain = b"localhost"

    def buildProtocol(self, addr: Any) -> _ESMTP:
        chal = {}
        if self.server.users:
            chal = {mech: MECHANISMS[mech] for mech in self.server.mechanisms}
        p = _ESMTP(chal, self.server.starttls_ctx)
        p.factory = self
        p.portal = self.portal
        p.host = self.domain
        return p


class SMTPServer:
    """
    An ESMTP server on 127.0.0.1 for one test.

    @param mode: C{"smtps"} (implicit TLS), C{"starttls"}, or C{"plain"}
        (no TLS at all).
    @param users: C{{name: password}}; when given, AUTH is required.
    @param mechanisms: the AUTH mechanisms offered.
    @param fail_first: how many MAIL FROM commands get a 451 first.
    """

    def __init__(
        self,
        mode: str,
        users: dict[bytes, bytes] | None = None,
        fail_first: int = 0,
        mechanisms: tuple[bytes, ...] = tuple(MECHANISMS),
    ):
        self.mode = mode
        self.users = users or {}
        self.mechanisms = mechanisms
        self.fail_first = fail_first
        self.messages: list[Received] = []
        self.connections = 0
        self.open: set[_ESMTP] = set()
        self.idle: list[defer.Deferred] = []
        server_ctx = ssl.PrivateCertificate.loadPEM(certs().server_pem).options()
        self.starttls_ctx = server_ctx if mode == "starttls" else None
        p = portal.Portal(_Realm(self))
        if self.users:
            p.registerChecker(checkers.InMemoryUsernamePasswordDatabaseDontUse(**{
                k.decode(): v for k, v in self.users.items()
            }))
        else:
            p.registerChecker(checkers.AllowAnonymousAccess())
        self.portal = p
        factory = _Factory(self)
        if mode == "smtps":
            self.port = reactor.listenSSL(0, factory, server_ctx, interface="127.0.0.1")
        else:
            self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")

    def url(self, host: str = "localhost") -> str:
        scheme = "smtps" if self.mode == "smtps" else "smtp+starttls"
        return f"{scheme}://{host}:{self.port.getHost().port}"

    def close(self) -> defer.Deferred:
        """Stop listening and wait until every connection is closed."""
        d = defer.maybeDeferred(self.port.stopListening)
        if self.open:
            idle: defer.Deferred = defer.Deferred()
            self.idle.append(idle)
            d.addCallback(lambda _: idle)
        return d


# --- helpers ----------------------------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@attrs.define
class FakeStore:
    """A LogStore stand-in that holds one log per counter."""

    logs: dict[int, tuple[LogName, bytes]] = attrs.field(factory=dict)

    def read_in_thread(self, counter: int) -> defer.Deferred:
        return defer.succeed(self.logs.get(counter))


@attrs.define
class FakeRunner:
    job: Any
    store: FakeStore


def send(n: Notifier, notif: Any, subject: str, body: str) -> defer.Deferred:
    """One delivery attempt of a new message, without the queue."""
    return defer.maybeDeferred(n._deliver, notif, n._build(notif, subject, body))


def drained(n: Notifier, timeout: float = 5.0) -> defer.Deferred:
    """Fires once no mail of C{n} is being read, queued, sent or to be retried."""
    return wait_until(lambda: n.outstanding == 0, timeout)


def record_of(name: LogName) -> RunRecord:
    """The finished run record of a log name."""
    return RunRecord(name.job_id, name.counter, name.status, 1.0, 2.0)


def wait_until(predicate: Any, timeout: float = 5.0) -> defer.Deferred:
    """Poll C{predicate} on the real reactor until true (or fail)."""
    deadline = time.monotonic() + timeout

    def poll() -> None:
        if predicate():
            loop.stop()
        elif time.monotonic() > deadline:
            loop.stop()
            raise AssertionError("condition not met in time")

    loop = task.LoopingCall(poll)
    return loop.start(0.01)


PASSWORD = "s3cret-Pa55word"


class NotifyTestCase(unittest.TestCase):
    """Common set-up: servers, notifiers and captured log events."""

    timeout = 20

    def setUp(self) -> None:
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def server(self, mode: str, **kw: Any) -> SMTPServer:
        server = SMTPServer(mode, **kw)
        self.addCleanup(server.close)
        return server

    def notifier(self, notifs: dict[str, Notif] | None = None, **kw: Any) -> Notifier:
        kw.setdefault("context_factory_for", trust_test_ca)
        kw.setdefault("first_delay", 0.05)
        kw.setdefault("timeout", 5.0)
        n = Notifier(notifs or {}, reactor, **kw)
        self.addCleanup(n.stop)
        return n

    def notif(self, url: str, name: str = "ops", **kw: Any) -> Notif:
        kw.setdefault("sender", "karajo <karajo@example.org>")
        kw.setdefault("to", ("ops@example.org",))
        return Notif(name=name, smtp_server=url, **kw)

    def logged(self) -> list[str]:
        """Every captured event, formatted, plus its raw fields."""
        return [formatEvent(e) + " " + repr(e) for e in self.events]


# --- the tests --------------------------------------------------------------


class MessageTests(unittest.TestCase):
    """Building the message and the body, without a server."""

    def test_build_message_headers(self) -> None:
        """The message has Date, Message-ID, From, To, Subject and UTF-8 MIME headers."""
        notif = Notif(name="n", smtp_server="smtps://h", sender="K <k@example.org>",
                      to=("a@example.org", "b@example.org"))
        raw = build_message(notif, "[karajo] job x #3: failed", "héllo\nworld\n",
                            86400.0, "example.org")
        self.assertIn(b"\r\n", raw)
        msg = parse(raw)
        self.assertEqual(msg["Date"], "Fri, 02 Jan 1970 00:00:00 +0000")
        self.assertTrue(msg["Message-ID"].endswith("@example.org>"))
        self.assertEqual(msg["From"], "K <k@example.org>")
        self.assertEqual(msg["To"], "a@example.org, b@example.org")
        self.assertEqual(msg["Subject"], "[karajo] job x #3: failed")
        self.assertEqual(msg["MIME-Version"], "1.0")
        self.assertEqual(msg.get_content_type(), "text/plain")
        self.assertEqual(msg.get_content_charset(), "utf-8")
        self.assertEqual(msg["Content-Transfer-Encoding"], "quoted-printable")
        self.assertEqual(msg.get_content(), "héllo\nworld\n")

    def test_ascii_body_is_8bit(self) -> None:
        """A plain ASCII body with short lines goes as 8bit, unchanged."""
        notif = Notif(name="n", smtp_server="smtps://h", sender="k@example.org", to=("a@b.org",))
        raw = build_message(notif, "s", "plain\n", 0.0, "example.org")
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        self.assertEqual(msg["Content-Transfer-Encoding"], "8bit")
        self.assertTrue(raw.endswith(b"\r\n\r\nplain\r\n"))

    def test_cap_body_note(self) -> None:
        """A log over max_body keeps its head and tail with a note saying how much was cut."""
        lines = b"".join(b"line %03d\n" % i for i in range(100))  # 900 bytes
        body = cap_body(lines, 200)
        self.assertTrue(body.startswith("line 000\n"))
        self.assertTrue(body.endswith("line 099\n"))
        kept = body.split("... (log cut: ")[0] + body.split("see the dashboard)\n")[1]
        cut = len(lines) - len(kept.encode())
        self.assertIn(f"... (log cut: {cut} bytes more; see the dashboard)\n", body)
        self.assertLessEqual(len(kept.encode()), 200)
        self.assertEqual(cap_body(lines, 900), lines.decode())

    def test_cap_body_bad_utf8(self) -> None:
        """Bytes that are not UTF-8 are replaced, not an error."""
        self.assertEqual(cap_body(b"a\xffb\n", 100), "a\ufffdb\n")

    def test_config_checks(self) -> None:
        """A notif that cannot work is refused when the Notifier is built."""
        good = Notif(name="n", smtp_server="smtp+starttls://mail.example.org",
                     sender="k@example.org", to=("a@example.org",))
        check_notif(good)
        self.assertEqual(parse_smtp_server(good.smtp_server), ("smtp+starttls", "mail.example.org", 587))
        self.assertEqual(parse_smtp_server("smtps://[::1]"), ("smtps", "::1", 465))
        bad = [
            attrs.evolve(good, smtp_server="smtp://mail.example.org"),
            attrs.evolve(good, smtp_server="smtps://"),
            attrs.evolve(good, smtp_server="smtps://u:p@mail.example.org"),
            attrs.evolve(good, smtp_server="smtps://mail.example.org:99999"),
            attrs.evolve(good, kind="slack"),
            attrs.evolve(good, sender=""),
            attrs.evolve(good, to=()),
            attrs.evolve(good, to=("not an address",)),
            attrs.evolve(good, sender="k@example.org\r\nBcc: x@y.z"),
        ]
        for notif in bad:
            self.assertRaises(NotifConfigError, Notifier, {"n": notif}, reactor)


class DeliveryTests(NotifyTestCase):
    """Delivery over implicit TLS and STARTTLS, with and without AUTH."""

    @defer.inlineCallbacks
    def test_implicit_tls(self) -> Any:
        """smtps:// delivers one mail with the right headers and body."""
        server = self.server("smtps")
        notif = self.notif(server.url(), to=("ops@example.org", "Dev <dev@example.org>"))
        n = self.notifier({"ops": notif})
        yield send(n, notif, "[karajo] job hello-world #27: failed", "line 1\n.line 2\n")
        self.assertEqual(sorted(m.recipient for m in server.messages),
                         ["dev@example.org", "ops@example.org"])
        got = server.messages[0]
        self.assertEqual(got.sender, "karajo@example.org")
        msg = got.parsed()
        self.assertEqual(msg["Subject"], "[karajo] job hello-world #27: failed")
        self.assertEqual(msg["From"], "karajo <karajo@example.org>")
        self.assertEqual(msg["To"], "ops@example.org, Dev <dev@example.org>")
        self.assertIsNotNone(msg["Date"])
        self.assertRegex(msg["Message-ID"], r"^<.+@example\.org>$")
        self.assertEqual(msg.get_content(), "line 1\n.line 2\n")

    @defer.inlineCallbacks
    def test_starttls(self) -> Any:
        """smtp+starttls:// upgrades the connection and delivers."""
        server = self.server("starttls")
        notif = self.notif(server.url())
        n = self.notifier({"ops": notif})
        yield send(n, notif, "subject", "body\n")
        self.assertEqual(len(server.messages), 1)
        self.assertEqual(server.messages[0].parsed().get_content(), "body\n")

    @defer.inlineCallbacks
    def test_no_starttls_refused(self) -> Any:
        """A server that offers no STARTTLS gets no mail: no plaintext fallback, given up at once."""
        server = self.server("plain")
        notif = self.notif(server.url())
        n = self.notifier({"ops": notif}, retry_for=10.0)
        n.enqueue(notif, "subject", "body\n")
        yield drained(n)
        self.assertEqual(n.failures, 1)
        self.assertEqual(server.messages, [])
        self.assertEqual(server.connections, 1)
        yield self.assertFailure(send(n, notif, "s", "b"), smtp.TLSRequiredError)

    @defer.inlineCallbacks
    def test_auth_accepted(self) -> Any:
        """AUTH with the right user and password delivers, with each mechanism."""
        for mech in MECHANISMS:
            server = self.server("starttls", users={b"karajo": PASSWORD.encode()},
                                 mechanisms=(mech,))
            notif = self.notif(server.url(), smtp_user="karajo", smtp_password=PASSWORD)
            n = self.notifier({"ops": notif})
            yield send(n, notif, "subject", "body\n")
            self.assertEqual(len(server.messages), 1, mech)

    @defer.inlineCallbacks
    def test_auth_required_not_anonymous(self) -> Any:
        """The test server itself refuses a mail without AUTH (so AUTH tests mean something)."""
        server = self.server("smtps", users={b"karajo": PASSWORD.encode()})
        n = self.notifier({})
        yield self.assertFailure(send(n, self.notif(server.url()), "s", "b"), smtp.SMTPDeliveryError)
        self.assertEqual(server.messages, [])

    @defer.inlineCallbacks
    def test_auth_rejected(self) -> Any:
        """A wrong password is given up at once, counted, and never logged (any mechanism)."""
        encoded = base64.b64encode(PASSWORD.encode()).decode()
        for mech in MECHANISMS:
            del self.events[:]
            server = self.server("smtps", users={b"karajo": b"the-right-one"}, mechanisms=(mech,))
            notif = self.notif(server.url(), smtp_user="karajo", smtp_password=PASSWORD)
            n = self.notifier({"ops": notif}, retry_for=10.0)
            n.enqueue(notif, "subject", "body\n")
            yield drained(n)
            self.assertEqual(n.failures, 1, mech)
            self.assertEqual(server.messages, [])
            self.assertEqual(server.connections, 1)
            logged = self.logged()
            self.assertTrue(any("Gave up" in text and "535" in text for text in logged), logged)
            for text in logged:
                self.assertNotIn(PASSWORD, text)
                self.assertNotIn(encoded, text)

    @defer.inlineCallbacks
    def test_untrusted_certificate(self) -> Any:
        """A certificate that is not trusted is refused by default; smtp_insecure accepts it."""
        server = self.server("smtps")
        notif = self.notif(server.url())
        n = self.notifier({"ops": notif}, context_factory_for=None, retry_for=10.0)
        n.enqueue(notif, "subject", "body\n")
        yield drained(n)
        self.assertEqual((n.failures, server.messages), (1, []))
        self.assertTrue(any("Gave up" in t and "TLS" in t for t in self.logged()))

        insecure = attrs.evolve(notif, smtp_insecure=True)
        yield send(n, insecure, "subject", "body\n")
        self.assertEqual(len(server.messages), 1)

    @defer.inlineCallbacks
    def test_starttls_untrusted_certificate(self) -> Any:
        """STARTTLS to an untrusted certificate fails too (nothing sent); smtp_insecure accepts it."""
        server = self.server("starttls")
        notif = self.notif(server.url())
        n = self.notifier({"ops": notif}, context_factory_for=None)
        yield self.assertFailure(send(n, notif, "s", "b"), smtp.SMTPConnectError)
        self.assertEqual(server.messages, [])
        yield send(n, attrs.evolve(notif, smtp_insecure=True), "s", "b")
        self.assertEqual(len(server.messages), 1)


class DotStuffingTests(unittest.TestCase):
    """The client's dot-stuffing, across the file chunks it sends."""

    def test_late_error_only_closes(self) -> None:
        """An error after the outcome was reported closes the connection and raises nothing."""
        from twisted.internet.testing import StringTransport

        sender = _Sender(b"u", b"p", None, b"localhost")
        sender.factory = attrs.make_class("F", ["sendFinished"])(True)
        sender.makeConnection(StringTransport())
        sender.sendError(smtp.SMTPTimeoutError(-1, b"timeout"))
        self.assertTrue(sender.transport.disconnecting)

    def test_dot_after_chunk_boundary(self) -> None:
        """A line starting with a dot is stuffed also when it starts a new chunk."""
        sender = _Sender(b"u", b"p", None, b"localhost")
        self.assertEqual(sender.transformChunk(b".a\nb\n"), b"..a\r\nb\r\n")
        self.assertEqual(sender.transformChunk(b".c\n.d"), b"..c\r\n..d")
        self.assertEqual(sender.transformChunk(b".e\n"), b".e\r\n")  # mid-line: no stuffing


class QueueTests(NotifyTestCase):
    """Retries, give-up and routing through L{Notifier.run_finished}."""

    @defer.inlineCallbacks
    def test_retry_after_451(self) -> Any:
        """A 451 on the first attempt is retried, and exactly one mail arrives."""
        server = self.server("smtps", fail_first=1)
        notif = self.notif(server.url())
        n = self.notifier({"ops": notif})
        n.enqueue(notif, "subject", "body\n")
        yield drained(n)
        self.assertEqual(len(server.messages), 1)
        self.assertEqual(server.connections, 2)
        self.assertEqual((n.failures, n.sent), (0, 1))
        self.assertTrue(any("retrying" in t and "451" in t for t in self.logged()))

    @defer.inlineCallbacks
    def test_server_down(self) -> Any:
        """With the server down, run_finished returns at once; retries end in a logged give-up."""
        notif = self.notif(f"smtps://127.0.0.1:{closed_port()}", name="b")
        n = self.notifier({"b": notif}, retry_for=0.5)
        name = LogName(4, "nightly", "failed")
        runner = FakeRunner(Job(name="nightly", notif_on_failed=["b"]),
                            FakeStore({4: (name, b"log\n")}))
        started = time.monotonic()
        n.run_finished(runner, record_of(name))
        self.assertLess(time.monotonic() - started, 0.1)
        self.assertEqual(n.failures, 0)
        yield drained(n)
        self.assertLess(time.monotonic() - started, 1.5)
        self.assertEqual(n.failures, 1)
        retries = [t for t in self.logged() if "retrying" in t]
        self.assertGreaterEqual(len(retries), 2)
        self.assertTrue(any("Gave up" in t and "refused" in t.lower() for t in self.logged()))

    @defer.inlineCallbacks
    def test_routing(self) -> Any:
        """Success goes to notif_on_success only, failed and canceled to notif_on_failed only."""
        server = self.server("smtps")
        notifs = {
            "a": self.notif(server.url(), name="a", to=("a@example.org",)),
            "b": self.notif(server.url(), name="b", to=("b@example.org",)),
        }
        n = self.notifier(notifs)
        ok = LogName(1, "hello_world", "success")
        bad = LogName(2, "hello_world", "failed")
        canceled = LogName(3, "hello_world", "canceled")
        store = FakeStore({
            1: (ok, b"it worked\n"), 2: (bad, b"it broke\n"), 3: (canceled, b"stopped\n"),
        })
        runner = FakeRunner(Job(name="Hello World", notif_on_success=["a"], notif_on_failed=["b"]),
                            store)
        n.run_finished(runner, record_of(ok))
        yield drained(n)
        self.assertEqual([(m.recipient, m.parsed()["Subject"], m.parsed().get_content())
                          for m in server.messages],
                         [("a@example.org", "[karajo] job hello_world #1: success", "it worked\n")])
        del server.messages[:]
        n.run_finished(runner, record_of(bad))
        n.run_finished(runner, record_of(canceled))
        yield drained(n)
        self.assertEqual(sorted((m.recipient, m.parsed()["Subject"]) for m in server.messages), [
            ("b@example.org", "[karajo] job hello_world #2: failed"),
            ("b@example.org", "[karajo] job hello_world #3: canceled"),
        ])

    @defer.inlineCallbacks
    def test_job_http_subject_and_body_cap(self) -> Any:
        """A JobHttp's mail names its kind; a long log is cut with a note."""
        server = self.server("starttls")
        notif = self.notif(server.url(), name="a")
        n = self.notifier({"a": notif}, max_body=100)
        name = LogName(9, "ping", "failed")
        log = b"".join(b"2024-01-01 00:00:00 UTC job_http: ping: line %d\n" % i for i in range(20))
        runner = FakeRunner(JobHttp(name="ping", notif_on_failed=["a"]),
                            FakeStore({9: (name, log)}))
        n.run_finished(runner, record_of(name))
        yield drained(n)
        [got] = server.messages
        msg = got.parsed()
        self.assertEqual(msg["Subject"], "[karajo] job_http ping #9: failed")
        body = msg.get_content()
        self.assertIn("bytes more; see the dashboard)", body)
        self.assertTrue(body.endswith("line 19\n"))

    def test_no_notif_no_work(self) -> None:
        """A job without notifs for the outcome reads no log and queues nothing."""
        n = self.notifier({})

        class Store:
            def read_in_thread(self, counter: int) -> Any:
                raise AssertionError("read")

        runner = FakeRunner(Job(name="x"), Store())  # type: ignore[arg-type]
        n.run_finished(runner, RunRecord("x", 1, "failed"))
        self.assertEqual((n.failures, n.dropped), (0, 0))

    def test_queue_full(self) -> None:
        """A mail that does not fit in the queue is dropped and logged; nothing raises."""
        notif = self.notif(f"smtps://127.0.0.1:{closed_port()}")
        n = self.notifier({"ops": notif}, max_queue=1, retry_for=0.0)
        self.assertTrue(n.enqueue(notif, "first", "b"))
        self.assertFalse(n.enqueue(notif, "second", "b"))
        self.assertEqual(n.dropped, 1)
        self.assertTrue(any("queue full" in t for t in self.logged()))
        # the first attempt is still in flight; let it end before cleanup.
        return drained(n)

    @defer.inlineCallbacks
    def test_stop_cancels_retries(self) -> Any:
        """stop() cancels a waiting retry: the mail is given up and no timer is left."""
        notif = self.notif(f"smtps://127.0.0.1:{closed_port()}")
        n = self.notifier({"ops": notif}, first_delay=30.0, retry_for=60.0)
        n.enqueue(notif, "subject", "b")
        yield wait_until(lambda: n._waiting)
        n.stop()
        yield drained(n)
        self.assertEqual(n.failures, 1)
        self.assertFalse(n.enqueue(notif, "later", "b"))


class RunnerIntegrationTests(NotifyTestCase):
    async def test_failed_run_mails_its_log(self) -> None:
        """A real command run that fails mails its log to notif_on_failed, not notif_on_success."""
        import os as _os

        from karajo.config import Loaded, validate
        from karajo.model import Environment, Job
        from karajo.server import build_service

        failed = self.server("smtps")
        succeeded = self.server("smtps")
        env, warnings = validate(
            Environment(
                dir_base=_os.path.abspath(self.mktemp()),
                secret="s",
                listen_address="127.0.0.1:0",
                notifs={
                    "pager": self.notif(failed.url(), name="pager"),
                    "digest": self.notif(succeeded.url(), name="digest"),
                },
                jobs={
                    "Backup": Job(
                        commands=["echo copying; echo disk full >&2; exit 3"],
                        notif_on_failed=["pager"],
                        notif_on_success=["digest"],
                    )
                },
            )
        )
        notifier = self.notifier(env.notifs)
        service = build_service(Loaded(env, warnings), reactor, notifier=notifier)
        service.removeService(service.getServiceNamed("http"))
        service.startService()
        self.addCleanup(service.stopService)
        await service.when_ready()  # the jobs' state is read off the reactor thread
        runner = service.jobs["backup"].runner
        runner.trigger(None)
        await runner.when_idle()
        await drained(notifier)
        self.assertEqual(len(failed.messages), 1)
        self.assertEqual(succeeded.messages, [])
        mail = failed.messages[0].parsed()
        self.assertEqual(mail["Subject"], "[karajo] job backup #1: failed")
        body = mail.get_content()
        self.assertIn("backup: disk full", body)
        self.assertIn("!!! exit status 3", body)


class ServiceTreeTests(NotifyTestCase):
    def test_stops_with_the_service_tree(self) -> None:
        """The notifier is a child of the server: stopping the server stops its queue."""
        import os as _os

        from karajo.config import Loaded, validate
        from karajo.model import Environment
        from karajo.server import build_service

        notif = self.notif(f"smtps://127.0.0.1:{closed_port()}", name="ops")
        env, warnings = validate(Environment(
            dir_base=_os.path.abspath(self.mktemp()), secret="s",
            listen_address="127.0.0.1:0", notifs={"ops": notif},
            jobs={"x": Job(commands=["true"], notif_on_failed=["ops"])},
        ))
        # Inline "threads": the start completes before startService returns.
        service = build_service(Loaded(env, warnings), reactor,
                                run_in_thread=lambda f, *a: defer.maybeDeferred(f, *a))
        service.removeService(service.getServiceNamed("http"))
        notifier = service.notifier
        assert notifier is not None
        self.assertIs(notifier.parent, service)
        self.assertIn(notifier, service.jobs["x"].runner.listeners)
        service.startService()
        self.assertTrue(notifier.running)
        self.successResultOf(defer.maybeDeferred(service.stopService))
        self.assertFalse(notifier.running)
        self.assertFalse(notifier.enqueue(notif, "after the stop", "b"))
