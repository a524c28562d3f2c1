"""
Start-up of L{karajo.service.KarajoService}: every job's logs and run
records are read in one step off the reactor thread, the jobs start (and
their timers arm) only when that step is done, and the site holds the
requests that need the jobs until then.  The "thread" here is a Deferred the
test fires, so each moment of the start can be looked at.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any

from treq.testing import StubTreq
from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from karajo.config import Loaded, validate
from karajo.model import Environment, Job
from karajo.paths import Paths
from karajo.service import build_job_services
from karajo.web.site import build_site


class HeldThread:
    """C{run_in_thread} whose calls wait until the test lets them run."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, tuple, defer.Deferred]] = []

    def __call__(self, f: Any, *args: Any) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.calls.append((f, args, d))
        return d

    def run_all(self) -> None:
        calls, self.calls = self.calls, []
        for f, args, d in calls:
            try:
                result = f(*args)
            except Exception:
                d.errback()
            else:
                d.callback(result)


class StartupTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        self.clock = task.Clock()
        self.clock.advance(1_800_000_000)
        self.thread = HeldThread()
        env, warnings = validate(Environment(
            dir_base=self.base, secret="s3cret",
            jobs={
                "tick": Job(interval=timedelta(minutes=5), call=lambda log, request: None),
                "hook": Job(path="/hook", call=lambda log, request: None),
            },
        ))
        # A run of "tick" that an earlier daemon left: counter 7, and one
        # that was still running when it stopped.
        log_dir = Paths(self.base).log_dir("job", "tick")
        os.makedirs(log_dir)
        for name in ("tick.6.success", "tick.7"):
            with open(os.path.join(log_dir, name), "w") as f:
                f.write("2027-01-15 08:00:00 UTC job: tick: === BEGIN\n")
        self.service = build_job_services(Loaded(env, warnings), self.clock, self.thread)
        self.site = build_site(self.service, self.clock, self.thread)

    def test_state_is_read_in_the_thread(self) -> None:
        """startService reads nothing itself: one thread step reads every job."""
        self.service.startService()
        self.addCleanup(self.service.stopService)
        tick = self.service.jobs["tick"]
        self.assertFalse(self.service.ready)
        self.assertEqual(len(self.thread.calls), 1)
        # Nothing read, nothing started, no timer armed yet.
        self.assertEqual(tick.runner.counter, 0)
        self.assertFalse(tick.runner.running)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIn("tick.7", os.listdir(tick.runner.store.directory))
        ready = self.service.when_ready()
        self.assertNoResult(ready)

        self.thread.run_all()
        self.successResultOf(ready)
        self.assertTrue(self.service.ready)
        self.assertEqual(tick.runner.counter, 7)
        self.assertTrue(tick.runner.running)
        self.assertEqual(
            sorted(os.listdir(tick.runner.store.directory)), ["tick.6.success", "tick.7.failed"]
        )
        # The interval timer is armed now, and only now.
        self.assertNotEqual(self.clock.getDelayedCalls(), [])
        self.successResultOf(self.service.when_ready())  # at once, once ready

    def test_requests_wait_for_the_jobs(self) -> None:
        """An API request during the start is answered once the jobs have their state."""
        self.service.startService()
        self.addCleanup(self.service.stopService)
        client = StubTreq(self.site.resource)
        answer = client.get("http://karajo.test/karajo/api/job_exec?id=tick")
        self.assertNoResult(answer)
        self.thread.run_all()
        client.flush()
        response = self.successResultOf(answer)
        self.assertEqual(response.code, 200)
        body = json.loads(self.successResultOf(response.content()))
        self.assertEqual([log["counter"] for log in body["data"]["logs"]], [6, 7])
        self.assertEqual(body["data"]["logs"][1]["status"], "failed")

    def test_failed_start(self) -> None:
        """A start that cannot read the jobs' state says so to waiters and held requests."""
        def unreadable() -> None:
            raise PermissionError(13, "Permission denied", "var/log/karajo/job/tick")

        self.service.jobs["tick"].load = unreadable  # type: ignore[method-assign]
        self.service.startService()
        self.addCleanup(self.service.stopService)
        client = StubTreq(self.site.resource)
        answer = client.get("http://karajo.test/karajo/api/environment")
        ready = self.service.when_ready()
        self.thread.run_all()
        client.flush()
        self.failureResultOf(ready)
        self.assertFalse(self.service.ready)
        response = self.successResultOf(answer)
        self.assertEqual(response.code, 503)
        body = json.loads(self.successResultOf(response.content()))
        self.assertEqual(body["name"], "ERR_SERVER_STARTING")
        self.assertEqual(len(self.flushLoggedErrors()), 1)

    def test_stopped_while_loading(self) -> None:
        """A stop before the state is read leaves the jobs unstarted."""
        self.service.startService()
        self.successResultOf(defer.maybeDeferred(self.service.stopService))
        self.thread.run_all()
        self.assertFalse(self.service.jobs["tick"].runner.running)
        self.assertEqual(self.clock.getDelayedCalls(), [])
