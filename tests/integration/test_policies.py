"""
The run policies end to end with real commands on the real reactor
(docs/configuration.md, "Run policies"): retries with their backoff and
logs, no retry after a cancel, one failure notice after the last attempt,
overlap skip and replace under concurrent triggers (also over HTTP: 429),
catch-up after a restart from a seeded run record, random delay bounds,
timeout on both kinds of job, chains and the cycle error.  The state
machine itself is tested on a clock in tests/unit/test_policies.py.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from karajo.config import Loaded, validate
from karajo.errors import JobBusy
from karajo.joblog import RunRecord
from karajo.model import Environment, Job, JobHttp, Notif
from karajo.notify import Notifier
from karajo.paths import Paths
from karajo.runrecord import RECORDS_SUFFIX, read_records, write_records
from karajo.service import build_job_services, thread_runner
from karajo.status import RunStatus
from tests.helpers import config_tree
from tests.integration.test_cli import karajo_cli
from tests.integration.test_jobhttp import Hang


def sync_thread(f: Any, *args: Any) -> defer.Deferred:
    return defer.maybeDeferred(f, *args)


async def until(predicate: Any, timeout: float = 10.0, step: float = 0.02) -> None:
    """Wait on the reactor until C{predicate()} holds."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        await task.deferLater(reactor, step, lambda: None)


class RecordingNotifier(Notifier):
    """A real Notifier (it reads the log off the reactor) that keeps its mails."""

    def __init__(self, notifs: dict[str, Notif]) -> None:
        super().__init__(notifs, reactor, server_name="karajo")
        self.mails: list[tuple[str, str]] = []

    def enqueue(self, notif: Notif, subject: str, body: str) -> bool:
        self.mails.append((subject, body))
        return True


OPS = Notif(name="ops", smtp_server="smtps://mail.example.test", sender="k@example.test",
            to=("ops@example.test",))


class PolicyTestCase(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())

    def server(self, *jobs: Job | JobHttp, notifier: Notifier | None = None,
               notifs: dict[str, Notif] | None = None, start: bool = True):
        env = Environment(
            dir_base=self.base, secret="s", listen_address="127.0.0.1:1",
            jobs={j.name: j for j in jobs if isinstance(j, Job)},
            http_jobs={j.name: j for j in jobs if isinstance(j, JobHttp)},
            notifs=notifs or {},
        )
        env, warnings = validate(env)
        service = build_job_services(Loaded(env, warnings), reactor, thread_runner(reactor),
                                     notifier=notifier)
        if start:
            service.startService()
            self.addCleanup(service.stopService)
        return service

    def records(self, svc: Any) -> list[tuple[int, str, str | None, int]]:
        return [(r.counter, str(r.status), r.trigger, r.attempt) for r in svc.runner.records()]

    def content(self, svc: Any, counter: int) -> str:
        found = svc.runner.store.read(counter)
        assert found is not None
        return found[1].decode()


class RetryTests(PolicyTestCase):
    async def test_retries_with_backoff_and_logs(self) -> None:
        """A failing command is retried twice, 200ms then 400ms after; each retry has its log."""
        service = self.server(Job(name="flaky", commands=["echo try; exit 4"], retry=2,
                                  retry_delay=timedelta(milliseconds=200)))
        await service.when_ready()
        svc = service.jobs["flaky"]
        svc.runner.trigger(None)
        await svc.runner.when_idle()
        self.assertEqual(self.records(svc), [
            (1, "failed", "manual", 1), (2, "failed", "retry", 2), (3, "failed", "retry", 3),
        ])
        runs = svc.runner.records()
        gaps = [b.started - a.ended for a, b in zip(runs, runs[1:], strict=False)]
        self.assertGreaterEqual(gaps[0], 0.19)
        self.assertGreaterEqual(gaps[1], 0.39)
        self.assertLess(gaps[1], 3)
        self.assertNotIn("=== RETRY", self.content(svc, 1))
        for counter, k in ((2, 1), (3, 2)):
            text = self.content(svc, counter)
            self.assertIn(f"=== RETRY {k}/2 of #1\n", text)
            self.assertIn("!!! exit status 4", text)
        self.assertEqual(
            sorted(os.listdir(Paths(self.base).log_dir("job", "flaky"))),
            ["flaky.1.failed", "flaky.2.failed", "flaky.3.failed"],
        )

    async def test_no_retry_after_cancel(self) -> None:
        service = self.server(Job(name="long", commands=["sleep 30"], retry=3,
                                  retry_delay=timedelta(milliseconds=50)))
        await service.when_ready()
        svc = service.jobs["long"]
        svc.runner.trigger(None)
        await until(lambda: svc.runner.executing)
        self.assertTrue(svc.runner.cancel())
        await svc.runner.when_idle()
        await task.deferLater(reactor, 0.3, lambda: None)
        self.assertEqual(self.records(svc), [(1, "canceled", "manual", 1)])
        self.assertFalse(svc.runner.active)

    async def test_one_failure_notice_after_last_attempt(self) -> None:
        notifier = RecordingNotifier({"ops": OPS})
        service = self.server(
            Job(name="flaky", commands=["echo attempt $KARAJO_JOB_COUNTER; false"], retry=2,
                retry_delay=timedelta(milliseconds=50), notif_on_failed=("ops",)),
            notifier=notifier, notifs={"ops": OPS},
        )
        await service.when_ready()
        svc = service.jobs["flaky"]
        svc.runner.trigger(None)
        await svc.runner.when_idle()
        await until(lambda: notifier.outstanding == 0 and notifier.mails)
        await task.deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(len(notifier.mails), 1)
        subject, body = notifier.mails[0]
        self.assertEqual(subject, "[karajo] job flaky #3: failed")
        self.assertIn("attempt 3", body)
        self.assertIn("=== RETRY 2/2 of #1", body)


class OverlapTests(PolicyTestCase):
    async def test_skip_under_concurrent_triggers(self) -> None:
        service = self.server(Job(name="busy", commands=["sleep 0.5"], overlap="skip"))
        await service.when_ready()
        svc = service.jobs["busy"]
        self.assertEqual(svc.runner.trigger(None), "started")
        refused = 0
        for _ in range(5):
            try:
                svc.runner.trigger(None)
            except JobBusy:
                refused += 1
        self.assertEqual(refused, 5)
        await svc.runner.when_idle()
        self.assertEqual(self.records(svc), [(1, "success", "manual", 1)])

    async def test_replace_under_concurrent_triggers(self) -> None:
        """Each trigger cancels the running command; the last one runs to the end."""
        service = self.server(Job(name="latest", commands=["echo run $KARAJO_JOB_COUNTER; sleep 30"],
                                  overlap="replace", timeout=timedelta(seconds=20)))
        await service.when_ready()
        svc = service.jobs["latest"]
        svc.runner.trigger(None)
        await until(lambda: svc.runner.executing)
        svc.runner.trigger(None)
        # Replaces the queued one, whose counter (owned at once) ends canceled.
        svc.runner.trigger(None)
        await until(lambda: len(self.records(svc)) == 3 and svc.runner.executing)
        self.assertEqual(self.records(svc), [
            (1, "canceled", "manual", 1), (2, "canceled", "manual", 1), (3, "running", "manual", 1)])
        self.assertIn("??? CANCELED", self.content(svc, 1))
        self.assertIn("??? CANCELED: replaced by a later trigger before it started",
                      self.content(svc, 2))
        svc.runner.cancel()
        await svc.runner.when_idle()
        self.assertEqual(svc.runner.counter, 3)

    async def test_over_http(self) -> None:
        """
        Webhooks: with overlap = skip a second one is 429 while the command
        runs; with replace it is accepted and the running run ends canceled.
        """
        import socket

        import treq

        from karajo.server import build_service
        from karajo.signature import sign

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env, warnings = validate(Environment(
            dir_base=self.base, secret="s", listen_address=f"127.0.0.1:{port}",
            jobs={
                "skipper": Job(path="/skipper", commands=["sleep 1"], overlap="skip"),
                "replacer": Job(path="/replacer", commands=["sleep 30"], overlap="replace"),
            },
        ))
        service = build_service(Loaded(env, warnings), reactor)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        await service.when_ready()

        async def hook(path: str, body: bytes) -> tuple[int, dict]:
            response = await treq.post(
                f"http://127.0.0.1:{port}/karajo/api/job_exec/run{path}", data=body,
                headers={"X-Karajo-Sign": sign("s", body), "Content-Type": "application/json"},
                persistent=False,
            )
            return response.code, json.loads(await response.content())

        self.assertEqual((await hook("/skipper", b'{"n":1}'))[0], 200)
        code, document = await hook("/skipper", b'{"n":2}')
        self.assertEqual((code, document["name"]), (429, "ERR_JOB_ALREADY_RUN"))
        skipper = service.jobs["skipper"].runner
        await skipper.when_idle()
        self.assertEqual([r.status for r in skipper.records()], ["success"])

        replacer = service.jobs["replacer"].runner
        self.assertEqual((await hook("/replacer", b'{"n":1}'))[0], 200)
        await until(lambda: replacer.executing)
        self.assertEqual((await hook("/replacer", b'{"n":2}'))[0], 200)
        await until(lambda: len(replacer.records()) == 2 and replacer.executing)
        self.assertEqual([(r.status, r.trigger) for r in replacer.records()],
                         [("canceled", "webhook"), ("running", "webhook")])
        replacer.cancel()
        await replacer.when_idle()


class CatchUpTests(PolicyTestCase):
    def seed(self, job_id: str, started: float) -> None:
        """A finished run of C{job_id} as an earlier karajo left it: its log and its record."""
        paths = Paths(self.base)
        log_dir = paths.log_dir("job", job_id)
        os.makedirs(log_dir, mode=0o700)
        with open(os.path.join(log_dir, f"{job_id}.1.success"), "w") as f:
            f.write("old run\n")
        record = RunRecord(job_id, 1, RunStatus.SUCCESS, started, started + 1, "schedule")
        write_records(paths.state_file("job", job_id) + RECORDS_SUFFIX, (record,))

    def daily_two_hours_ago(self) -> tuple[str, float]:
        """A daily cron slot two hours (and a few minutes) before now, and that slot's time."""
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        slot = now - timedelta(hours=2, minutes=5)
        return f"{slot.minute} {slot.hour} * * *", slot.timestamp()

    async def test_catch_up_inside_window(self) -> None:
        schedule, slot = self.daily_two_hours_ago()
        self.seed("nightly", slot - 86400)
        service = self.server(Job(name="nightly", schedule=schedule, commands=["echo caught"],
                                  catch_up=timedelta(hours=3)))
        await service.when_ready()
        svc = service.jobs["nightly"]
        await until(lambda: svc.runner.counter == 2 and not svc.runner.active)
        self.assertEqual(self.records(svc), [(1, "success", "schedule", 1),
                                             (2, "success", "catch_up", 1)])
        # Once per job: nothing more follows.
        await task.deferLater(reactor, 0.3, lambda: None)
        self.assertEqual(svc.runner.counter, 2)

    async def test_no_catch_up_outside_window(self) -> None:
        schedule, slot = self.daily_two_hours_ago()
        self.seed("nightly", slot - 86400)
        service = self.server(Job(name="nightly", schedule=schedule, commands=["echo caught"],
                                  catch_up=timedelta(hours=1)))
        await service.when_ready()
        await task.deferLater(reactor, 0.5, lambda: None)
        svc = service.jobs["nightly"]
        self.assertEqual(self.records(svc), [(1, "success", "schedule", 1)])
        self.assertFalse(svc.runner.active)

    async def test_no_catch_up_when_the_slot_ran(self) -> None:
        """The record says the missed slot did run: nothing to catch up."""
        schedule, slot = self.daily_two_hours_ago()
        self.seed("nightly", slot)
        service = self.server(Job(name="nightly", schedule=schedule, commands=["true"],
                                  catch_up=timedelta(hours=3)))
        await service.when_ready()
        await task.deferLater(reactor, 0.5, lambda: None)
        self.assertEqual(service.jobs["nightly"].runner.counter, 1)


class RandomDelayTests(PolicyTestCase):
    async def test_bounds(self) -> None:
        """Each interval fire starts between its slot and slot + random_delay."""
        service = self.server(Job(name="jitter", interval=timedelta(seconds=1), commands=["true"],
                                  random_delay=timedelta(milliseconds=500)))
        await service.when_ready()
        started_at = time.time()
        svc = service.jobs["jitter"]
        await until(lambda: svc.runner.counter >= 3 and not svc.runner.active, timeout=15)
        service.jobs["jitter"].timer.stopService()
        runs = svc.runner.records()[:3]
        first = runs[0].started
        assert first is not None
        self.assertGreaterEqual(first, started_at - 0.05)
        self.assertLess(first - started_at, 0.5 + 0.4)
        for a, b in zip(runs, runs[1:], strict=False):
            assert a.started is not None and b.started is not None
            # the slot is the previous start + interval
            self.assertGreaterEqual(b.started - a.started, 1.0 - 0.01)
            self.assertLess(b.started - a.started, 1.0 + 0.5 + 0.4)


class TimeoutTests(PolicyTestCase):
    async def test_job_timeout(self) -> None:
        service = self.server(Job(name="slow", commands=["sleep 30"],
                                  timeout=timedelta(milliseconds=300)))
        await service.when_ready()
        svc = service.jobs["slow"]
        begun = time.monotonic()
        svc.runner.trigger(None)
        await svc.runner.when_idle()
        self.assertLess(time.monotonic() - begun, 10)
        self.assertEqual(self.records(svc), [(1, "failed", "manual", 1)])
        self.assertIn("!!! timed out after 300ms", self.content(svc, 1))

    async def test_job_http_timeout(self) -> None:
        """timeout in [job.http]: a request that hangs is ended by it, the run failed."""
        hang = Hang()
        port = reactor.listenTCP(0, Site(hang), interface="127.0.0.1")
        self.addCleanup(port.stopListening)

        def drop_pending() -> None:
            for request in hang.pending:  # karajo dropped them already, as a rule
                if request.channel is not None:
                    request.channel.transport.abortConnection()

        self.addCleanup(drop_pending)
        url = f"http://127.0.0.1:{port.getHost().port}/h"
        service = self.server(JobHttp(name="ping", http_url=url, schedule="monthly",
                                      timeout=timedelta(milliseconds=300)))
        await service.when_ready()
        svc = service.http_jobs["ping"]
        begun = time.monotonic()
        svc.runner.trigger(None)
        await svc.runner.when_idle()
        self.assertLess(time.monotonic() - begun, 10)
        self.assertEqual(self.records(svc), [(1, "failed", "manual", 1)])
        self.assertIn("!!! timed out after 300ms", self.content(svc, 1))


class ChainTests(PolicyTestCase):
    async def test_a_then_b(self) -> None:
        """A's success triggers B (trigger chain); B's failure after its retry triggers C."""
        service = self.server(
            Job(name="a", commands=["echo a"], on_success=("b",)),
            Job(name="b", commands=["false"], retry=1, retry_delay=timedelta(milliseconds=50),
                on_failed=("c",)),
            Job(name="c", commands=["echo c"]),
        )
        await service.when_ready()
        a, b, c = (service.jobs[x] for x in "abc")
        a.runner.trigger(None)
        await until(lambda: c.runner.counter == 1 and not c.runner.active)
        self.assertEqual(self.records(a), [(1, "success", "manual", 1)])
        self.assertEqual(self.records(b), [(1, "failed", "chain", 1), (2, "failed", "retry", 2)])
        self.assertEqual(self.records(c), [(1, "success", "chain", 1)])

    async def test_cycle_is_a_config_error(self) -> None:
        """karajo check names each link of a cycle with its file and line, and exits 2."""
        base = os.path.abspath(self.mktemp())
        main = config_tree(base, "", {
            "job.d/a.conf": '[job "a"]\ncommand = true\non_success = b\n',
            "job.d/b.conf": '[job "b"]\ncommand = true\non_failed = a\n',
        })
        out, err, code = await karajo_cli("check", "--config", main)
        self.assertEqual(code, 2, err)
        a = f"{base}/etc/karajo/job.d/a.conf"
        b = f"{base}/etc/karajo/job.d/b.conf"
        self.assertEqual(
            err.decode(),
            f"{a}:3: on_success: chain cycle a -> b -> a (a on_success at {a}:3, "
            f"b on_failed at {b}:3)\n",
        )


class RecordFileTests(PolicyTestCase):
    async def test_trigger_and_attempt_persisted(self) -> None:
        """The record file keeps each run's trigger and attempt for the next start."""
        service = self.server(Job(name="flaky", commands=["false"], retry=1,
                                  retry_delay=timedelta(milliseconds=50)))
        await service.when_ready()
        svc = service.jobs["flaky"]
        svc.runner.trigger(None)
        await svc.runner.when_idle()
        await service.stopService()
        path = Paths(self.base).state_file("job", "flaky") + RECORDS_SUFFIX
        runs = read_records(path, "flaky")
        self.assertEqual([(runs[c].trigger, runs[c].attempt) for c in sorted(runs)],
                         [("manual", 1), ("retry", 2)])
