"""
The run policies on a L{task.Clock} with a fake work (the pattern of
tests/unit/test_runner.py): retry with its backoff and log line, overlap
queue/skip/replace, timeout, the notifier's and the chains' wait for the
last attempt, and the timer's random delay and catch-up.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from karajo.errors import JobBusy, JobPaused, RunFailed
from karajo.model import Notif, TriggerRequest
from karajo.notify import Notifier
from karajo.run import JobRunner
from karajo.schedule import parse_schedule
from karajo.service import Chains
from karajo.status import RunStatus, Trigger
from karajo.timer import JobTimer
from tests.unit.test_runner import T0, RunnerTestCase
from tests.unit.test_timer import run_for

MINUTE = 60.0


def records(runner: JobRunner) -> list[tuple[int, str, str | None, int]]:
    return [(r.counter, r.status, r.trigger, r.attempt) for r in runner.records()]


class RetryTests(RunnerTestCase):
    def test_retries_with_doubling_delay(self) -> None:
        """Each failed attempt is followed by a retry 1m, 2m, 4m later; each a run of its own."""
        runner, work, _ = self.runner(retry=3, log_retention=10)
        runner.trigger("req")
        work.fail(RunFailed("exit status 1"))
        starts = []
        for wait in (1, 2, 4):
            self.assertTrue(runner.retry_pending)
            self.clock.advance(wait * MINUTE - 1)
            self.assertFalse(work.busy)
            self.clock.advance(1)
            self.assertTrue(work.busy)
            starts.append(self.clock.seconds())
            work.fail(RunFailed("exit status 1"))
        self.assertFalse(runner.retry_pending)
        self.successResultOf(runner.when_idle())
        self.assertEqual(starts, [T0 + 60, T0 + 180, T0 + 420])
        self.assertEqual(records(runner), [
            (1, "failed", "manual", 1),
            (2, "failed", "retry", 2),
            (3, "failed", "retry", 3),
            (4, "failed", "retry", 4),
        ])
        # The retries run the first attempt's request again.
        self.assertEqual([r for _, r in work.runs], ["req"] * 4)
        self.assertNotIn(b"=== RETRY", self.content(runner, 1))
        self.assertIn(b"=== RETRY 1/3 of #1\n", self.content(runner, 2))
        self.assertIn(b"=== RETRY 3/3 of #1\n", self.content(runner, 4))

    def test_success_stops_retries(self) -> None:
        runner, work, _ = self.runner(retry=3)
        runner.trigger()
        work.fail(RunFailed("x"))
        self.clock.advance(MINUTE)
        work.succeed()
        self.assertFalse(runner.retry_pending)
        self.clock.advance(3600)
        self.assertEqual(records(runner), [(1, "failed", "manual", 1), (2, "success", "retry", 2)])

    def test_no_retry_after_cancel(self) -> None:
        runner, work, _ = self.runner(retry=3)
        runner.trigger()
        runner.cancel()
        self.assertFalse(runner.retry_pending)
        self.clock.advance(3600)
        self.assertEqual(records(runner), [(1, "canceled", "manual", 1)])

    def test_cancel_drops_pending_retry(self) -> None:
        runner, work, _ = self.runner(retry=3)
        runner.trigger()
        work.fail(RunFailed("x"))
        self.assertTrue(runner.cancel())
        self.assertFalse(runner.retry_pending)
        self.clock.advance(3600)
        self.assertEqual(len(work.runs), 1)
        self.successResultOf(runner.when_idle())

    def test_pause_drops_pending_retry(self) -> None:
        runner, work, _ = self.runner(retry=1)
        runner.trigger()
        work.fail(RunFailed("x"))
        runner.pause()
        self.clock.advance(3600)
        self.assertEqual(len(work.runs), 1)

    def test_timeout_is_retried(self) -> None:
        """A timed-out run failed (not canceled): it is retried."""
        runner, work, _ = self.runner(retry=1, timeout=timedelta(seconds=5))
        runner.trigger()
        self.clock.advance(5)
        self.assertIn(b"!!! timed out after 5s\n", self.content(runner, 1))
        self.assertTrue(runner.retry_pending)
        self.clock.advance(MINUTE)
        self.assertEqual(records(runner)[-1], (2, "running", "retry", 2))

    def test_pending_retry_holds_the_queue_place(self) -> None:
        """While a retry waits, a trigger is refused (queue) and a timer fire finds the job busy."""
        runner, work, _ = self.runner(retry=1)
        runner.trigger()
        work.fail(RunFailed("x"))
        self.assertTrue(runner.active)
        self.assertRaises(JobBusy, runner.trigger, None)
        self.clock.advance(MINUTE)
        self.assertEqual(records(runner)[-1][2:], ("retry", 2))

    def test_queued_trigger_wins_over_retry(self) -> None:
        """A run queued while the failed one ran is the next run: no retry is added."""
        runner, work, _ = self.runner(retry=2)
        runner.trigger()
        runner.trigger()
        work.fail(RunFailed("x"))
        self.assertFalse(runner.retry_pending)
        self.assertEqual(records(runner)[-1], (2, "running", "manual", 1))

    def test_listeners_hear_whether_a_retry_follows(self) -> None:
        runner, work, _ = self.runner(retry=1)
        seen = []

        class Watch:
            def run_started(self, r: Any, record: Any) -> None:
                pass

            def run_finished(self, r: Any, record: Any) -> None:
                seen.append((record.counter, r.retry_pending))

        runner.listeners.append(Watch())
        runner.trigger()
        work.fail(RunFailed("x"))
        self.clock.advance(MINUTE)
        work.fail(RunFailed("x"))
        self.assertEqual(seen, [(1, True), (2, False)])


class OverlapTests(RunnerTestCase):
    def test_skip_refuses(self) -> None:
        """overlap = skip: a trigger while running is refused, nothing queued."""
        runner, work, _ = self.runner(overlap="skip")
        runner.trigger("a")
        self.assertRaises(JobBusy, runner.trigger, "b")
        self.assertFalse(runner.queued)
        work.succeed()
        self.assertEqual(records(runner), [(1, "success", "manual", 1)])
        self.assertEqual(runner.trigger("c"), "started")

    def test_replace_cancels_running(self) -> None:
        """overlap = replace: the running run ends canceled and the new one starts."""
        runner, work, _ = self.runner(overlap="replace")
        runner.trigger("a")
        self.assertEqual(runner.trigger(TriggerRequest(method="POST", path="/x")), "queued")
        self.assertEqual(work.stops, 1)
        self.assertEqual(records(runner), [(1, "canceled", "manual", 1), (2, "running", "webhook", 1)])
        self.assertIn(b"??? CANCELED\n", self.content(runner, 1))
        work.succeed()
        self.assertEqual(records(runner)[-1], (2, "success", "webhook", 1))

    def test_replace_twice_keeps_latest(self) -> None:
        """Triggers while the canceled run still ends: the latest one runs, no more."""
        runner, work, _ = self.runner(overlap="replace")

        runner.trigger("a")
        original_stop = work.stop
        work.stop = lambda: setattr(work, "stops", work.stops + 1)  # type: ignore[method-assign]
        runner.trigger("b")
        runner.trigger("c")
        work.stop = original_stop  # type: ignore[method-assign]
        work.fail(RunFailed("stopped late"))
        self.assertEqual([r for _, r in work.runs], ["a", "c"])

    def test_replace_drops_pending_retry(self) -> None:
        runner, work, _ = self.runner(overlap="replace", retry=2)
        runner.trigger("a")
        work.fail(RunFailed("x"))
        self.assertTrue(runner.retry_pending)
        self.assertEqual(runner.trigger("b"), "started")
        self.assertFalse(runner.retry_pending)
        self.assertEqual(records(runner)[-1], (2, "running", "manual", 1))
        work.succeed()
        self.clock.advance(3600)
        self.assertEqual(len(work.runs), 2)

    def test_queue_default(self) -> None:
        runner, work, _ = self.runner()
        runner.trigger()
        self.assertEqual(runner.trigger(), "queued")
        self.assertRaises(JobBusy, runner.trigger)


class FakeNotifier(Notifier):
    """A Notifier that records what it would mail instead of reading logs."""

    def __init__(self) -> None:
        super().__init__({"ops": Notif(name="ops", smtp_server="smtps://x", sender="a@b", to=("c@d",))},
                         task.Clock())
        self.mailed: list[tuple[int, str]] = []

    def _enqueue_all(self, job: Any, name: Any, names: Any, body: str) -> None:
        self.mailed.append((name.counter, str(name.status)))


class NotifyOnceTests(RunnerTestCase):
    def test_one_notice_after_last_attempt(self) -> None:
        runner, work, _ = self.runner(retry=2, notif_on_failed=("ops",))
        notifier = FakeNotifier()
        runner.listeners.append(notifier)
        runner.trigger()
        work.fail(RunFailed("x"))
        self.clock.advance(MINUTE)
        work.fail(RunFailed("x"))
        self.clock.advance(2 * MINUTE)
        self.assertEqual(notifier.mailed, [])
        work.fail(RunFailed("x"))
        self.assertEqual(notifier.mailed, [(3, "failed")])

    def test_success_of_a_retry_is_noticed(self) -> None:
        runner, work, _ = self.runner(retry=2, notif_on_success=("ops",), notif_on_failed=("ops",))
        notifier = FakeNotifier()
        runner.listeners.append(notifier)
        runner.trigger()
        work.fail(RunFailed("x"))
        self.clock.advance(MINUTE)
        work.succeed()
        self.assertEqual(notifier.mailed, [(2, "success")])


class Svc:
    def __init__(self, runner: JobRunner) -> None:
        self.runner = runner


class ChainTests(RunnerTestCase):
    def test_chain_after_last_attempt(self) -> None:
        a, work_a, _ = self.runner("a", retry=1, on_failed=("c",), on_success=("b",))
        b, work_b, _ = self.runner("b")
        c, work_c, _ = self.runner("c")
        a.listeners.append(Chains({"a": Svc(a), "b": Svc(b), "c": Svc(c)}))  # type: ignore[dict-item]
        a.trigger()
        work_a.fail(RunFailed("x"))
        self.clock.advance(0)
        self.assertEqual(records(c), [])
        self.clock.advance(MINUTE)
        work_a.fail(RunFailed("x"))
        self.clock.advance(0)
        self.assertEqual(records(c), [(1, "running", "chain", 1)])
        self.assertEqual(records(b), [])
        work_c.succeed()
        a.trigger()
        work_a.succeed()
        self.clock.advance(0)
        self.assertEqual(records(b), [(1, "running", "chain", 1)])

    def test_refused_chain_is_logged(self) -> None:
        a, work_a, _ = self.runner("a", on_success=("b",))
        b, _, _ = self.runner("b")
        b.pause()
        a.listeners.append(Chains({"b": Svc(b)}))  # type: ignore[dict-item]
        a.trigger()
        work_a.succeed()
        self.assertEqual(records(b), [])
        self.assertRaises(JobPaused, b.trigger)

    def test_canceled_chains_nothing(self) -> None:
        a, work_a, _ = self.runner("a", on_success=("b",), on_failed=("b",))
        b, _, _ = self.runner("b")
        a.listeners.append(Chains({"b": Svc(b)}))  # type: ignore[dict-item]
        a.trigger()
        a.cancel()
        self.clock.advance(0)
        self.assertEqual(records(b), [])


START = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


class TimerPolicyTests(SynchronousTestCase):
    def timer(self, *, last_run: float | None = None, start: float = START, **kw: Any):
        clock = task.Clock()
        clock.advance(start)
        fired: list[tuple[str, float]] = []
        schedule = kw.pop("schedule", None)
        timer = JobTimer(
            clock,
            lambda: fired.append(("fire", clock.seconds())),
            fire_catch_up=lambda: fired.append(("catch_up", clock.seconds())),
            schedule=parse_schedule(schedule) if schedule else None,
            last_run=lambda: last_run,
            **kw,
        )
        timer.startService()
        return clock, fired, timer

    def test_random_delay_bounds(self) -> None:
        """Each fire waits uniform() * random_delay after its slot; next_run shows the slot."""
        draws = iter([0.0, 0.5, 0.999, 0.0])
        clock, fired, timer = self.timer(
            schedule="hourly", random_delay=timedelta(minutes=10), uniform=lambda: next(draws)
        )
        self.assertEqual(timer.next_run, START + 3600)
        run_for(clock, 3600 + 1)
        self.assertEqual(timer.next_run, START + 7200)
        run_for(clock, 3 * 3600)
        slots = [START + 3600 * k for k in (1, 2, 3)]
        self.assertEqual([t for _, t in fired][:3],
                         [slots[0], slots[1] + 300, slots[2] + 0.999 * 600])

    def test_random_delay_rechecks_busy(self) -> None:
        """A delayed fire that finds the job busy at its time is dropped."""
        busy = [False]
        clock, fired, timer = self.timer(
            schedule="hourly", random_delay=timedelta(minutes=10), uniform=lambda: 0.5,
            is_busy=lambda: busy[0],
        )
        clock.advance(3600)
        busy[0] = True
        clock.advance(300)
        self.assertEqual(fired, [])

    def test_stop_cancels_delayed_fire(self) -> None:
        clock, fired, timer = self.timer(
            schedule="hourly", random_delay=timedelta(minutes=10), uniform=lambda: 0.5
        )
        clock.advance(3600)
        timer.stopService()
        clock.advance(600)
        self.assertEqual(fired, [])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_catch_up_at_start_inside_window(self) -> None:
        """A daily slot missed 1h ago with catch_up = 2h runs once at start."""
        start = START + 3 * 3600  # 03:00; the 02:00 slot was missed
        clock, fired, _ = self.timer(
            schedule="0 2 * * *", start=start, last_run=START - 86400 + 2 * 3600,
            catch_up=timedelta(hours=2),
        )
        self.assertEqual(fired, [("catch_up", start)])
        run_for(clock, 86400)
        self.assertEqual(fired, [("catch_up", start), ("fire", START + 86400 + 2 * 3600)])

    def test_no_catch_up_outside_window(self) -> None:
        start = START + 5 * 3600  # the 02:00 slot was 3h ago
        _, fired, _ = self.timer(
            schedule="0 2 * * *", start=start, last_run=START - 86400 + 2 * 3600,
            catch_up=timedelta(hours=2),
        )
        self.assertEqual(fired, [])

    def test_no_catch_up_when_off_or_not_missed(self) -> None:
        start = START + 3 * 3600
        _, fired, _ = self.timer(schedule="0 2 * * *", start=start,
                                 last_run=START - 86400 + 2 * 3600)
        self.assertEqual(fired, [])
        _, fired, _ = self.timer(schedule="0 2 * * *", start=start,
                                 last_run=START + 2 * 3600, catch_up=timedelta(hours=2))
        self.assertEqual(fired, [])
        _, fired, _ = self.timer(schedule="0 2 * * *", start=start, last_run=None,
                                 catch_up=timedelta(hours=2))
        self.assertEqual(fired, [])

    def test_catch_up_once_for_many_missed(self) -> None:
        """An hourly job down for 5h catches up once, not five times."""
        start = START + 5 * 3600 + 10
        clock, fired, _ = self.timer(schedule="hourly", start=start, last_run=START,
                                     catch_up=timedelta(days=1))
        run_for(clock, 3600 - 10 - 1)
        self.assertEqual(fired, [("catch_up", start)])

    def test_catch_up_after_forward_jump(self) -> None:
        """A forward jump inside the window: the one collapsed fire is a catch-up."""
        clock, fired, _ = self.timer(schedule="hourly", catch_up=timedelta(hours=2))
        run_for(clock, 3600)
        self.assertEqual(fired, [("fire", START + 3600)])
        clock.advance(3 * 3600 + 600)  # one jump over three slots
        self.assertEqual(fired[1:], [("catch_up", START + 4 * 3600 + 600)])
        run_for(clock, 3000)
        self.assertEqual(fired[2:], [("fire", START + 5 * 3600)])

    def test_interval_overdue_at_start(self) -> None:
        """An interval job overdue at start is a catch-up inside the window, else a plain fire."""
        _, fired, _ = self.timer(interval=timedelta(hours=1), last_run=START - 2 * 3600,
                                 catch_up=timedelta(hours=2))
        _, plain, _ = self.timer(interval=timedelta(hours=1), last_run=START - 4 * 3600,
                                 catch_up=timedelta(hours=2))
        for clock_fired in (fired, plain):
            self.assertEqual(len(clock_fired), 0)
        # both fire on the next turn
        clock, fired, _ = self.timer(interval=timedelta(hours=1), last_run=START - 2 * 3600,
                                     catch_up=timedelta(hours=2))
        clock.advance(0)
        self.assertEqual(fired, [("catch_up", START)])
        clock, plain, _ = self.timer(interval=timedelta(hours=1), last_run=START - 4 * 3600,
                                     catch_up=timedelta(hours=2))
        clock.advance(0)
        self.assertEqual(plain, [("fire", START)])


class TriggerVocabularyTests(SynchronousTestCase):
    def test_values(self) -> None:
        self.assertEqual(
            [str(t) for t in Trigger],
            ["schedule", "interval", "webhook", "manual", "retry", "chain", "catch_up"],
        )
        self.assertEqual(RunStatus.CANCELED, "canceled")


class JsonFieldTests(SynchronousTestCase):
    def test_job_and_job_http_fields(self) -> None:
        """The policies are in both kinds' JSON, durations as integer nanoseconds."""
        from karajo.model import Job, JobHttp
        from karajo.web.documents import job_dict, job_http_dict

        policies = dict(retry=3, retry_delay=timedelta(seconds=30), overlap="skip",
                        catch_up=timedelta(hours=1), random_delay=timedelta(minutes=5),
                        timeout=timedelta(seconds=10))
        expected = {"retry": 3, "retry_delay": 30 * 10**9, "overlap": "skip",
                    "catch_up": 3600 * 10**9, "random_delay": 300 * 10**9,
                    "timeout": 10 * 10**9}
        job = job_dict(Job(name="a", on_success=("b",), on_failed=("c", "d"), **policies),
                       "started", None, None, [])
        self.assertEqual({k: job[k] for k in expected}, expected)
        self.assertEqual((job["on_success"], job["on_failed"]), (["b"], ["c", "d"]))
        http = job_http_dict(JobHttp(name="h", **policies), "started", None, None, [])
        self.assertEqual({k: http[k] for k in expected}, expected)
        self.assertNotIn("on_success", http)
        plain = job_dict(Job(name="p"), "started", None, None, [])
        self.assertEqual(
            {k: plain[k] for k in expected},
            {"retry": 0, "retry_delay": 60 * 10**9, "overlap": "queue", "catch_up": 0,
             "random_delay": 0, "timeout": 0},
        )


class CheckWordsTests(SynchronousTestCase):
    def test_policies_in_words(self) -> None:
        from karajo.cli import policy_rows
        from karajo.model import Job

        rows = dict(policy_rows(Job(
            name="a", retry=3, overlap="replace", catch_up=timedelta(hours=2),
            random_delay=timedelta(minutes=5), timeout=timedelta(seconds=90),
            on_success=("b",), on_failed=("c", "d"),
        )))
        self.assertEqual(rows["retry"], "retries 3 times, 1m then 2m then 4m apart; never after a cancel")
        self.assertEqual(rows["overlap"], "a trigger while running replaces the run")
        self.assertEqual(rows["catch_up"], "a timer slot missed no more than 2h ago runs once at start")
        self.assertEqual(rows["random_delay"], "each timer fire waits a random time below 5m")
        self.assertEqual(rows["timeout"], "1m30s")
        self.assertEqual(rows["on_success"], "when a run succeeds (after its last retry), triggers b")
        self.assertEqual(rows["on_failed"], "when a run fails (after its last retry), triggers c, d")

    def test_defaults_and_long_series(self) -> None:
        from karajo.cli import policy_rows
        from karajo.model import Job, JobHttp

        self.assertEqual(policy_rows(JobHttp(name="h")), [
            ("overlap", "a trigger while running is queued (one; more are refused)"),
        ])
        self.assertEqual(dict(policy_rows(Job(name="a", retry=1, overlap="skip"))), {
            "retry": "retries once, 1m after the failed run; never after a cancel",
            "overlap": "a trigger while running is refused, a timer fire skipped",
        })
        self.assertEqual(
            dict(policy_rows(Job(name="a", retry=10)))["retry"],
            "retries 10 times, 1m then 2m then 4m then 8m then … then 1h apart;"
            " never after a cancel",
        )


class WorkSeesTheRecordTests(RunnerTestCase):
    def test_trigger_and_attempt_through_the_log(self) -> None:
        """The work reads its run's trigger and attempt from RunLog.record (the one source)."""
        runner, work, _ = self.runner(retry=1)
        runner.trigger(TriggerRequest(method="POST", path="/x"))
        assert work.log is not None and work.log.record is not None
        self.assertEqual((work.log.record.trigger, work.log.record.attempt), ("webhook", 1))
        work.fail(RunFailed("x"))
        self.clock.advance(MINUTE)
        assert work.log.record is not None
        self.assertEqual((work.log.record.trigger, work.log.record.attempt), ("retry", 2))
