"""
A job's run state machine: one run at a time, a queue of one, shared slots,
pause, resume, cancel, timeout and graceful stop.

Every way a run can start (timer, webhook, dashboard, JobHttp) comes through
L{JobRunner.trigger}; the work itself is a L{karajo.work.Work}.  The counter
is taken before the run starts, and the log is finalised (renamed to its
status, fsynced) before the next run may start.  What the runner knows of
each run is its L{karajo.joblog.RunRecord} (L{JobRunner.records}); whatever
watches runs is a L{RunListener} in L{JobRunner.listeners}.

The run policies between a trigger and a run act here: C{overlap} (decided
by L{karajo.overlap}), C{retry} (a failed run's retry is a run of its own,
holding the queue place; listeners hear that one follows,
L{JobRunner.retry_pending}, so a notice or a chain waits for the last
attempt) and C{timeout}.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from karajo import overlap
from karajo.duration import format_duration
from karajo.errors import JobBusy, JobPaused, RunFailed, ServerStarting, ServerStopping
from karajo.joblog import LogStore, RestoredState, RunRecord
from karajo.model import Job, JobHttp, TriggerRequest
from karajo.overlap import NOT_STARTED, REPLACED, Accepted, Action, QueuedRun
from karajo.runlistener import RunListener, tell
from karajo.status import JobStatus, RunStatus, Trigger
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
    ) -> None:
        self.job = job
        self.store = store
        self._work = work
        self._slots = slots
        self._clock = clock
        self._timeout = timeout
        self.setName(f"{job.kind}/{job.id}")

        self.counter = 0
        self.last_status: RunStatus | None = None
        self.last_run: float | None = None
        self.paused = False
        self.stopping = False
        #: the job's logs and run records are read (L{adopt}); no run before
        self.restored = False
        #: a run holds or waits for a slot
        self.active = False
        #: the run holds a slot and its work has started (not to be confused
        #: with Service.running, which says the service is started)
        self.executing = False
        #: a failed run's retry follows (decided before the listeners hear
        #: of the run, true until the retry starts or is dropped)
        self.retry_pending = False
        #: (request, attempt, counter of the first attempt) of the retry to come
        self._retry_next: tuple[Any, int, int] | None = None
        #: the run accepted behind the running one, owning its counter
        self._queued: QueuedRun | None = None
        #: the counter the run that waits to start owns (None: a retry,
        #: which takes its counter when it starts)
        self._pending_counter: int | None = None
        #: finishes of the logs of runs dropped before they started
        self._dropping: list[defer.Deferred] = []
        self._pending_trigger: str | None = None
        self._waiting: defer.Deferred | None = None
        self._soon: IDelayedCall | None = None
        self._stop_reason: str | None = None
        self._timer: IDelayedCall | None = None
        self._done: defer.Deferred | None = None
        self._idle_waiters: list[defer.Deferred] = []
        #: who hears of each run start and end, in this order (L{RunListener})
        self.listeners: list[RunListener] = []
        #: a run has begun (its counter is taken) and not ended yet
        self._in_run = False
        #: (work, timeout) of a reload, waiting for the run in progress to end
        self._next_work: tuple[Work, timedelta | None] | None = None
        #: a cluster node's hooks (L{karajo.cluster}); None on a single
        #: server: where counters come from, what a run must pass before it
        #: begins (C{False}: the job runs on another node), and every
        #: node's records of this job
        self.counters: Callable[[], int] | None = None
        self.gate: Callable[[JobRunner, int, str | None, int], Any] | None = None
        self.mirror: Callable[[], list[RunRecord]] | None = None
        #: a cluster node's mirror knows a run of this job running on another
        #: node (L{karajo.clustermirror}); always False on a single server
        self.running_elsewhere = False

    # --- state -----------------------------------------------------------

    @property
    def status(self) -> JobStatus | RunStatus:
        """
        What the API and dashboard show.  A pause shows at once, also while
        a run goes on (docs/behaviour.md, "Pause and resume"); whether a
        run is going on is in the logs (the newest is C{running}).  In a
        cluster, a run on another node is running too.
        """
        if self.paused:
            return JobStatus.PAUSED
        if self.executing or self.running_elsewhere:
            return RunStatus.RUNNING
        return self.last_status or JobStatus.STARTED

    def restore(self) -> None:
        """Rebuild counter, last status, last run and the run records (blocking)."""
        self.adopt(self.store.load())
    def adopt(self, state: RestoredState) -> None:
        """
        Take the state L{LogStore.load} read at start-up (off the reactor
        thread) as this runner's: counter, last status, last run, records.
        """
        self.store.adopt(state)
        self.restored = True
        self.counter = state.counter
        self.last_status = RunStatus(state.last_status) if state.last_status else None
        self.last_run = state.last_run.timestamp() if state.last_run else None
        for name in state.finalised:
            log.warn(
                "{job}: run {counter} was interrupted by a stop of karajo; marked failed",
                job=self.name, counter=name.counter,
            )

    @property
    def queued(self) -> bool:
        """A run was accepted behind the running one."""
        return self._queued is not None

    @property
    def waiting(self) -> bool:
        """A run was accepted and waits to start (next turn, or a free slot)."""
        return self._waiting is not None or self._soon is not None

    def records(self) -> list[RunRecord]:
        """
        The L{RunRecord} of every kept log of this job, oldest first, from
        memory: what the API's C{logs}, the dashboard and its chart show
        (in a cluster, of every node).
        """
        return self.mirror() if self.mirror is not None else self.store.records()

    def snapshot(self) -> tuple[RunRecord, ...]:
        """L{records} as a tuple: on a single server the same object until one changes."""
        return tuple(self.mirror()) if self.mirror is not None else self.store.snapshot()

    def when_idle(self) -> defer.Deferred[None]:
        """Fires once no run is running, waiting or queued."""
        if not self.active:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._idle_waiters.append(d)
        return d

    # --- reload ----------------------------------------------------------

    def reconfigure(self, job: Job | JobHttp, work: Work) -> None:
        """
        A reload changed this job (docs/behaviour.md, "Reloading"): the
        job's value is the new one at once (what the API shows, how
        triggers are checked and decided); its work and timeout from the
        next run.  The counter, the records and the pause stay.
        """
        self.job = job
        if self._in_run:
            self._next_work = (work, job.timeout)
        else:
            self._adopt_work(work, job.timeout)

    def _adopt_work(self, work: Work, timeout: timedelta | None) -> None:
        self._next_work = None
        self._work = work
        self._timeout = timeout

    def retire(self) -> defer.Deferred[None]:
        """A reload removed this job: start nothing new, let a run in progress finish."""
        self.stopping = True
        self._drop_queued()
        self._drop_pending()
        return self.when_idle()

    def unretire(self) -> None:
        """A later reload brought the job back before its last run ended."""
        self.stopping = not self.running

    # --- commands --------------------------------------------------------

    def trigger(
        self, request: Any = None, *, deferred: bool = False, trigger: str | None = None
    ) -> str:
        """L{submit}, saying only C{"started"} or C{"queued"}."""
        return self.submit(request, deferred=deferred, trigger=trigger).outcome

    def submit(
        self, request: Any = None, *, deferred: bool = False, trigger: str | None = None
    ) -> Accepted:
        """
        Start a run now (when a slot is free), or queue one behind the
        current run.  Returns whether it C{"started"} or is C{"queued"} and
        the counter it owns at once (a queued run too: dropped before it
        starts, it ends C{canceled} in a log of that counter); raises
        L{JobPaused}, L{JobBusy} or L{ServerStopping}.  While the job runs
        (or a run waits), its C{overlap} decides (L{overlap.decide}); a
        pending retry holds the queue place.

        C{deferred} starts the run on the next reactor turn: timers use it,
        so that a thousand fires on one slot stay a few microseconds each,
        every run accepted before any of them starts.  C{trigger} goes into
        the run's record; by default a deferred start is the job's timer, a
        L{TriggerRequest} a webhook, anything else a manual run.
        """
        if trigger is None:
            trigger = self._trigger_of(request, deferred)
        if not self.restored:
            raise ServerStarting(f"{self.name}: karajo is still reading this job's logs")
        if self.stopping:
            raise ServerStopping(f"{self.name}: karajo is stopping")
        if self.paused:
            raise JobPaused(f"job {self.job.id} is paused")
        decision = overlap.decide(
            self.job.overlap, active=self.active, executing=self.executing,
            retry_pending=self.retry_pending, queued=self.queued,
        )
        action = decision.action
        if action is Action.REFUSE:
            raise JobBusy(f"job {self.job.id} {decision.why}")
        if action in (Action.REPLACE_RUNNING, Action.REPLACE_WAITING):
            self._drop_queued(REPLACED)
        if action is Action.REPLACE_WAITING and self._drop_pending(REPLACED):
            log.info("{job}: a trigger replaces the run waiting to start", job=self.name)
        counter = self._take_counter()
        # Behind a run that goes on or still ends (a replaced one being
        # stopped, or its slot wait cancelled).  Queued before the stop, so
        # a work that stops at once starts this one.
        if self.active:
            self._queued = QueuedRun(request, trigger, counter)
            if action is Action.REPLACE_RUNNING:
                log.info("{job}: a trigger replaces the running run", job=self.name)
                self._stop(CANCELED)
            return Accepted("queued", counter)
        self._start(request, trigger, deferred, counter=counter)
        return Accepted("started", counter)

    def _take_counter(self) -> int:
        """The next counter, owned by an accepted run from now on; its followers may wait."""
        self.counter = self.counters() if self.counters is not None else self.counter + 1
        self.store.reserve(self.counter)
        return self.counter

    def pending_counters(self) -> tuple[int, ...]:
        """The counters of the runs accepted and not started yet."""
        queued = self._queued.counter if self._queued is not None else None
        return tuple(c for c in (self._pending_counter, queued) if c is not None)

    def _trigger_of(self, request: Any, deferred: bool) -> Trigger:
        if deferred:
            return Trigger.SCHEDULE if self.job.schedule else Trigger.INTERVAL
        if isinstance(request, TriggerRequest):
            return Trigger.WEBHOOK
        return Trigger.MANUAL

    def pause(self) -> None:
        """Refuse triggers and skip fires; a running run goes on, one not started is dropped."""
        self.paused = True
        why = "??? CANCELED: the job was paused before this run started"
        if self.queued:
            self._drop_queued(why)
            log.info("{job}: paused; the queued run is dropped", job=self.name)
        if self._drop_pending(why):
            log.info("{job}: paused; the run waiting to start is dropped", job=self.name)

    def resume(self) -> None:
        self.paused = False

    def cancel(self) -> bool:
        """Stop the running run (it ends C{canceled}) and drop those not started."""
        if not self.active:
            return False
        self._drop_queued(NOT_STARTED)
        if not self._drop_pending(NOT_STARTED):
            self._stop(CANCELED)
        return True

    def _drop_queued(self, why: str | None = None) -> None:
        """Forget the queued run; with C{why}, its counter's log ends C{canceled} saying so."""
        queued, self._queued = self._queued, None
        if queued is not None:
            self._never_started(queued.counter, queued.trigger, why or NOT_STARTED)

    def _never_started(self, counter: int, trigger: str | None, why: str) -> None:
        """
        A run that owned C{counter} was dropped before it started: its log
        is that one line, C{canceled}.  The listeners do not hear of it.
        """
        d = self.store.end_unstarted(counter, trigger, why)
        if d is None:
            return
        self._dropping.append(d)
        d.addBoth(lambda _: self._dropping.remove(d))

    def _drop_pending(self, why: str | None = None) -> bool:
        """Drop a run not started (due next turn, a retry waiting, or waiting for a slot)."""
        self.retry_pending = False
        self._retry_next = None
        counter, self._pending_counter = self._pending_counter, None
        if counter is not None and (self._soon is not None or self._waiting is not None):
            self._never_started(counter, self._pending_trigger, why or NOT_STARTED)
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

    def _start(
        self, request: Any, trigger: str | None, deferred: bool = False,
        delay: float | None = None, retry: tuple[int, int] | None = None,
        counter: int | None = None,
    ) -> None:
        self.active = True
        self._pending_counter = counter
        self._pending_trigger = trigger
        self._done = defer.Deferred()
        if deferred or delay is not None:
            self._soon = self._clock.callLater(
                delay or 0, self._wait_for_slot, request, trigger, retry
            )
        else:
            self._wait_for_slot(request, trigger, retry)

    def _wait_for_slot(
        self, request: Any, trigger: str | None, retry: tuple[int, int] | None = None
    ) -> None:
        self._soon = None
        self.retry_pending = False
        waiting = self._waiting = self._slots.acquire()
        waiting.addCallback(
            lambda _: defer.ensureDeferred(self._holding_slot(request, trigger, retry))
        )
        waiting.addErrback(lambda f: f.trap(defer.CancelledError))
        waiting.addErrback(
            lambda f: log.failure("{job}: run failed", f, job=self.name)
        )
        waiting.addBoth(lambda _: self._ended())

    async def _holding_slot(
        self, request: Any, trigger: str | None, retry: tuple[int, int] | None
    ) -> None:
        self._waiting = None
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._slots.release()

        try:
            await self._run(request, trigger, release, retry)
        finally:
            release()

    async def _run(
        self, request: Any, trigger: str | None, release_slot: Callable[[], None],
        retry: tuple[int, int] | None = None,
    ) -> None:
        self._in_run = True
        counter, self._pending_counter = self._pending_counter, None
        if counter is None:  # a retry: its counter is taken as it starts
            counter = self._take_counter()
        attempt, first = retry if retry is not None else (1, counter)
        if self.gate is not None and not await self.gate(self, counter, trigger, attempt):
            self._never_started(counter, trigger, "??? CANCELED: the job runs on another node")
            return
        try:
            runlog = self.store.begin(counter, trigger=trigger, attempt=attempt)
        except OSError as e:
            self.store.release(counter, RunStatus.FAILED)
            self._not_begun(request, trigger, counter, attempt, first, e)
            return
        record = self.store.record(counter)
        assert record is not None
        self.executing = True
        self._stop_reason = None
        self.last_run = record.started
        self._tell("run_started", record)
        runlog.line("=== BEGIN")
        if attempt > 1:
            runlog.line(f"=== RETRY {attempt - 1}/{self.job.retry} of #{first}")
        if self._timeout is not None:
            self._timer = self._clock.callLater(
                self._timeout.total_seconds(), self._stop, TIMEOUT
            )
        try:
            await self._work.run(runlog, counter, request)
        except Stopped:
            status = self._stopped_line(runlog)
        except RunFailed as e:
            status = RunStatus.FAILED
            runlog.line(f"!!! {e.message}")
        except Exception as e:  # the work is user code; never lose the run
            log.failure("{job}: run raised", job=self.name)
            status = RunStatus.FAILED
            runlog.line(f"!!! {type(e).__name__}: {e}")
        else:
            if self._stop_reason is not None:
                status = self._stopped_line(runlog)
            else:
                status = RunStatus.SUCCESS
                runlog.line("=== DONE")
        finally:
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._timer = None
        # The work is over: another job may use the slot while this log is
        # flushed to disk (this job's next run still waits for it), and the
        # job no longer counts as running.  finish() gives the record its
        # status and end time at once.
        self.executing = False
        self.last_status = status
        release_slot()
        # The finish's thread step also prunes the old logs (listing and
        # unlinking wait on the disk: not on the reactor thread).
        finishing = runlog.finish(status, retention=self.job.log_retention)
        record = self.store.record(counter)  # with its status and end, from finish()
        await finishing
        if status is RunStatus.FAILED and self._retries(attempt):
            # Decided before the listeners hear of the run: a notification
            # or a chain waits for the last attempt.  The retry itself is
            # started by _ended, once this run has let go of everything.
            self.retry_pending = True
            self._retry_next = (request, attempt + 1, first)
        if record is not None:
            self._tell("run_finished", record)

    def _not_begun(
        self, request: Any, trigger: str | None, counter: int, attempt: int, first: int,
        error: OSError,
    ) -> None:
        """
        The run's log could not be created (out of descriptors, a full or
        read-only disk): the failure goes to karajo's own log, loudly, the
        job shows C{failed}, and C{retry} applies as after any failed run.
        """
        self.last_status = RunStatus.FAILED
        log.critical(
            "{job}: run #{counter} ({trigger}) failed before it began: its log"
            " could not be created: {error}",
            job=self.name,
            counter=counter,
            trigger=trigger,
            error=str(error),
        )
        if self._retries(attempt):
            self.retry_pending = True
            self._retry_next = (request, attempt + 1, first)

    def retry_lost(self, attempt: int, first: int) -> bool:
        """
        Attempt C{attempt} of this job was lost with the cluster node that
        ran it (ended C{failed} by L{karajo.cluster}): its retry, here, as
        after a failed run of this node.
        """
        if self.active or not self.running or not self._retries(attempt):
            return False
        wait = self.job.retry_wait(attempt).total_seconds()
        self._start(None, Trigger.RETRY, delay=wait, retry=(attempt + 1, first))
        return True

    def _retries(self, attempt: int) -> bool:
        """
        Whether a failed attempt is followed by a retry: the job asks for
        more, and no stop, pause or queued trigger decided otherwise.
        """
        return (
            attempt <= self.job.retry
            and not self.stopping
            and not self.paused
            and not self.queued
        )

    def _tell(self, event: str, record: RunRecord) -> None:
        tell(self.listeners, event, self, record)

    def _stopped_line(self, runlog) -> RunStatus:
        if self._stop_reason == TIMEOUT:
            assert self._timeout is not None
            runlog.line(f"!!! timed out after {format_duration(self._timeout)}")
            return RunStatus.FAILED
        if self._stop_reason == SHUTDOWN:
            runlog.line("??? CANCELED: karajo is stopping")
        else:
            runlog.line("??? CANCELED")
        return RunStatus.CANCELED

    def _stop(self, reason: str) -> None:
        if self.executing and self._stop_reason is None:
            self._stop_reason = reason
            self._work.stop()

    def _ended(self) -> None:
        self.active = False
        self._in_run = False
        if self._next_work is not None:
            self._adopt_work(*self._next_work)
        done, self._done = self._done, None
        retry, self._retry_next = self._retry_next, None
        if retry is not None and not self.stopping and not self.paused:
            # The same request again: a webhook's retry sees its payload.
            request, attempt, first = retry
            wait = self.job.retry_wait(attempt - 1)
            log.info(
                "{job}: run failed; retry {k}/{n} in {wait}",
                job=self.name, k=attempt - 1, n=self.job.retry, wait=format_duration(wait),
            )
            self._start(
                request, Trigger.RETRY, delay=wait.total_seconds(), retry=(attempt, first)
            )
        else:
            self.retry_pending = False
            queued = self._queued
            if queued is not None and not self.stopping:
                self._queued = None
                self._start(queued.request, queued.trigger, counter=queued.counter)
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
        why = "??? CANCELED: karajo is stopping"
        if self.queued:
            log.info("{job}: karajo is stopping; the queued run is dropped", job=self.name)
        self._drop_queued(why)
        if not self.active:
            return self._dropped_logs()
        done = self._done
        if self._drop_pending(why):
            log.info("{job}: karajo is stopping; the run waiting to start is dropped",
                     job=self.name)
        else:
            self._stop(SHUTDOWN)
        assert done is not None
        return done.addCallback(lambda _: self._dropped_logs())

    def _dropped_logs(self) -> defer.Deferred[None] | None:
        """Fires once the logs of the runs dropped before they started are final."""
        if not self._dropping:
            return None
        return defer.DeferredList(list(self._dropping), consumeErrors=True).addCallback(
            lambda _: None)
