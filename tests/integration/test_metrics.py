"""
Tests of C{GET /karajo/metrics} (L{karajo.web.metrics}): real servers on
loopback running real command jobs, the page parsed with
C{prometheus_client}'s own parser.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import bcrypt
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial import unittest

from karajo.model import Environment, Job, JobHttp, Token, User
from karajo.paths import Paths
from karajo.service import build_job_service
from karajo.signature import sign
from karajo.tokens import hash_token
from karajo.work import CallableWork
from tests.integration.test_cli import Daemon, client

SECRET = "metrics-s3cret"
FAMILIES = {
    "karajo_runs_started": "counter",
    "karajo_runs_finished": "counter",
    "karajo_run_duration_seconds": "histogram",
    "karajo_job_running": "gauge",
    "karajo_job_queued": "gauge",
    "karajo_job_paused": "gauge",
    "karajo_job_last_success_timestamp_seconds": "gauge",
    "karajo_webhook_signatures_rejected": "counter",
    "karajo_webhook_not_matched": "counter",
    "karajo_notification_failures": "counter",
}


class Scrape:
    """One parsed metrics page."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = [s for f in self.families.values() for s in f.samples]

    def get(self, name: str, **labels: str) -> float | None:
        found = [s.value for s in self.samples
                 if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
        if len(found) > 1:
            raise AssertionError(f"{name} {labels} matches {len(found)} samples")
        return found[0] if found else None

    def buckets(self, job: str) -> list[tuple[float, float]]:
        return sorted(
            (float(s.labels["le"]), s.value) for s in self.samples
            if s.name == "karajo_run_duration_seconds_bucket" and s.labels["job"] == job
        )


async def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await deferLater(reactor, 0.01, lambda: None)


class MetricsTestCase(unittest.TestCase):
    timeout = 60
    users: dict[str, User] = {}
    tokens: dict[str, Token] = {}

    def setUp(self) -> defer.Deferred[None]:
        self.base = os.path.abspath(self.mktemp())
        self.held: list[defer.Deferred] = []

        def hold(log, request):
            d: defer.Deferred = defer.Deferred()
            self.held.append(d)
            return d

        self.daemon = Daemon(self, Environment(
            dir_base=self.base, secret=SECRET, listen_address="127.0.0.1:0",
            max_job_running=1, users=self.users, tokens=self.tokens,
            jobs={
                "ok": Job(path="/ok", commands=("sleep 0.05", "echo fine")),
                "bad": Job(path="/bad", commands=("echo about to fail", "exit 3")),
                "hold": Job(path="/hold", call=hold),
                "other": Job(path="/other", commands=("true",)),
            },
            http_jobs={
                "ping": JobHttp(http_url="/karajo/api/environment", schedule="monthly"),
            },
        ))
        self.url = self.daemon.url + "/karajo/metrics"
        # The jobs get their state back off the reactor thread first.
        return self.daemon.service.when_ready()

    async def scrape(self, cookies: dict | None = None, headers: dict | None = None) -> Scrape:
        response = await client().get(self.url, cookies=cookies, headers=headers)
        body = await response.content()
        self.assertEqual(response.code, 200, body)
        self.assertEqual(response.headers.getRawHeaders("content-type"),
                         ["text/plain; version=0.0.4; charset=utf-8"])
        return Scrape(body.decode("utf-8"))

    async def run_job(self, job_id: str) -> None:
        runner = self.daemon.runner(job_id)
        runner.trigger(None)
        await runner.when_idle()


class MetricsTests(MetricsTestCase):
    async def test_families_at_start(self) -> None:
        page = await self.scrape()
        for name, kind in FAMILIES.items():
            self.assertIn(name, page.families)
            self.assertEqual(page.families[name].type, kind, name)
        for job in ("ok", "bad", "hold", "other"):
            self.assertEqual(page.get("karajo_runs_started_total", kind="job", job=job), 0)
            for status in ("success", "failed"):
                self.assertEqual(
                    page.get("karajo_runs_finished_total", job=job, status=status), 0)
            self.assertEqual(page.get("karajo_run_duration_seconds_count", job=job), 0)
            self.assertEqual(page.get("karajo_job_running", job=job), 0)
            self.assertEqual(page.get("karajo_job_queued", job=job), 0)
            self.assertIsNone(page.get("karajo_job_last_success_timestamp_seconds", job=job))
        self.assertEqual(page.get("karajo_runs_started_total", kind="job_http", job="ping"), 0)
        self.assertEqual(page.get("karajo_job_paused", kind="job_http", job="ping"), 0)
        self.assertEqual(page.get("karajo_webhook_signatures_rejected_total"), 0)
        self.assertEqual(page.get("karajo_notification_failures_total"), 0)
        # Only this server's registry holds karajo's metrics.
        self.assertFalse([n for n in REGISTRY._names_to_collectors if n.startswith("karajo")])

    async def test_counters_follow_runs(self) -> None:
        before = time.time()
        body = json.dumps({"_karajo_epoch": int(time.time())}).encode()
        hook = self.daemon.url + "/karajo/api/job_exec/run/"
        http = client()
        # A signed webhook runs "ok"; a forged one is refused.
        response = await http.post(hook + "ok", data=body, headers={
            "X-Karajo-Sign": sign(SECRET, body), "Content-Type": "application/json"})
        self.assertEqual(response.code, 200, await response.content())
        forged = await http.post(hook + "bad", data=body, headers={
            "X-Karajo-Sign": sign("not the secret", body), "Content-Type": "application/json"})
        self.assertEqual(forged.code, 403)
        await forged.content()
        await self.daemon.runner("ok").when_idle()
        await self.run_job("bad")
        await self.run_job("ok")
        after = time.time()

        page = await self.scrape()
        self.assertEqual(page.get("karajo_runs_started_total", job="ok"), 2)
        self.assertEqual(page.get("karajo_runs_started_total", job="bad"), 1)
        self.assertEqual(page.get("karajo_runs_started_total", job="other"), 0)
        self.assertEqual(page.get("karajo_runs_finished_total", job="ok", status="success"), 2)
        self.assertEqual(page.get("karajo_runs_finished_total", job="ok", status="failed"), 0)
        self.assertEqual(page.get("karajo_runs_finished_total", job="bad", status="failed"), 1)
        self.assertEqual(page.get("karajo_runs_finished_total", job="bad", status="success"), 0)
        self.assertEqual(page.get("karajo_webhook_signatures_rejected_total"), 1)
        self.assertEqual(page.get("karajo_job_running", job="ok"), 0)

        # The histogram: two runs of at least 0.05 s each, cumulative buckets.
        self.assertEqual(page.get("karajo_run_duration_seconds_count", job="ok"), 2)
        total = page.get("karajo_run_duration_seconds_sum", job="ok")
        self.assertTrue(0.1 <= total < after - before + 0.01, total)
        buckets = page.buckets("ok")
        self.assertEqual(buckets[-1], (float("inf"), 2))
        self.assertEqual([v for _, v in buckets], sorted(v for _, v in buckets))
        self.assertEqual(dict(buckets)[0.01], 0)
        self.assertEqual(page.get("karajo_run_duration_seconds_count", job="bad"), 1)

        last = page.get("karajo_job_last_success_timestamp_seconds", kind="job", job="ok")
        self.assertTrue(before <= last <= after, (before, last, after))
        self.assertIsNone(page.get("karajo_job_last_success_timestamp_seconds", job="bad"))

    async def test_running_queued_paused(self) -> None:
        hold = self.daemon.runner("hold")
        hold.trigger(None)
        await wait_for(lambda: hold.executing)
        hold.trigger(None)  # queued behind the running one
        self.daemon.runner("other").trigger(None)  # waits for the only slot
        self.daemon.runner("bad").pause()
        page = await self.scrape()
        self.assertEqual(page.get("karajo_job_running", job="hold"), 1)
        self.assertEqual(page.get("karajo_job_queued", job="hold"), 1)
        self.assertEqual(page.get("karajo_job_running", job="other"), 0)
        self.assertEqual(page.get("karajo_job_queued", job="other"), 1)
        self.assertEqual(page.get("karajo_job_paused", job="bad"), 1)
        self.assertEqual(page.get("karajo_runs_started_total", job="hold"), 1)

        self.held.pop(0).callback(None)
        await wait_for(lambda: len(self.held) == 1)
        self.held.pop(0).callback(None)
        await hold.when_idle()
        await self.daemon.runner("other").when_idle()
        page = await self.scrape()
        self.assertEqual(page.get("karajo_runs_finished_total", job="hold", status="success"), 2)
        self.assertEqual(page.get("karajo_runs_finished_total", job="other", status="success"), 1)
        self.assertEqual(page.get("karajo_job_queued", job="other"), 0)
        self.assertEqual(page.get("karajo_job_running", job="hold"), 0)

    async def test_canceled_and_notification_failures(self) -> None:
        hold = self.daemon.runner("hold")
        hold.trigger(None)
        await wait_for(lambda: hold.executing)
        hold.cancel()
        await hold.when_idle()

        class FakeNotifier:
            failures = 7

        self.daemon.service.notifier = FakeNotifier()
        page = await self.scrape()
        self.assertEqual(page.get("karajo_runs_finished_total", job="hold", status="canceled"), 1)
        self.assertEqual(page.get("karajo_notification_failures_total"), 7)

    async def test_only_get(self) -> None:
        http = client()
        response = await http.post(self.url, data=b"")
        self.assertEqual(response.code, 405)
        self.assertEqual(json.loads(await response.content())["name"], "ERR_METHOD_NOT_ALLOWED")
        head = await http.head(self.url)
        self.assertEqual(head.code, 200)
        await head.content()
        # Only the exact path: below it is the web UI's (a 404 here).
        below = await http.get(self.url + "/x")
        self.assertEqual(below.code, 404)
        await below.content()

    async def test_servers_do_not_share_metrics(self) -> None:
        other = Daemon(self, Environment(
            dir_base=os.path.abspath(self.mktemp()), secret=SECRET,
            listen_address="127.0.0.1:0", jobs={"ok": Job(path="/ok", commands=("true",))},
        ))
        await other.service.when_ready()
        await self.run_job("ok")
        response = await client().get(other.url + "/karajo/metrics")
        page = Scrape((await response.content()).decode())
        self.assertEqual(page.get("karajo_runs_started_total", job="ok"), 0)
        self.assertIsNone(page.get("karajo_runs_started_total", job="bad"))
        self.assertEqual((await self.scrape()).get("karajo_runs_started_total", job="ok"), 1)


class ProtectedMetricsTests(MetricsTestCase):
    users = {"alice": User(password=bcrypt.hashpw(b"pw-alice", bcrypt.gensalt(4)).decode())}

    async def test_login_required(self) -> None:
        for cookies in (None, {"karajo_session": "forged-token"}):
            response = await client().get(self.url, cookies=cookies)
            self.assertEqual(response.code, 401)
            document = json.loads(await response.content())
            self.assertEqual((document["code"], document["name"]), (401, "ERR_UNAUTHORIZED"))
            self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])

        http = client()
        login = await http.post(self.daemon.url + "/karajo/api/auth/login",
                                json={"name": "alice", "password": "pw-alice"})
        self.assertEqual(login.code, 200, await login.content())
        cookie = {c.name: c.value for c in login.cookies()}["karajo_session"]
        page = await self.scrape(cookies={"karajo_session": cookie})
        self.assertIn("karajo_runs_started", page.families)


READ_TOKEN = "prometheus-read-token-0123456789"


class TokenMetricsTests(MetricsTestCase):
    """Prometheus' C{bearer_token_file}: a read token opens the page."""

    users = ProtectedMetricsTests.users
    tokens = {"prom": Token(hash=hash_token(READ_TOKEN), scope="read")}

    async def test_read_token(self) -> None:
        page = await self.scrape(headers={"Authorization": f"Bearer {READ_TOKEN}"})
        self.assertIn("karajo_runs_started", page.families)

    async def test_wrong_token_and_token_as_cookie(self) -> None:
        for headers, cookies in (
            ({"Authorization": "Bearer not-the-token"}, None),
            (None, {"karajo_session": READ_TOKEN}),
        ):
            response = await client().get(self.url, headers=headers, cookies=cookies)
            body = await response.content()
            self.assertEqual(response.code, 401, body)
            self.assertEqual(json.loads(body)["name"], "ERR_UNAUTHORIZED")
            self.assertNotIn(READ_TOKEN.encode(), body)


class RunnerListenerTests(unittest.TestCase):
    """The runner's listener hook, on its own: events, order, failures."""

    async def test_events_and_failing_listener(self) -> None:
        base = os.path.abspath(self.mktemp())
        job = Job(name="code", call=lambda log, req: log.write(b"hi\n"))
        finished: list[Any] = []

        class First:
            def run_started(self, runner, record):
                pass

            def run_finished(self, runner, record):
                finished.append(("first", record.status))

        svc = build_job_service(
            job, CallableWork(job), Paths(base), defer.DeferredSemaphore(1), reactor,
            lambda f, *a: defer.maybeDeferred(f, *a),
            listeners=[First()],
        )
        events: list[Any] = []

        class Broken:
            def run_started(self, *args):
                raise RuntimeError("listener bug")

            run_finished = run_started

        class Recorder:
            def run_started(self, runner, record):
                events.append(("started", runner.executing, runner.counter, record.status))

            def run_finished(self, runner, record):
                events.append(("finished", record.status, runner.last_status,
                               runner.executing, record.ended >= record.started))
                finished.append(("listener", record.status))

        svc.runner.listeners += [Broken(), Recorder()]
        svc.startService()
        self.addCleanup(svc.stopService)
        svc.runner.trigger(None)
        await svc.runner.when_idle()
        self.assertEqual(svc.runner.last_status, "success")
        self.assertEqual(events, [
            ("started", True, 1, "running"),
            ("finished", "success", "success", False, True),
        ])
        # Listeners are told in the order they were added.
        self.assertEqual(finished, [("first", "success"), ("listener", "success")])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)


class RunMetricsTests(unittest.TestCase):
    """The histogram's buckets are C{le}: a run of exactly a bound counts in it."""

    def test_buckets(self) -> None:
        from prometheus_client import CollectorRegistry, generate_latest
        from twisted.internet.task import Clock

        from karajo.joblog import RunRecord
        from karajo.web.metrics import RunMetrics

        class Runner:
            job = Job(name="j", commands=("true",))
            listeners: list = []

        clock = Clock()
        clock.advance(1000)
        runs = RunMetrics(clock)
        runs.watch("job", "j", Runner())
        for seconds, status in ((0.05, "success"), (0.051, "failed"), (-1, "canceled"),
                                (10_000, "success")):
            runs.run_started(Runner(), None)
            runs.run_finished(Runner(), RunRecord("j", 1, status, 0.0, seconds))

        class Only:
            def collect(self):
                return runs.collect()

        registry = CollectorRegistry()
        registry.register(Only())
        page = Scrape(generate_latest(registry).decode())
        buckets = dict(page.buckets("j"))
        self.assertEqual((buckets[0.01], buckets[0.05], buckets[0.1], buckets[7200]), (1, 2, 3, 3))
        self.assertEqual(buckets[float("inf")], 4)
        self.assertAlmostEqual(page.get("karajo_run_duration_seconds_sum", job="j"), 10_000.101)
        self.assertEqual(page.get("karajo_runs_started_total", job="j"), 4)
        self.assertEqual(page.get("karajo_runs_finished_total", job="j", status="canceled"), 1)
        self.assertEqual(page.get("karajo_runs_finished_total", job="j", status="success"), 2)
        self.assertEqual(runs.last_success, {("job", "j"): 1000})
        self.assertNotIn("_created", generate_latest(registry).decode())
