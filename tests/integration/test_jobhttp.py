"""
Tests for L{karajo.jobhttp}: the shape of the signed request (in memory,
with treq's testing tools) and real exchanges with loopback servers started
here (plain HTTP, TLS with a self-signed certificate, a server that never
answers, a 500, a closed port).

Signatures are recomputed here with L{hmac} and L{hashlib}, independently of
L{karajo.signature}.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import ipaddress
import json
import time
from datetime import timedelta
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from treq.testing import StubTreq
from twisted.internet import defer, reactor, task
from twisted.internet.error import CannotListenError
from twisted.internet.ssl import PrivateCertificate
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from karajo.errors import RunFailed
from karajo.httpclients import HttpClients
from karajo.jobhttp import (
    JobHttpWork,
    effective_timeout,
    prepare,
    self_base_url,
)
from karajo.joblog import LogStore
from karajo.model import Environment, JobHttp
from karajo.run import JobRunner
from karajo.work import Stopped

EPOCH = 1_767_323_045  # 2026-01-02 03:04:05 UTC
SECRET = "s3cret"


def expected_sign(secret: str, payload: bytes) -> str:
    """The hex HMAC-SHA256 a receiver computes to check a request."""
    return hmac.new(secret.encode("utf-8"), payload, hashlib.sha256).hexdigest()


def sync_thread(f, *args):
    """Run the log store's 'thread' function at once."""
    return defer.maybeDeferred(f, *args)


class Seen:
    """Request headers as text: C{get(name)} is the list of values or None."""

    def __init__(self, headers) -> None:
        self._all = {
            name.decode("latin-1").lower(): [v.decode("latin-1") for v in values]
            for name, values in headers.getAllRawHeaders()
        }

    def get(self, name: str) -> list[str] | None:
        return self._all.get(name.lower())

    def values(self) -> list[str]:
        return [v for values in self._all.values() for v in values]


class Recorder(Resource):
    """
    Records every request (method, raw URI, path, query, headers, body) and
    answers with C{code} and C{body}, plus C{headers}.
    """

    isLeaf = True

    def __init__(self, code: int = 200, body: bytes = b"ok\n", headers=None) -> None:
        super().__init__()
        self.code = code
        self.body = body
        self.headers = headers or {}
        self.requests: list[dict] = []

    def render(self, request):
        uri = request.uri.decode("latin-1")
        parts = urlsplit(uri)
        self.requests.append(
            {
                "method": request.method.decode("ascii"),
                "uri": uri,
                "path": parts.path,
                "query": parts.query,
                "headers": Seen(request.requestHeaders),
                "body": request.content.read(),
            }
        )
        request.setResponseCode(self.code)
        for name, value in self.headers.items():
            request.setHeader(name, value)
        return self.body


class Hang(Resource):
    """Never answers (or answers the headers and part of the body only)."""

    isLeaf = True

    def __init__(self, partial_body: bytes | None = None) -> None:
        super().__init__()
        self.partial_body = partial_body
        self.pending = []

    def render(self, request):
        self.pending.append(request)
        if self.partial_body is not None:
            request.setHeader("Content-Length", str(len(self.partial_body) * 10))
            request.write(self.partial_body)
        return NOT_DONE_YET


class FakeClients:
    """An L{HttpClients} stand-in handing out one L{StubTreq}."""

    def __init__(self, stub: StubTreq) -> None:
        self.stub = stub
        self.insecure: list[bool] = []

    def client(self, insecure: bool):
        self.insecure.append(insecure)
        return self.stub


def self_signed_pem() -> bytes:
    """A fresh key and self-signed certificate for 127.0.0.1 / localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem + cert.public_bytes(serialization.Encoding.PEM)


def job(**kw) -> JobHttp:
    """A JobHttp named C{hook} with C{kw} set."""
    kw.setdefault("name", "hook")
    return JobHttp(**kw)


# --- pure helpers ------------------------------------------------------------


class HelperTests(TestCase):
    """URL of this server and the effective timeout."""

    def test_self_base_url(self) -> None:
        """
        Wildcard and empty hosts go to the loopback address of their family;
        a named host or address is kept; IPv6 is bracketed.
        """
        cases = {
            ":31937": "http://127.0.0.1:31937",
            "0.0.0.0:8080": "http://127.0.0.1:8080",
            "[::]:8080": "http://[::1]:8080",
            "[::1]:9": "http://[::1]:9",
            "127.0.0.2:80": "http://127.0.0.2:80",
            "example.org:1234": "http://example.org:1234",
        }
        for listen, url in cases.items():
            self.assertEqual(self_base_url(listen), url, listen)

    def test_relative_url_is_this_server(self) -> None:
        """A URL starting with C{/} is built from C{listen_address}."""
        env = Environment(listen_address=":31937", secret=SECRET)
        p = prepare(job(http_url="/karajo/api/job_exec/run/x"), env, EPOCH)
        self.assertEqual(
            p.url,
            f"http://127.0.0.1:31937/karajo/api/job_exec/run/x?_karajo_epoch={EPOCH}",
        )

    def test_ipv6_urls(self) -> None:
        """
        An IPv6 listen address (relative URL) or an IPv6 literal in
        http_url is sent as is; a name is still IDNA-encoded.
        """
        env = Environment(listen_address="[::1]:32018", secret=SECRET)
        p = prepare(job(http_url="/karajo/api/environment"), env, EPOCH)
        self.assertEqual(p.url, f"http://[::1]:32018/karajo/api/environment?_karajo_epoch={EPOCH}")
        p = prepare(job(http_url="https://[2001:db8::1]:8443/h\u00e9?x=1"), env, EPOCH)
        self.assertEqual(p.url, f"https://[2001:db8::1]:8443/h%C3%A9?x=1&_karajo_epoch={EPOCH}")
        p = prepare(job(http_url="http://b\u00fccher.example/x"), env, EPOCH)
        self.assertEqual(p.url, f"http://xn--bcher-kva.example/x?_karajo_epoch={EPOCH}")

    def test_effective_timeout(self) -> None:
        """Positive: the job's; zero: the global one; negative: none."""
        env = Environment(http_timeout=timedelta(minutes=5))
        self.assertEqual(
            effective_timeout(job(http_timeout=timedelta(seconds=3)), env),
            timedelta(seconds=3),
        )
        self.assertEqual(effective_timeout(job(), env), timedelta(minutes=5))
        self.assertIsNone(effective_timeout(job(http_timeout=timedelta(seconds=-1)), env))

    def test_bad_url_fails_the_run(self) -> None:
        """A URL that is not http(s) fails the run with a clear message."""
        env = Environment(secret=SECRET)
        with self.assertRaises(RunFailed) as caught:
            prepare(job(http_url="ftp://example.org/x"), env, EPOCH)
        self.assertIn("http_url", caught.exception.message)


# --- in memory -------------------------------------------------------------


class InMemoryTests(TestCase):
    """The request shapes, against treq's in-memory agent and a fake clock."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(EPOCH)
        self.resource = Recorder(
            body=b"hello\nworld\n",
            headers={"Content-Type": "text/plain", "X-Other": "not logged"},
        )
        self.stub = StubTreq(self.resource)
        self.clients = FakeClients(self.stub)
        self.env = Environment(secret=SECRET, listen_address="127.0.0.1:31937")
        self.store = LogStore(
            self.mktemp(), "hook", kind="job_http", clock=self.clock,
            run_in_thread=sync_thread,
        )

    def run_job(self, j: JobHttp, env: Environment | None = None, **kw):
        """
        Run C{j} once; return (exception or None, log text, the request seen).
        """
        work = JobHttpWork(j, env or self.env, self.clock, self.clients, **kw)
        self.runs = getattr(self, "runs", 0) + 1
        log = self.store.begin(self.runs)
        d = work.run(log, 1, None)
        for _ in range(10):
            if d.called:
                break
            self.stub.flush()
        outcome = []
        d.addCallbacks(lambda _: outcome.append(None), lambda f: outcome.append(f.value))
        self.assertEqual(len(outcome), 1, "run did not end")
        self.successResultOf(log.finish("success" if outcome[0] is None else "failed"))
        _, content = self.store.read(self.runs)
        seen = self.resource.requests[-1] if self.resource.requests else None
        return outcome[0], content.decode("utf-8"), seen

    def test_query_get(self) -> None:
        """
        C{query}: C{_karajo_epoch} is appended to the URL's own query, no
        body is sent, and the signature is over the raw query string.
        """
        err, _, seen = self.run_job(
            job(http_url="http://example.org/ping?a=1&b=x%20y")
        )
        self.assertIsNone(err)
        self.assertEqual(seen["method"], "GET")
        self.assertEqual(seen["path"], "/ping")
        self.assertEqual(seen["query"], f"a=1&b=x%20y&_karajo_epoch={EPOCH}")
        self.assertEqual(seen["body"], b"")
        self.assertIsNone(seen["headers"].get("Content-Type"))
        [sig] = seen["headers"].get("X-Karajo-Sign")
        self.assertEqual(sig, expected_sign(SECRET, seen["query"].encode()))

    def test_query_replaces_an_epoch_in_the_url(self) -> None:
        """An C{_karajo_epoch} already in the URL is replaced, not repeated."""
        _, _, seen = self.run_job(
            job(http_url="http://example.org/?_karajo_epoch=5&x=1", http_method="POST")
        )
        self.assertEqual(seen["method"], "POST")
        self.assertEqual(seen["query"], f"x=1&_karajo_epoch={EPOCH}")

    def test_form_post(self) -> None:
        """C{form}: a urlencoded body, its Content-Type, signed body bytes."""
        err, _, seen = self.run_job(
            job(
                http_url="http://example.org/hook?keep=me",
                http_method="POST",
                http_request_type="form",
            )
        )
        self.assertIsNone(err)
        self.assertEqual(seen["method"], "POST")
        self.assertEqual(seen["query"], "keep=me")
        self.assertEqual(seen["body"], f"_karajo_epoch={EPOCH}".encode())
        self.assertEqual(
            seen["headers"].get("Content-Type"),
            ["application/x-www-form-urlencoded"],
        )
        [sig] = seen["headers"].get("X-Karajo-Sign")
        self.assertEqual(sig, expected_sign(SECRET, seen["body"]))

    def test_json_put(self) -> None:
        """C{json}: exactly C{{"_karajo_epoch":N}}, application/json, signed."""
        err, _, seen = self.run_job(
            job(http_url="http://example.org/j", http_method="PUT", http_request_type="json")
        )
        self.assertIsNone(err)
        self.assertEqual(seen["method"], "PUT")
        self.assertEqual(seen["body"], b'{"_karajo_epoch":%d}' % EPOCH)
        self.assertEqual(json.loads(seen["body"]), {"_karajo_epoch": EPOCH})
        self.assertEqual(seen["headers"].get("Content-Type"), ["application/json"])
        [sig] = seen["headers"].get("X-Karajo-Sign")
        self.assertEqual(sig, expected_sign(SECRET, seen["body"]))

    def test_delete(self) -> None:
        """DELETE is sent as configured."""
        _, _, seen = self.run_job(job(http_url="http://example.org/x", http_method="DELETE"))
        self.assertEqual(seen["method"], "DELETE")

    def test_custom_headers_and_job_secret(self) -> None:
        """
        Every C{http_header} is sent (repeated ones too); the job's own
        secret signs, in its own C{header_sign}; the secret appears nowhere
        in the request.
        """
        err, text, seen = self.run_job(
            job(
                http_url="http://example.org/gh",
                http_method="POST",
                http_request_type="json",
                secret="job-secret",
                header_sign="X-Hub-Signature-256",
                http_headers=(("X-One", "1"), ("X-Many", "a"), ("X-Many", "b"),
                              ("Authorization", "Bearer tok")),
            )
        )
        self.assertIsNone(err)
        h = seen["headers"]
        self.assertEqual(h.get("X-One"), ["1"])
        self.assertEqual(h.get("X-Many"), ["a", "b"])
        self.assertEqual(h.get("Authorization"), ["Bearer tok"])
        self.assertIsNone(h.get("X-Karajo-Sign"))
        [sig] = h.get("X-Hub-Signature-256")
        self.assertEqual(sig, expected_sign("job-secret", seen["body"]))
        for value in h.values():
            self.assertNotIn("secret", value)
        self.assertNotIn("job-secret", text)
        self.assertNotIn(sig, text)
        self.assertNotIn("Bearer", text)

    def test_no_secret_no_signature(self) -> None:
        """Without any secret, no signature header is sent."""
        _, _, seen = self.run_job(
            job(http_url="http://example.org/"), env=Environment(secret="")
        )
        self.assertIsNone(seen["headers"].get("X-Karajo-Sign"))

    def test_userinfo_becomes_basic_auth(self) -> None:
        """
        Credentials in the URL go in an Authorization header, and neither
        the Host header nor the log shows them.
        """
        err, text, seen = self.run_job(job(http_url="http://bob:pa%40ss@example.org/a"))
        self.assertIsNone(err)
        expected = "Basic " + base64.b64encode(b"bob:pa@ss").decode()
        self.assertEqual(seen["headers"].get("Authorization"), [expected])
        self.assertEqual(seen["headers"].get("Host"), ["example.org"])
        self.assertNotIn("bob", text)
        self.assertNotIn("pa%40ss", text)
        self.assertNotIn("pa@ss", text)
        self.assertIn(f"--- GET http://example.org/a?_karajo_epoch={EPOCH}\n", text)

    def test_insecure_picks_the_insecure_client(self) -> None:
        """C{http_insecure} asks the shared clients for the unverified agent."""
        self.run_job(job(http_url="https://example.org/", http_insecure=True))
        self.assertEqual(self.clients.insecure, [True])

    def test_log(self) -> None:
        """
        The log has the request line, the request headers (the signature
        masked), the status line, every response header and the body lines.
        """
        err, text, _ = self.run_job(job(http_url="http://example.org/x"))
        self.assertIsNone(err)
        prefix = "2026-01-02 03:04:05 UTC job_http: hook: "
        lines = [line.removeprefix(prefix) for line in text.splitlines()]
        # The server's clock and version are not ours to pin.
        lines = [x for x in lines if not x.startswith(("--- < Date:", "--- < Server:"))]
        self.assertEqual(
            lines,
            [
                f"--- GET http://example.org/x?_karajo_epoch={EPOCH}",
                "--- > Host: example.org",
                "--- > User-Agent: karajo",
                "--- > X-Karajo-Sign: ********",
                "--- HTTP/1.1 200 OK",
                "--- < Content-Type: text/plain",
                "--- < X-Other: not logged",
                "--- < Content-Length: 12",
                "hello",
                "world",
            ],
        )
        self.assertNotIn(expected_sign(SECRET, f"_karajo_epoch={EPOCH}".encode()), text)

    def test_log_masks_credentials(self) -> None:
        """
        The password of the URL (sent as basic auth), an Authorization
        header of the job, a job's own signature header name and a cookie
        set by the response are masked; other headers are shown.
        """
        self.resource.headers["Set-Cookie"] = "session=abcdef"
        err, text, seen = self.run_job(
            job(
                http_url="http://bob:hunter2@example.org/x",
                http_method="POST",
                http_request_type="form",
                header_sign="X-My-Sign",
                http_headers=(("Authorization", "Bearer tok123"), ("X-Visible", "v1")),
            )
        )
        self.assertIsNone(err)
        # treq's basic auth (from the URL) wins over the job's header.
        basic = base64.b64encode(b"bob:hunter2").decode()
        self.assertEqual(seen["headers"].get("Authorization"), [f"Basic {basic}"])
        [sig] = seen["headers"].get("X-My-Sign")
        for secret in ("hunter2", "tok123", sig, "abcdef", basic):
            self.assertNotIn(secret, text)
        self.assertEqual(text.count("Authorization"), 1)
        self.assertIn("--- > Authorization: ********\n", text)

        self.assertIn("--- POST http://example.org/x\n", text)
        self.assertIn("--- > Authorization: ********\n", text)
        self.assertIn("--- > X-My-Sign: ********\n", text)
        self.assertIn("--- > X-Visible: v1\n", text)
        self.assertIn("--- > Content-Type: application/x-www-form-urlencoded\n", text)
        self.assertIn(f"--- > Content-Length: {len(seen['body'])}\n", text)
        self.assertIn(f"--- request body: _karajo_epoch={EPOCH}\n", text)
        self.assertIn("--- < Set-Cookie: ********\n", text)
        err, text, seen = self.run_job(
            job(http_url="http://example.org/y",
                http_headers=(("Authorization", "Bearer tok123"),))
        )
        self.assertIsNone(err)
        self.assertEqual(seen["headers"].get("Authorization"), ["Bearer tok123"])
        self.assertNotIn("tok123", text)

    def test_log_shows_only_the_head_of_a_long_body(self) -> None:
        """
        Up to the log cap the body is logged; beyond it, it is read (up to
        the read cap) but only counted, and the log says how much there was.
        """
        self.resource.body = b"a" * 30 + b"b" * 70
        err, text, _ = self.run_job(job(http_url="http://example.org/big"), max_logged_body=30)
        self.assertIsNone(err)
        self.assertIn(": " + "a" * 30 + "\n", text)
        self.assertNotIn("bbb", text)
        self.assertIn("--- response body: 100 bytes, the first 30 logged\n", text)
        self.assertNotIn("cut after", text)

    def test_body_cap(self) -> None:
        """
        Beyond the cap the body is not read: the log keeps the first bytes
        and says it was cut; the run still succeeds on a 2xx.
        """
        self.resource.body = b"0123456789" * 100
        err, text, _ = self.run_job(job(http_url="http://example.org/big"), max_body=25)
        self.assertIsNone(err)
        self.assertIn(": 0123456789012345678901234\n", text)
        self.assertNotIn("01234567890123456789012345", text)
        self.assertIn("--- response body cut after 25 bytes", text)

    def test_non_2xx_fails(self) -> None:
        """A 404 fails the run with its status; the body is still logged."""
        self.resource.code = 404
        self.resource.body = b"no such thing\n"
        err, text, _ = self.run_job(job(http_url="http://example.org/x"))
        self.assertIsInstance(err, RunFailed)
        self.assertEqual(err.message, "HTTP status 404")
        self.assertIn("--- HTTP/1.1 404 Not Found", text)
        self.assertIn("no such thing", text)

    def test_redirect_not_followed(self) -> None:
        """A 302 is not followed: the run fails and Location is logged."""
        self.resource.code = 302
        self.resource.headers["Location"] = "https://elsewhere.example/"
        err, text, _ = self.run_job(job(http_url="http://example.org/x"))
        self.assertEqual(len(self.resource.requests), 1)
        self.assertEqual(err.message, "HTTP status 302")
        self.assertIn("--- < Location: https://elsewhere.example/", text)

    def test_timeout_on_fake_clock(self) -> None:
        """The timeout is measured on the reactor given to the work."""
        hang = Hang()
        stub = StubTreq(hang)
        work = JobHttpWork(
            job(http_url="http://example.org/", http_timeout=timedelta(seconds=5)),
            self.env, self.clock, FakeClients(stub),
        )
        log = self.store.begin(1)
        d = work.run(log, 1, None)
        stub.flush()
        self.assertNoResult(d)
        self.assertEqual(len(hang.pending), 1)
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        stub.flush()
        failure = self.failureResultOf(d, RunFailed)
        self.assertTrue(failure.value.message.startswith("timeout after 5s"), failure.value.message)
        self.assertFalse(self.clock.getDelayedCalls())


# --- real loopback servers ---------------------------------------------------


class _Site(Site):
    """A Site that remembers its connections, to close them at cleanup."""

    def __init__(self, resource) -> None:
        super().__init__(resource)
        self.protocols = []

    def buildProtocol(self, addr):
        p = super().buildProtocol(addr)
        self.protocols.append(p)
        return p


class LoopbackTests(TestCase):
    """Real requests on the real reactor to servers started by the tests."""

    def setUp(self) -> None:
        self.clients = HttpClients(reactor)
        self.store = LogStore(
            self.mktemp(), "hook", kind="job_http", clock=reactor, run_in_thread=sync_thread
        )
        self.env = Environment(secret=SECRET, listen_address="127.0.0.1:1")
        self.counter = 0

    def serve(self, resource, tls: bool = False, interface: str = "127.0.0.1") -> str:
        """Start a server for C{resource} on a free loopback port; its base URL."""
        site = self.site = _Site(resource)
        if tls:
            options = PrivateCertificate.loadPEM(self_signed_pem()).options()
            port = reactor.listenSSL(0, site, options, interface=interface)
        else:
            port = reactor.listenTCP(0, site, interface=interface)

        async def close() -> None:
            await port.stopListening()
            for p in site.protocols:
                transport = getattr(p, "transport", None)
                if transport is not None and transport.connected:
                    transport.abortConnection()
            await task.deferLater(reactor, 0.05, lambda: None)

        self.addCleanup(close)
        scheme = "https" if tls else "http"
        host = f"[{interface}]" if ":" in interface else interface
        return f"{scheme}://{host}:{port.getHost().port}"

    async def run_job(self, j: JobHttp, stop_after: float | None = None):
        """Run C{j} once; return (exception or None, log text, seconds taken)."""
        self.counter += 1
        work = JobHttpWork(j, self.env, reactor, self.clients)
        log = self.store.begin(self.counter)
        start = time.monotonic()
        if stop_after is not None:
            call = reactor.callLater(stop_after, work.stop)
            self.addCleanup(lambda: call.active() and call.cancel())
        try:
            await work.run(log, self.counter, None)
        except Exception as e:
            err = e
        else:
            err = None
        elapsed = time.monotonic() - start
        await log.finish("success" if err is None else "failed")
        _, content = self.store.read(self.counter)
        return err, content.decode("utf-8"), elapsed

    async def test_plain_receiver(self) -> None:
        """
        A plain HTTP receiver gets method, path, query, headers and the JSON
        body, with a signature that checks out; the log has the request
        line, the status and the response body.
        """
        rec = Recorder(body=b'{"code":200,"message":"queued"}',
                       headers={"Content-Type": "application/json"})
        base = self.serve(rec)
        err, text, _ = await self.run_job(
            job(
                http_url=base + "/karajo/api/job_exec/run/x?via=jobhttp",
                http_method="POST",
                http_request_type="json",
                http_headers=(("X-Extra", "yes"),),
            )
        )
        self.assertIsNone(err)
        [seen] = rec.requests
        self.assertEqual(seen["method"], "POST")
        self.assertEqual(seen["path"], "/karajo/api/job_exec/run/x")
        self.assertEqual(seen["query"], "via=jobhttp")
        self.assertEqual(seen["body"], b'{"_karajo_epoch":%d}' % json.loads(seen["body"])["_karajo_epoch"])
        self.assertLess(abs(json.loads(seen["body"])["_karajo_epoch"] - time.time()), 60)
        h = seen["headers"]
        self.assertEqual(h.get("Content-Type"), ["application/json"])
        self.assertEqual(h.get("X-Extra"), ["yes"])
        [sig] = h.get("X-Karajo-Sign")
        self.assertTrue(hmac.compare_digest(sig, expected_sign(SECRET, seen["body"])))
        self.assertIn(f"--- POST {base}/karajo/api/job_exec/run/x?via=jobhttp\n", text)
        self.assertIn("--- HTTP/1.1 200 OK\n", text)
        self.assertIn("--- < Content-Type: application/json\n", text)
        self.assertIn(f"--- > Content-Length: {len(seen['body'])}\n", text)
        self.assertIn(f"--- request body: {seen['body'].decode()}\n", text)
        self.assertIn("--- > X-Extra: yes\n", text)
        self.assertIn("--- > X-Karajo-Sign: ********\n", text)
        self.assertNotIn(sig, text)
        self.assertIn(': {"code":200,"message":"queued"}\n', text)

    async def test_relative_url_reaches_this_server(self) -> None:
        """
        A URL that is a path goes to C{listen_address}; C{:port} means the
        IPv4 loopback address.
        """
        rec = Recorder()
        base = self.serve(rec)
        self.env = Environment(secret=SECRET, listen_address=":" + base.rsplit(":", 1)[1])
        err, text, _ = await self.run_job(
            job(http_url="/karajo/api/job_exec/run/x", http_method="POST",
                http_request_type="form")
        )
        self.assertIsNone(err)
        [seen] = rec.requests
        self.assertEqual(seen["path"], "/karajo/api/job_exec/run/x")
        self.assertTrue(seen["body"].startswith(b"_karajo_epoch="))
        [sig] = seen["headers"].get("X-Karajo-Sign")
        self.assertEqual(sig, expected_sign(SECRET, seen["body"]))
        self.assertIn(f"--- POST {base}/karajo/api/job_exec/run/x\n", text)

    async def test_ipv6_over_the_wire(self) -> None:
        """
        An IPv6 literal host works, in http_url and as the listen_address
        a path-only http_url goes to (treq alone would refuse the host).
        """
        try:
            rec = Recorder()
            base = self.serve(rec, interface="::1")
        except CannotListenError:
            raise SkipTest("no IPv6 loopback here") from None
        err, text, _ = await self.run_job(job(http_url=base + "/abs"))
        self.assertIsNone(err, text)
        self.env = Environment(secret=SECRET, listen_address=base.split("//", 1)[1])
        err, text, _ = await self.run_job(job(http_url="/rel", http_method="PUT",
                                              http_request_type="json"))
        self.assertIsNone(err, text)
        self.assertEqual([r["path"] for r in rec.requests], ["/abs", "/rel"])
        self.assertIn(f"--- PUT {base}/rel\n", text)

    async def test_query_signature_over_the_wire(self) -> None:
        """The raw query string the receiver gets is the signed payload."""
        rec = Recorder()
        base = self.serve(rec)
        err, text, _ = await self.run_job(job(http_url=base + "/p?a=%C3%A9&b=c+d"))
        self.assertIsNone(err)
        [seen] = rec.requests
        self.assertTrue(seen["query"].startswith("a=%C3%A9&b=c+d&_karajo_epoch="))
        [sig] = seen["headers"].get("X-Karajo-Sign")
        self.assertEqual(sig, expected_sign(SECRET, seen["query"].encode()))
        # The log: what was sent, the signature masked, no request body.
        self.assertIn(f"--- GET {base}/p?{seen['query']}\n", text)
        self.assertIn(f"--- > Host: {base.split('//')[1]}\n", text)
        self.assertIn("--- > X-Karajo-Sign: ********\n", text)
        self.assertNotIn(sig, text)
        self.assertNotIn("request body", text)

    async def test_tls_self_signed_refused_by_default(self) -> None:
        """A self-signed certificate fails the run unless the job is insecure."""
        rec = Recorder(body=b"secure hello\n")
        base = self.serve(rec, tls=True)
        err, text, _ = await self.run_job(job(http_url=base + "/t"))
        self.assertIsInstance(err, RunFailed)
        self.assertIn("TLS", err.message)
        self.assertIn("127.0.0.1", err.message)
        self.assertEqual(rec.requests, [])
        self.assertIn("--- > User-Agent: karajo\n", text)
        self.assertNotIn("--- HTTP/", text)

        err, text, _ = await self.run_job(job(http_url=base + "/t", http_insecure=True))
        self.assertIsNone(err)
        self.assertEqual(len(rec.requests), 1)
        self.assertIn("(TLS certificate not verified)", text)
        self.assertIn(": secure hello\n", text)

    async def test_insecure_connection_not_reused_by_verified_job(self) -> None:
        """
        After an insecure job left a pooled connection to a host, a job that
        verifies certificates still refuses that host's certificate.
        """
        rec = Recorder()
        base = self.serve(rec, tls=True)
        err, _, _ = await self.run_job(job(http_url=base + "/t", http_insecure=True))
        self.assertIsNone(err)
        err, _, _ = await self.run_job(job(http_url=base + "/t"))
        self.assertIsInstance(err, RunFailed)
        self.assertEqual(len(rec.requests), 1)

    async def test_each_run_its_own_connection(self) -> None:
        """
        No connection is kept between runs: a server that closes idle
        connections (or answers HTTP/1.0 and closes) can never make a later
        POST fail on a connection that is already gone.
        """
        rec = Recorder()
        base = self.serve(rec)
        for method in ("POST", "PUT", "GET"):
            err, _, _ = await self.run_job(job(http_url=base + "/r", http_method=method,
                                               http_request_type="form"))
            self.assertIsNone(err)
        self.assertEqual([r["method"] for r in rec.requests], ["POST", "PUT", "GET"])
        self.assertEqual(len(self.site.protocols), 3)

    async def test_never_answers_times_out(self) -> None:
        """A receiver that never answers fails the run at the timeout."""
        hang = Hang()
        base = self.serve(hang)
        err, text, elapsed = await self.run_job(
            job(http_url=base + "/h", http_timeout=timedelta(milliseconds=500))
        )
        self.assertIsInstance(err, RunFailed)
        self.assertTrue(err.message.startswith("timeout after 500ms"), err.message)
        self.assertIn("waiting for a response from 127.0.0.1:", err.message)
        self.assertIn("--- > X-Karajo-Sign: ********\n", text)
        self.assertNotIn("--- HTTP/", text)
        self.assertLess(elapsed, 3)
        self.assertGreaterEqual(elapsed, 0.4)
        self.assertEqual(len(hang.pending), 1)

    async def test_timeout_covers_the_body(self) -> None:
        """A body that stops arriving fails the run at the timeout too."""
        hang = Hang(partial_body=b"partial\n")
        base = self.serve(hang)
        err, text, elapsed = await self.run_job(
            job(http_url=base + "/h", http_timeout=timedelta(milliseconds=500))
        )
        self.assertIsInstance(err, RunFailed)
        self.assertIn("response body", err.message)
        self.assertTrue(err.message.startswith("timeout after 500ms"), err.message)
        self.assertLess(elapsed, 3)
        self.assertIn("--- HTTP/1.1 200 OK", text)
        self.assertIn(": partial\n", text)

    async def test_stop_during_request(self) -> None:
        """stop() during a hanging request makes the run fail with Stopped, promptly."""
        hang = Hang()
        base = self.serve(hang)
        err, _, elapsed = await self.run_job(
            job(http_url=base + "/h", http_timeout=timedelta(seconds=-1)),
            stop_after=0.2,
        )
        self.assertIsInstance(err, Stopped)
        self.assertLess(elapsed, 3)

    async def test_500_fails(self) -> None:
        """A 500 fails the run; the status and the body are in the log."""
        rec = Recorder(code=500, body=b"it broke\n")
        base = self.serve(rec)
        err, text, _ = await self.run_job(job(http_url=base + "/x"))
        self.assertIsInstance(err, RunFailed)
        self.assertEqual(err.message, "HTTP status 500")
        self.assertIn("--- HTTP/1.1 500 Internal Server Error\n", text)
        self.assertIn("--- < Content-Length: 9\n", text)
        self.assertIn(": it broke\n", text)
        self.assertLess(text.index("--- HTTP/1.1 500"), text.index(": it broke"))

    async def test_connection_refused(self) -> None:
        """A closed port fails the run, naming the address."""
        port = reactor.listenTCP(0, Site(Resource()), interface="127.0.0.1")
        number = port.getHost().port
        await port.stopListening()
        err, text, _ = await self.run_job(job(http_url=f"http://127.0.0.1:{number}/"))
        self.assertIsInstance(err, RunFailed)
        self.assertEqual(err.message, f"connection refused by 127.0.0.1:{number}")
        self.assertIn(f"--- GET http://127.0.0.1:{number}/?_karajo_epoch=", text)
        self.assertIn(f"--- > Host: 127.0.0.1:{number}\n", text)
        self.assertNotIn("--- HTTP/", text)

    async def test_with_job_runner(self) -> None:
        """
        Under the run state machine a 500 ends the run C{failed} with the
        status after C{!!!}; a 200 ends it C{success}.
        """
        rec = Recorder(code=500, body=b"nope\n")
        base = self.serve(rec)
        j = job(http_url=base + "/x")
        finished = []
        waiter: list[defer.Deferred] = []

        class Listener:
            def run_started(self, runner, record):
                pass

            def run_finished(self, runner, record):
                finished.append(record)
                waiter.pop().callback(None)

        runner = JobRunner(
            j, JobHttpWork(j, self.env, reactor, self.clients), self.store,
            defer.DeferredSemaphore(1), reactor,
        )
        runner.listeners.append(Listener())
        runner.restore()
        for code in (500, 200):
            rec.code = code
            waiter.append(defer.Deferred())
            d = waiter[0]
            runner.trigger()
            await d
        self.assertEqual([n.status for n in finished], ["failed", "success"])
        _, first = self.store.read(1)
        self.assertIn(b"=== BEGIN", first)
        self.assertIn(b"!!! HTTP status 500\n", first)
        _, second = self.store.read(2)
        self.assertIn(b"=== DONE\n", second)
