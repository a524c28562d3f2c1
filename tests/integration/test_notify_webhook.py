"""
Webhook notifications (L{karajo.notify_webhook} through
L{karajo.notify.Notifier}) against a receiver on loopback: a twisted.web
site on port 0 that records what it is sent and answers what the test
tells it to.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from karajo.config import Loaded, validate
from karajo.model import Environment, Job, Notif
from karajo.runrecord import LogName, RunRecord
from karajo.server import build_service
from tests.integration.test_notify import (
    FakeRunner,
    FakeStore,
    NotifyTestCase,
    closed_port,
    drained,
    wait_until,
)

SECRET = "webhook-signing-secret"
LOG = b"".join(b"line %d\n" % i for i in range(1, 31))


class Receiver(Resource):
    """Records each POST; answers the next code of C{codes} (then 200)."""

    isLeaf = True

    def __init__(self, codes: list[int] | None = None, hang: bool = False) -> None:
        super().__init__()
        self.codes = list(codes or [])
        self.hang = hang
        self.requests: list[tuple[dict[str, list[bytes]], bytes]] = []
        self.waiting: list[Any] = []

    def render_POST(self, request: Any) -> Any:
        headers = {k.decode().lower(): v for k, v in request.requestHeaders.getAllRawHeaders()}
        self.requests.append((headers, request.content.read()))
        if self.hang:
            self.waiting.append(request)
            return NOT_DONE_YET
        code = self.codes.pop(0) if self.codes else 200
        request.setResponseCode(code)
        return b"nope" if code >= 400 else b"ok"


class WebhookTestCase(NotifyTestCase):
    def receiver(self, **kw: Any) -> tuple[Receiver, str]:
        resource = Receiver(**kw)
        site = Site(resource)
        site.noisy = False
        site.log = lambda request: None  # type: ignore[method-assign]
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)

        def release() -> None:
            for request in resource.waiting:
                if request.channel is not None:
                    request.channel.transport.abortConnection()
        self.addCleanup(release)
        return resource, f"http://127.0.0.1:{port.getHost().port}/hooks/T0KEN-in-path"

    def hook(self, url: str, name: str = "chat", **kw: Any) -> Notif:
        return Notif(name=name, kind="webhook", url=url, **kw)

    def notifier(self, notifs: dict[str, Notif] | None = None, **kw: Any) -> Any:
        kw.setdefault("context_factory_for", None)
        return super().notifier(notifs, **kw)

    def finish(self, n: Any, job: Any, status: str = "failed", counter: int = 7,
               attempt: int = 1) -> None:
        name = LogName(counter, job.id, status)
        runner = FakeRunner(job, FakeStore({counter: (name, LOG)}))
        record = RunRecord(job.id, counter, status, 1_767_323_045.0, 1_767_323_048.25,
                           attempt=attempt)
        n.run_finished(runner, record)


class ShapeTests(WebhookTestCase):
    @defer.inlineCallbacks
    def test_json_shape_and_signature(self) -> Any:
        receiver, url = self.receiver()
        notif = self.hook(url, secret=SECRET,
                          http_headers=(("X-Team", "ops"), ("Authorization", "Bearer abc")))
        n = self.notifier({"chat": notif})
        job = Job(name="Nightly Backup", notif_on_failed=["chat"])
        self.finish(n, job, attempt=2)
        yield drained(n)
        self.assertEqual(len(receiver.requests), 1)
        headers, body = receiver.requests[0]
        self.assertEqual(headers["content-type"], [b"application/json"])
        self.assertEqual(headers["x-team"], [b"ops"])
        self.assertEqual(headers["authorization"], [b"Bearer abc"])
        expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        self.assertEqual(headers["x-karajo-sign"], [expected.encode()])
        document = json.loads(body)
        self.assertEqual(set(document), {
            "text", "job_id", "job_name", "kind", "counter", "status", "attempt", "started",
            "ended", "duration_s", "log_tail", "log_url"})
        self.assertEqual(document["text"],
                         "[karajo] job nightly_backup #7: failed after 3.25s (attempt 2)")
        self.assertEqual((document["job_id"], document["job_name"], document["kind"]),
                         ("nightly_backup", "Nightly Backup", "job"))
        self.assertEqual((document["counter"], document["status"], document["attempt"]),
                         (7, "failed", 2))
        self.assertEqual(document["started"], "2026-01-02T03:04:05Z")
        self.assertEqual(document["ended"], "2026-01-02T03:04:08Z")
        self.assertEqual(document["duration_s"], 3.25)
        self.assertEqual(document["log_tail"], "".join(f"line {i}\n" for i in range(11, 31)))
        self.assertEqual(document["log_url"],
                         "/karajo/app/log?kind=job&id=nightly_backup&counter=7")
        self.assertEqual((n.sent, n.failures), (1, 0))
        # The URL's path (a credential in Slack's URLs) is never logged.
        self.assertFalse([t for t in self.logged() if "T0KEN" in t])
        self.assertFalse([t for t in self.logged() if SECRET in t])

    @defer.inlineCallbacks
    def test_unsigned_without_secret(self) -> Any:
        receiver, url = self.receiver()
        n = self.notifier({"chat": self.hook(url)})
        self.finish(n, Job(name="x", notif_on_success=["chat"]), status="success")
        yield drained(n)
        headers, body = receiver.requests[0]
        self.assertNotIn("x-karajo-sign", headers)
        self.assertEqual(json.loads(body)["status"], "success")

    @defer.inlineCallbacks
    def test_mail_and_webhook_share_the_queue(self) -> Any:
        """A run naming a webhook and a mail notif: both go, one queue counts both."""
        receiver, url = self.receiver()
        server = self.server("smtps")
        from tests.integration.test_notify import trust_test_ca

        notifs = {"chat": self.hook(url), "mail": Notif(
            name="mail", smtp_server=server.url(), sender="k@example.org",
            to=("ops@example.org",))}
        n = self.notifier(notifs, context_factory_for=trust_test_ca)
        self.finish(n, Job(name="x", notif_on_failed=["chat", "mail"]))
        yield drained(n)
        self.assertEqual((len(receiver.requests), len(server.messages)), (1, 1))
        self.assertEqual(n.sent, 2)


class RetryTests(WebhookTestCase):
    @defer.inlineCallbacks
    def test_500_then_200_delivers_exactly_once(self) -> Any:
        receiver, url = self.receiver(codes=[500])
        n = self.notifier({"chat": self.hook(url)})
        self.finish(n, Job(name="x", notif_on_failed=["chat"]))
        yield drained(n)
        yield wait_until(lambda: False, 0.3).addErrback(lambda f: None)  # nothing more comes
        self.assertEqual(len(receiver.requests), 2)
        self.assertEqual(receiver.requests[0][1], receiver.requests[1][1])
        self.assertEqual((n.sent, n.failures), (1, 0))
        self.assertTrue(any("retrying" in t and "500" in t for t in self.logged()))

    @defer.inlineCallbacks
    def test_404_is_given_up_at_once(self) -> Any:
        receiver, url = self.receiver(codes=[404])
        n = self.notifier({"chat": self.hook(url)})
        self.finish(n, Job(name="x", notif_on_failed=["chat"]))
        yield drained(n)
        self.assertEqual(len(receiver.requests), 1)
        self.assertEqual((n.sent, n.failures), (0, 1))
        self.assertTrue(any("Gave up posting to" in t and "404" in t for t in self.logged()))

    @defer.inlineCallbacks
    def test_receiver_down_retried_then_given_up(self) -> Any:
        n = self.notifier({"chat": self.hook(f"http://127.0.0.1:{closed_port()}/x")},
                          retry_for=1.5)
        started = time.monotonic()
        self.finish(n, Job(name="x", notif_on_failed=["chat"]))
        self.assertLess(time.monotonic() - started, 0.1)
        yield drained(n, timeout=10.0)
        self.assertEqual(n.failures, 1)
        self.assertGreaterEqual(len([t for t in self.logged() if "retrying" in t]), 2)
        self.assertTrue(any("Gave up" in t and "refused" in t for t in self.logged()))

    @defer.inlineCallbacks
    def test_hanging_receiver_times_out(self) -> Any:
        receiver, url = self.receiver(hang=True)
        n = self.notifier({"chat": self.hook(url)}, timeout=0.3, retry_for=0.0)
        self.finish(n, Job(name="x", notif_on_failed=["chat"]))
        yield drained(n)
        self.assertEqual(len(receiver.requests), 1)
        self.assertEqual(n.failures, 1)
        self.assertTrue(any("no answer" in t for t in self.logged()))


class _Silent(Protocol):
    """Accepts a connection and never answers."""


class RunNotDelayedTests(WebhookTestCase):
    async def run_with(self, url: str) -> tuple[float, Any]:
        env, warnings = validate(Environment(
            dir_base=os.path.abspath(self.mktemp()), secret="s", listen_address="127.0.0.1:0",
            notifs={"chat": self.hook(url)},
            jobs={"quick": Job(commands=["echo hi; exit 1"], notif_on_failed=["chat"])},
        ))
        notifier = self.notifier(env.notifs, timeout=5.0)
        service = build_service(Loaded(env, warnings), reactor, notifier=notifier)
        service.removeService(service.getServiceNamed("http"))
        service.startService()
        self.addCleanup(service.stopService)
        await service.when_ready()
        runner = service.jobs["quick"].runner
        started = time.monotonic()
        runner.trigger(None)
        await runner.when_idle()
        return time.monotonic() - started, notifier

    async def test_down_receiver_never_delays_a_run(self) -> None:
        elapsed, notifier = await self.run_with(f"http://127.0.0.1:{closed_port()}/x")
        self.assertLess(elapsed, 2.0)
        # Still being retried in the background after the run ended.
        self.assertEqual(notifier.outstanding, 1)

    async def test_silent_receiver_never_delays_a_run(self) -> None:
        port = reactor.listenTCP(0, Factory.forProtocol(_Silent), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        elapsed, notifier = await self.run_with(f"http://127.0.0.1:{port.getHost().port}/x")
        self.assertLess(elapsed, 2.0)
        # The post is still waiting for its answer (5 s timeout) after the run ended.
        self.assertEqual(notifier.outstanding, 1)
