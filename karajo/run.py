"""
A job's run state machine: one run at a time, a queue of one, shared slots,
pause, resume, cancel, timeout and graceful stop.

Every way a run can start (timer, webhook, dashboard, JobHttp) comes through
L{JobRunner.trigger}; the work itself is a L{karajo.work.Work}.  The counter
is taken and persisted before the run starts, and the log is finalised
(renamed to its status, fsynced) before the next run may start.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from karajo.duration import format_duration
from karajo.errors import JobBusy, JobPaused, RunFailed, ServerStopping
from karajo.joblog import LogName, LogStore
from karajo.model import Job, JobHttp
from karajo.work import Stopped, Work

log = Logger()

# Why a run was stopped from outside, and how it then ends.
CANCELED = "canceled"
TIMEOUT = "timeout"
SHUTDOWN = "shutdown"


class JobRunner(Service):
    """
    Runs one job's work on request.  C{slots} is shared by every runner of
    the server and holds C{max_job_running} permits.
    """

    def __init__(
        self,
        job: Job | JobHttp,
        work: Work,
        store: LogStore,
        slots: defer.DeferredSemaphore,
        clock: IReactorTime,
        timeout: timedelta | None = None,
        on_finished: Callable[[JobRunner, LogName], Any] | None = None,
    ) -> None:
        self.job = job
        self.store = store
        self._work = work
        self._slots = slots
        self._clock = clock
        self._timeout = timeout
        self._on_finished = on_finished
        self.setName(f"{job.kind}/{job.id}")

        self.counter = 0
        self.last_status: str | None = None
        self.last_run: float | None = None
        self.paused = False
        self.stopping = False
        #: a run holds or waits for a slot
        self.active = False
        #: the run holds a slot and its work has started (not to be confused
        #: with Service.running, which says the service is started)
        self.executing = False
        self.queued = False
        self.current: LogName | None = None
        self._queued_request: Any = None
        self._waiting: defer.Deferred | None = None
        self._soon: IDelayedCall | None = None
        self._stop_reason: str | None = None
        self._timer: IDelayedCall | None = None
        self._done: defer.Deferred | None = None
        self._idle_waiters: list[defer.Deferred] = []
        # The log names, kept in memory: the API lists them for every job
        # on every request, which must not cost a directory scan each.
        self._logs: list[LogName] = []
        #: called with no argument when a run starts (the timer re-arms)
        self.on_started: Callable[[], Any] = lambda: None
        #: observers (metrics): C{run_started(runner)} when a run starts,
        #: C{run_finished(runner, name, status, seconds)} once its log is final
        self.listeners: list[Any] = []

    # --- state -----------------------------------------------------------

    @property
    def status(self) -> str:
        """
        What the API and dashboard show.  A pause shows at once, also while
        a run goes on ("paused at any time", SPEC section 3), so the
        operator sees it and can undo it; whether a run is going on is
        in the logs (the newest is C{running}).
        """
        if self.paused:
            return "paused"
        if self.executing:
            return "running"
        return self.last_status or "started"

    def restore(self) -> None:
        """Rebuild counter, last status and last run from the log directory."""
        state = self.store.restore()
        self.counter = state.counter
        self.last_status = state.last_status
        self.last_run = state.last_run.timestamp() if state.last_run else None
        self._logs = list(state.logs)
        for name in state.finalised:
            log.warn(
                "{job}: run {counter} was interrupted by a stop of karajo; marked failed",
                job=self.name, counter=name.counter,
            )

    @property
    def waiting(self) -> bool:
        """A run was accepted and waits to start (next turn, or a free slot)."""
        return self._waiting is not None or self._soon is not None

    def logs(self) -> list[LogName]:
        """Every log of this job, oldest first (from memory, not the disk)."""
        return list(self._logs)

    def when_idle(self) -> defer.Deferred[None]:
        """Fires once no run is running, waiting or queued."""
        if not self.active:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._idle_waiters.append(d)
        return d

    # --- commands --------------------------------------------------------

    def trigger(self, request: Any = None, *, deferred: bool = False) -> str:
        """
        Start a run now (when a slot is free), or queue one behind the
        current run.  Returns C{"started"} or C{"queued"}; raises
        L{JobPaused}, L{JobBusy} or L{ServerStopping}.

        C{deferred} starts the run on the next reactor turn instead of
        inside this call: timers use it, because a thousand jobs may be due
        on one slot and each timer fire should stay a few microseconds, with
        every run accepted before any of them starts.
        """
        if self.stopping:
            raise ServerStopping(f"{self.name}: karajo is stopping")
        if self.paused:
            raise JobPaused(f"job {self.job.id} is paused")
        if self.active:
            if self.queued:
                raise JobBusy(f"job {self.job.id} is running and a run is already queued")
            self.queued = True
            self._queued_request = request
            return "queued"
        self._start(request, deferred)
        return "started"

    def pause(self) -> None:
        """
        Refuse triggers and skip timer fires; a running run goes on.  A
        run accepted but not started yet (queued behind the running one,
        or waiting for a slot) is dropped: a paused job starts nothing.
        """
        self.paused = True
        if self.queued:
            self.queued = False
            self._queued_request = None
            log.info("{job}: paused; the queued run is dropped", job=self.name)
        if self._drop_pending():
            log.info("{job}: paused; the run waiting to start is dropped", job=self.name)

    def resume(self) -> None:
        self.paused = False

    def cancel(self) -> bool:
        """
        Stop the running run (it ends C{canceled}) and drop a queued one;
        a run still waiting for a slot is dropped before it starts.
        """
        if not self.active:
            return False
        self.queued = False
        self._queued_request = None
        if not self._drop_pending():
            self._stop(CANCELED)
        return True

    def _drop_pending(self) -> bool:
        """Drop a run that has not started (due next turn, or waiting for a slot)."""
        if self._soon is not None:
            self._soon.cancel()
            self._soon = None
            self._ended()
            return True
        if self._waiting is not None:
            # Cleared first: cancelling ends the run, which may start the
            # next one (and set a new _waiting) before cancel() returns.
            waiting, self._waiting = self._waiting, None
            waiting.cancel()
            return True
        return False

    # --- the run ---------------------------------------------------------

    def _start(self, request: Any, deferred: bool = False) -> None:
        self.active = True
        self._done = defer.Deferred()
        if deferred:
            self._soon = self._clock.callLater(0, self._wait_for_slot, request)
        else:
            self._wait_for_slot(request)

    def _wait_for_slot(self, request: Any) -> None:
        self._soon = None
        waiting = self._waiting = self._slots.acquire()
        waiting.addCallback(lambda _: defer.ensureDeferred(self._holding_slot(request)))
        waiting.addErrback(lambda f: f.trap(defer.CancelledError))
        waiting.addErrback(
            lambda f: log.failure("{job}: run failed", f, job=self.name)
        )
        waiting.addBoth(lambda _: self._ended())

    async def _holding_slot(self, request: Any) -> None:
        self._waiting = None
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._slots.release()

        try:
            await self._run(request, release)
        finally:
            release()

    async def _run(self, request: Any, release_slot: Callable[[], None]) -> None:
        self.counter += 1
        runlog = self.store.begin(self.counter)
        self.current = runlog.name
        self._logs.append(runlog.name)
        self.executing = True
        self._stop_reason = None
        started = self.last_run = self._clock.seconds()
        self.on_started()
        self._tell("run_started", self)
        runlog.line("=== BEGIN")
        if self._timeout is not None:
            self._timer = self._clock.callLater(
                self._timeout.total_seconds(), self._stop, TIMEOUT
            )
        try:
            await self._work.run(runlog, self.counter, request)
        except Stopped:
            status = self._stopped_line(runlog)
        except RunFailed as e:
            status = "failed"
            runlog.line(f"!!! {e.message}")
        except Exception as e:  # the work is user code; never lose the run
            log.failure("{job}: run raised", job=self.name)
            status = "failed"
            runlog.line(f"!!! {type(e).__name__}: {e}")
        else:
            if self._stop_reason is not None:
                status = self._stopped_line(runlog)
            else:
                status = "success"
                runlog.line("=== DONE")
        finally:
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._timer = None
        seconds = self._clock.seconds() - started
        # The work is over: another job may use the slot while this log is
        # flushed to disk (this job's next run still waits for it), and the
        # job no longer counts as running.
        self.executing = False
        self.last_status = status
        release_slot()
        name = await runlog.finish(status)
        self._logs = [name if n.counter == name.counter else n for n in self._logs]
        self.current = None
        try:
            # Listing and unlinking wait on the disk: not on the reactor thread.
            pruned = set(await self.store.run_in_thread(self.store.prune, self.job.log_retention))
        except OSError:
            log.failure("{job}: pruning old logs failed", job=self.name)
        else:
            self._logs = [n for n in self._logs if n not in pruned]
        if self._on_finished is not None:
            try:
                self._on_finished(self, name)
            except Exception:
                log.failure("{job}: on_finished failed", job=self.name)
        self._tell("run_finished", self, name, status, seconds)

    def _tell(self, event: str, *args: Any) -> None:
        for listener in list(self.listeners):
            try:
                getattr(listener, event)(*args)
            except Exception:
                log.failure("{job}: listener {event} failed", job=self.name, event=event)

    def _stopped_line(self, runlog) -> str:
        if self._stop_reason == TIMEOUT:
            assert self._timeout is not None
            runlog.line(f"!!! timed out after {format_duration(self._timeout)}")
            return "failed"
        if self._stop_reason == SHUTDOWN:
            runlog.line("??? CANCELED: karajo is stopping")
        else:
            runlog.line("??? CANCELED")
        return "canceled"

    def _stop(self, reason: str) -> None:
        if self.executing and self._stop_reason is None:
            self._stop_reason = reason
            self._work.stop()

    def _ended(self) -> None:
        self.active = False
        done, self._done = self._done, None
        if self.queued and not self.stopping:
            self.queued = False
            request, self._queued_request = self._queued_request, None
            self._start(request)
        if done is not None:
            done.callback(None)
        if not self.active:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)

    # --- service ---------------------------------------------------------

    def startService(self) -> None:
        self.stopping = False
        super().startService()

    def stopService(self) -> defer.Deferred[None] | None:
        """Start nothing new, stop the running run, wait for its log."""
        super().stopService()
        self.stopping = True
        if self.queued:
            log.info("{job}: karajo is stopping; the queued run is dropped", job=self.name)
        self.queued = False
        self._queued_request = None
        if not self.active:
            return None
        done = self._done
        if self._drop_pending():
            log.info("{job}: karajo is stopping; the run waiting to start is dropped",
                     job=self.name)
        else:
            self._stop(SHUTDOWN)
        return done
