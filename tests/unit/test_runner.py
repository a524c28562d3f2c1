"""
The run state machine of L{karajo.run.JobRunner}, deterministically: a fake
L{karajo.work.Work} whose runs end when the test says so, a L{task.Clock},
and a L{LogStore} whose "thread" runs inline.  Real processes are tested in
tests/test_run.py.
"""

from __future__ import annotations

import errno
import os
from datetime import timedelta
from typing import Any

from twisted.internet import defer, task
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from karajo.errors import JobBusy, JobPaused, RunFailed, ServerStopping
from karajo.joblog import LogStore, RunLog, RunRecord
from karajo.model import Job, TriggerRequest
from karajo.run import JobRunner
from karajo.status import JobStatus, RunStatus, Trigger
from karajo.work import Stopped

T0 = 1_800_000_000.0


def inline(f: Any, *args: Any) -> defer.Deferred:
    return defer.maybeDeferred(f, *args)


class FakeWork:
    """
    A L{Work} that runs until the test ends it: C{succeed()}, C{fail()},
    or a stop (which fails the run with L{Stopped}, as real work does).
    """

    def __init__(self) -> None:
        self.runs: list[tuple[int, Any]] = []
        self.stops = 0
        self._current: defer.Deferred[None] | None = None
        self.log: RunLog | None = None

    def run(self, log: RunLog, counter: int, request: Any) -> defer.Deferred[None]:
        assert self._current is None, "two runs at once"
        self.runs.append((counter, request))
        self.log = log
        self._current = defer.Deferred()
        return self._current

    def stop(self) -> None:
        self.stops += 1
        self._end(Stopped())

    @property
    def busy(self) -> bool:
        return self._current is not None

    def succeed(self) -> None:
        self._end(None)

    def fail(self, error: Exception) -> None:
        self._end(error)

    def _end(self, error: Exception | None) -> None:
        d, self._current = self._current, None
        assert d is not None, "no run to end"
        if error is None:
            d.callback(None)
        else:
            d.errback(error)


class Listener:
    def __init__(self) -> None:
        self.events: list[tuple[str, RunRecord]] = []

    def run_started(self, runner: JobRunner, record: RunRecord) -> None:
        self.events.append(("started", record))

    def run_finished(self, runner: JobRunner, record: RunRecord) -> None:
        self.events.append(("finished", record))


class RunnerTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.base = os.path.abspath(self.mktemp())
        self.slots = defer.DeferredSemaphore(4)

    def runner(
        self, name: str = "j", *, slots: defer.DeferredSemaphore | None = None,
        timeout: timedelta | None = None, **job: Any,
    ) -> tuple[JobRunner, FakeWork, Listener]:
        spec = Job(name=name, call=lambda log, request: None, **job)
        store = LogStore(
            os.path.join(self.base, "log", spec.id), spec.id, clock=self.clock,
            run_in_thread=inline, state_path=os.path.join(self.base, "run", spec.id),
        )
        work = FakeWork()
        runner = JobRunner(spec, work, store, slots or self.slots, self.clock, timeout=timeout)
        listener = Listener()
        runner.listeners.append(listener)
        runner.restore()
        runner.startService()
        return runner, work, listener

    def content(self, runner: JobRunner, counter: int) -> bytes:
        found = runner.store.read(counter)
        assert found is not None
        return found[1]

    def statuses(self, runner: JobRunner) -> list[tuple[int, str]]:
        return [(r.counter, r.status) for r in runner.records()]


class QueueTests(RunnerTestCase):
    def test_queue_of_one(self) -> None:
        """A trigger while running is queued; one more is refused; the queued run follows."""
        runner, work, _ = self.runner()
        self.assertEqual(runner.trigger("a"), "started")
        self.assertEqual(runner.trigger("b"), "queued")
        self.assertRaises(JobBusy, runner.trigger, "c")
        self.assertEqual(work.runs, [(1, "a")])
        work.succeed()
        self.assertEqual(work.runs, [(1, "a"), (2, "b")])
        self.assertTrue(runner.executing)
        self.assertFalse(runner.queued)
        work.succeed()
        self.successResultOf(runner.when_idle())
        self.assertEqual(self.statuses(runner), [(1, "success"), (2, "success")])
        self.assertEqual(runner.status, RunStatus.SUCCESS)

    def test_states_while_running(self) -> None:
        """status, active, executing, last_run and the record follow the run."""
        runner, work, _ = self.runner()
        self.assertEqual(runner.status, JobStatus.STARTED)
        self.assertIsNone(runner.last_run)
        runner.trigger()
        self.assertEqual(runner.status, RunStatus.RUNNING)
        self.assertTrue(runner.active and runner.executing)
        self.assertEqual(runner.last_run, T0)
        self.assertEqual(runner.records(), [RunRecord("j", 1, "running", T0, None, "manual")])
        idle = runner.when_idle()
        self.assertNoResult(idle)
        self.clock.advance(3)
        work.succeed()
        self.successResultOf(idle)
        self.assertFalse(runner.active or runner.executing)
        self.assertEqual(runner.records(), [RunRecord("j", 1, "success", T0, T0 + 3, "manual")])
        self.assertEqual(runner.last_status, RunStatus.SUCCESS)
        self.assertIn(b"=== BEGIN\n", self.content(runner, 1))
        self.assertIn(b"=== DONE\n", self.content(runner, 1))

    def test_failures(self) -> None:
        """RunFailed fails the run with its message; any other exception with its type."""
        runner, work, _ = self.runner()
        runner.trigger()
        work.fail(RunFailed("exit status 3"))
        runner.trigger()
        work.fail(KeyError("boom"))
        self.assertEqual(self.statuses(runner), [(1, "failed"), (2, "failed")])
        self.assertIn(b"!!! exit status 3\n", self.content(runner, 1))
        self.assertIn(b"!!! KeyError: 'boom'\n", self.content(runner, 2))
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_deferred_start(self) -> None:
        """A deferred trigger (the timers') is accepted at once and starts on the next turn."""
        runner, work, _ = self.runner()
        self.assertEqual(runner.trigger(None, deferred=True), "started")
        self.assertTrue(runner.active)
        self.assertTrue(runner.waiting)
        self.assertFalse(runner.executing)
        self.assertEqual(runner.trigger(None), "queued")
        self.assertEqual(work.runs, [])
        self.clock.advance(0)
        self.assertEqual(work.runs, [(1, None)])
        work.succeed()
        work.succeed()
        self.assertEqual(self.statuses(runner), [(1, "success"), (2, "success")])

    def test_deferred_start_canceled(self) -> None:
        """
        Cancelling a deferred trigger before it starts runs nothing; the
        counter it owned ends canceled.
        """
        runner, work, _ = self.runner()
        runner.trigger(None, deferred=True)
        self.assertTrue(runner.cancel())
        self.successResultOf(runner.when_idle())
        self.clock.advance(1)
        self.assertEqual((work.runs, runner.counter), ([], 1))
        self.assertEqual(self.statuses(runner), [(1, "canceled")])
        self.assertTrue(self.content(runner, 1).endswith(b"??? CANCELED before it started\n"))

    def test_triggers_recorded(self) -> None:
        """Each record says what started the run; a queued run keeps its own."""
        runner, work, _ = self.runner()
        runner.trigger(None, deferred=True)
        self.clock.advance(0)
        runner.trigger(TriggerRequest(method="POST", path="/x"))  # queued
        work.succeed()
        work.succeed()
        runner.trigger(None)
        work.succeed()
        runner.trigger(None, trigger="retry")
        work.succeed()
        timed, _, _ = self.runner("t", interval=timedelta(minutes=1))
        timed.trigger(None, deferred=True)
        self.clock.advance(0)
        self.assertEqual(
            [r.trigger for r in runner.records()],
            [Trigger.SCHEDULE if runner.job.schedule else Trigger.INTERVAL,
             Trigger.WEBHOOK, Trigger.MANUAL, "retry"],
        )
        self.assertEqual(timed.records()[0].trigger, Trigger.INTERVAL)
        sched, _, _ = self.runner("s", schedule="hourly")
        sched.trigger(None, deferred=True)
        self.clock.advance(0)
        self.assertEqual(sched.records()[0].trigger, Trigger.SCHEDULE)


class PauseTests(RunnerTestCase):
    def test_pause_drops_what_has_not_started(self) -> None:
        """
        Pausing shows at once (also while a run goes on), lets the running
        run finish, and drops the queued run and a run waiting for a slot.
        """
        slots = defer.DeferredSemaphore(1)
        runner, work, _ = self.runner("p", slots=slots)
        other, other_work, _ = self.runner("w", slots=slots)
        runner.trigger()
        runner.trigger()
        other.trigger()  # waits for the slot
        self.assertTrue(other.waiting)
        runner.pause()
        other.pause()
        self.assertEqual(runner.status, JobStatus.PAUSED)
        self.assertTrue(runner.executing)
        self.assertFalse(runner.queued)
        self.assertFalse(other.active or other.waiting)
        work.succeed()
        self.successResultOf(runner.when_idle())
        self.assertEqual(work.runs, [(1, None)])
        self.assertEqual(other_work.runs, [])
        # Each dropped run owned its counter: its log says why it never ran.
        why = b"??? CANCELED: the job was paused before this run started\n"
        self.assertEqual(self.statuses(other), [(1, "canceled")])
        self.assertTrue(self.content(other, 1).endswith(why))
        self.assertEqual(self.statuses(runner), [(1, "success"), (2, "canceled")])
        self.assertTrue(self.content(runner, 2).endswith(why))
        self.assertEqual(runner.status, JobStatus.PAUSED)
        runner.resume()
        self.assertEqual(runner.status, RunStatus.SUCCESS)

    def test_paused_refuses(self) -> None:
        runner, work, _ = self.runner()
        runner.pause()
        self.assertRaises(JobPaused, runner.trigger)
        runner.resume()
        self.assertEqual(runner.trigger(), "started")


class SlotTests(RunnerTestCase):
    def test_shared_slots(self) -> None:
        """Two slots among three jobs: the third waits, then takes the first free one."""
        slots = defer.DeferredSemaphore(2)
        runs = [self.runner(f"j{i}", slots=slots) for i in range(3)]
        for runner, _, _ in runs:
            runner.trigger()
        self.assertEqual([w.busy for _, w, _ in runs], [True, True, False])
        third = runs[2][0]
        self.assertTrue(third.active and third.waiting and not third.executing)
        runs[1][1].succeed()
        self.assertEqual([w.busy for _, w, _ in runs], [True, False, True])
        self.assertTrue(third.executing)

    def test_slot_free_while_the_log_is_written(self) -> None:
        """The slot is released when the work ends, before the log's finish is durable."""
        slots = defer.DeferredSemaphore(1)
        pending: list[tuple[Any, tuple, defer.Deferred]] = []

        def held(f: Any, *args: Any) -> defer.Deferred:
            d: defer.Deferred = defer.Deferred()
            pending.append((f, args, d))
            return d

        runner, work, _ = self.runner("a", slots=slots)
        runner.store.run_in_thread = held
        other, other_work, _ = self.runner("b", slots=slots)
        runner.trigger()
        other.trigger()
        while pending:  # the begin's record write
            f, args, d = pending.pop(0)
            d.callback(f(*args))
        work.succeed()
        self.assertTrue(other_work.busy)
        self.assertTrue(runner.active)  # its log is not final yet
        self.assertEqual(runner.trigger(), "queued")  # behind its own unfinished log
        while pending:
            f, args, d = pending.pop(0)
            d.callback(f(*args))
        self.assertEqual(self.statuses(runner), [(1, "success")])
        self.assertTrue(runner.waiting)  # the queued run waits for the slot b holds
        other_work.succeed()
        self.assertEqual(self.statuses(runner), [(1, "success"), (2, "running")])


class StopTests(RunnerTestCase):
    def test_cancel(self) -> None:
        """Cancel stops the running run (canceled) and drops the queued one."""
        runner, work, _ = self.runner()
        self.assertFalse(runner.cancel())
        runner.trigger()
        runner.trigger()
        self.assertTrue(runner.cancel())
        self.assertEqual(work.stops, 1)
        self.successResultOf(runner.when_idle())
        self.assertEqual(self.statuses(runner), [(1, "canceled"), (2, "canceled")])
        self.assertTrue(self.content(runner, 1).endswith(b"??? CANCELED\n"))
        self.assertTrue(self.content(runner, 2).endswith(b"??? CANCELED before it started\n"))
        self.assertEqual(runner.status, RunStatus.CANCELED)

    def test_cancel_waiting_for_a_slot(self) -> None:
        slots = defer.DeferredSemaphore(1)
        first, _, _ = self.runner("a", slots=slots)
        second, second_work, _ = self.runner("b", slots=slots)
        first.trigger()
        second.trigger()
        self.assertTrue(second.cancel())
        self.assertFalse(second.active)
        self.assertEqual((second_work.stops, self.statuses(second)), (0, [(1, "canceled")]))

    def test_timeout(self) -> None:
        """A run still going at its timeout is stopped and fails, saying so."""
        runner, work, _ = self.runner(timeout=timedelta(seconds=5))
        runner.trigger()
        self.clock.advance(4.9)
        self.assertEqual(work.stops, 0)
        self.clock.advance(0.1)
        self.assertEqual(work.stops, 1)
        self.assertEqual(self.statuses(runner), [(1, "failed")])
        self.assertIn(b"!!! timed out after 5s\n", self.content(runner, 1))
        self.assertEqual(runner.records()[0].ended, T0 + 5)

    def test_timeout_timer_canceled(self) -> None:
        """A run that ends in time leaves no timeout pending."""
        runner, work, _ = self.runner(timeout=timedelta(seconds=5))
        runner.trigger()
        work.succeed()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_graceful_stop(self) -> None:
        """
        Stopping the service drops the queued run, stops the running one
        (canceled, saying why) and fires once its log is final; then
        triggers are refused.
        """
        runner, work, _ = self.runner()
        runner.trigger()
        runner.trigger()
        d = runner.stopService()
        assert d is not None
        self.successResultOf(d)
        self.assertEqual(work.stops, 1)
        self.assertEqual(work.runs, [(1, None)])
        self.assertEqual(self.statuses(runner), [(1, "canceled"), (2, "canceled")])
        for counter in (1, 2):
            self.assertTrue(
                self.content(runner, counter).endswith(b"??? CANCELED: karajo is stopping\n"))
        self.assertRaises(ServerStopping, runner.trigger)

    def test_graceful_stop_idle(self) -> None:
        runner, _, _ = self.runner()
        self.assertIsNone(runner.stopService())


class ListenerTests(RunnerTestCase):
    def test_started_and_finished_with_the_record(self) -> None:
        runner, work, listener = self.runner()
        runner.trigger()
        self.clock.advance(2)
        work.succeed()
        self.assertEqual(listener.events, [
            ("started", RunRecord("j", 1, "running", T0, None, "manual")),
            ("finished", RunRecord("j", 1, "success", T0, T0 + 2, "manual")),
        ])

    def test_failing_listener(self) -> None:
        """A listener that raises is logged; the run and the others go on."""
        runner, work, listener = self.runner()

        class Broken:
            def run_started(self, runner: Any, record: Any) -> None:
                raise RuntimeError("bug")

            run_finished = run_started

        runner.listeners.insert(0, Broken())
        runner.trigger()
        work.succeed()
        self.assertEqual([e for e, _ in listener.events], ["started", "finished"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        self.assertEqual(self.statuses(runner), [(1, "success")])


class LogNotCreatedTests(RunnerTestCase):
    """A run whose log cannot be created (EMFILE) fails loudly, never silently."""

    def emfile(self, runner: JobRunner) -> list[int]:
        """Make C{runner}'s store refuse the next log; the counters it refused."""
        refused: list[int] = []
        real = runner.store.begin

        def begin(counter: int, **kw: Any) -> RunLog:
            if not refused:
                refused.append(counter)
                raise OSError(errno.EMFILE, "Too many open files")
            return real(counter, **kw)

        self.patch(runner.store, "begin", begin)
        return refused

    def test_fails_in_karajo_log(self) -> None:
        """
        The job shows C{failed}, karajo's log has a critical line naming the
        job, the run and the error; the job is free for the next run, which
        gets a log of its own.
        """
        runner, work, _ = self.runner()
        refused = self.emfile(runner)
        with capturedLogs() as events:
            runner.trigger()
        self.assertEqual(refused, [1])
        self.assertEqual(work.runs, [])
        self.assertEqual(runner.last_status, RunStatus.FAILED)
        self.assertFalse(runner.active)
        [event] = [e for e in events if e["log_level"] == LogLevel.critical]
        text = formatEvent(event)
        self.assertIn("j: run #1 (manual) failed before it began", text)
        self.assertIn("Too many open files", text)

        runner.trigger()
        work.succeed()
        self.assertEqual(self.statuses(runner), [(2, "success")])

    def test_command_not_started_fails_in_its_log(self) -> None:
        """
        When the log exists but the command cannot be started (its pipes
        need descriptors too), the run fails with the error in its log.
        """
        runner, work, _ = self.runner()

        def run(log: RunLog, counter: int, request: Any) -> defer.Deferred[None]:
            raise OSError(errno.EMFILE, "Too many open files")

        self.patch(work, "run", run)
        runner.trigger()
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)  # karajo's log too
        self.assertEqual(self.statuses(runner), [(1, "failed")])
        self.assertIn(b"!!! OSError: [Errno 24] Too many open files\n", self.content(runner, 1))

    def test_retried_by_policy(self) -> None:
        """With C{retry}, a run that could not begin is tried again."""
        runner, work, _ = self.runner(retry=1, retry_delay=timedelta(seconds=5))
        self.emfile(runner)
        with capturedLogs():
            runner.trigger()
        self.assertEqual(work.runs, [])
        self.clock.advance(5)
        self.assertEqual([c for c, _ in work.runs], [2])
        work.succeed()
        self.assertEqual(self.statuses(runner), [(2, "success")])
        self.assertIn(b"=== RETRY 1/1 of #1", self.content(runner, 2))


class RetentionTests(RunnerTestCase):
    def test_records_pruned_with_logs(self) -> None:
        runner, work, _ = self.runner(log_retention=2)
        for _ in range(4):
            runner.trigger()
            work.succeed()
        self.assertEqual([r.counter for r in runner.records()], [3, 4])
        self.assertEqual([n.counter for n in runner.store.scan()], [3, 4])
        self.assertEqual([n.counter for n in [r.name for r in runner.records()]], [3, 4])


class NotRestoredTests(SynchronousTestCase):
    def test_no_run_before_the_logs_are_read(self) -> None:
        """
        A runner whose logs and records are not read yet refuses to run:
        its counter is not known, and a run now could reuse a number.
        """
        from karajo.errors import ServerStarting

        clock = task.Clock()
        store = LogStore(os.path.abspath(self.mktemp()), "j", clock=clock, run_in_thread=inline)
        runner = JobRunner(Job(name="j", call=lambda log, request: None), FakeWork(), store,
                           defer.DeferredSemaphore(1), clock)
        self.assertRaises(ServerStarting, runner.trigger, None)
        runner.restore()
        self.assertEqual(runner.trigger(None), "started")


class CounterAtOnceTests(RunnerTestCase):
    """An accepted trigger owns its counter at once (docs/http-api.md, "Following a run")."""

    def test_started_and_queued_own_their_counters(self) -> None:
        runner, work, _ = self.runner()
        first = runner.submit()
        second = runner.submit()
        self.assertEqual((first.outcome, first.counter), ("started", 1))
        self.assertEqual((second.outcome, second.counter), ("queued", 2))
        self.assertEqual(runner.pending_counters(), (2,))
        # A follower of the queued run finds its feed before it starts.
        self.assertIsNotNone(self.successResultOf(runner.store.follow(2)))
        work.succeed()
        self.assertEqual(work.runs, [(1, None), (2, None)])
        work.succeed()
        self.assertEqual(self.statuses(runner), [(1, "success"), (2, "success")])
        self.assertEqual(runner.pending_counters(), ())

    def test_replace_cancels_the_queued_counter(self) -> None:
        """
        Under overlap = replace a later trigger ends the counter of a run
        still waiting for a slot canceled, saying why, and takes the next.
        """
        slots = defer.DeferredSemaphore(1)
        other, other_work, _ = self.runner("o", slots=slots)
        runner, work, _ = self.runner(overlap="replace", slots=slots)
        other.submit()
        self.assertEqual(runner.submit().counter, 1)
        self.assertEqual(runner.pending_counters(), (1,))
        self.assertEqual(runner.submit().counter, 2)
        self.assertTrue(self.content(runner, 1).endswith(
            b"??? CANCELED: replaced by a later trigger before it started\n"))
        other_work.succeed()
        self.assertEqual(work.runs, [(2, None)])

    def test_retry_takes_its_counter_when_it_starts(self) -> None:
        runner, work, _ = self.runner(retry=1, retry_delay=timedelta(seconds=5))
        runner.submit()
        work.fail(RunFailed("no"))
        self.assertEqual(runner.counter, 1)
        self.clock.advance(5)
        self.assertEqual([c for c, _ in work.runs], [1, 2])


class DroppedInAnyOrderTests(RunnerTestCase):
    def test_pause_drops_the_slot_waiter_and_the_run_queued_behind_it(self) -> None:
        """
        A run waiting for a slot (counter 1) and one queued behind it
        (counter 2) both end canceled with their own logs, whichever is
        dropped first.
        """
        slots = defer.DeferredSemaphore(1)
        other, other_work, _ = self.runner("o", slots=slots)
        runner, work, _ = self.runner(slots=slots)
        other.submit()
        self.assertEqual((runner.submit().counter, runner.submit().counter), (1, 2))
        self.assertEqual(runner.pending_counters(), (1, 2))
        runner.pause()
        self.assertEqual(self.statuses(runner), [(1, "canceled"), (2, "canceled")])
        other_work.succeed()
        self.assertEqual(work.runs, [])
        runner.resume()
        self.assertEqual(runner.submit().counter, 3)
