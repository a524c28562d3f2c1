"""
Wire a validated environment's jobs into one L{MultiService}.

Each job gets a L{JobService}: its runner and, unless it is a webhook-only
job, its timer.  The HTTP listener is added above this layer, by
L{karajo.server.build_service}: services know nothing of the web.

Everything here takes the reactor, and a thread runner made from it, as
parameters and never imports the global reactor: only the entry points
pick it (L{karajo.tap} for twistd, L{karajo.make_service} for C{.tac}
files), and C{tests/integration} checks that no import installs one.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from attrs import evolve
from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from karajo.config import Loaded, generate_secret
from karajo.errors import JobBusy, JobPaused, ServerStopping, StartupError
from karajo.httpclients import HttpClients
from karajo.jobhttp import JobHttpWork
from karajo.joblog import LogStore, RestoredState
from karajo.model import Environment, Job, JobHttp, JobKind
from karajo.notify import Notifier
from karajo.paths import Paths
from karajo.process import leftover_group, signal_group
from karajo.run import JobRunner
from karajo.runlistener import RunListener
from karajo.runrecord import RunRecord
from karajo.schedule import parse_schedule
from karajo.status import RunStatus, Trigger
from karajo.timer import JobTimer
from karajo.work import CallableWork, CommandWork, Work, remove_payload

log = Logger()


def thread_runner(reactor) -> Callable[..., defer.Deferred]:
    """
    C{f, *args -> Deferred} on karajo's own thread pool for C{reactor}
    (L{karajo_pool}), whose threads leave signals and the CPU to the
    reactor's.  A reactor with no threads (a test's fake) runs C{f} inline
    instead.
    """
    if getattr(reactor, "getThreadPool", None) is None:
        return defer.maybeDeferred

    def run_in_thread(f: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred:
        return deferToThreadPool(reactor, karajo_pool(reactor), f, *args, **kwargs)

    return run_in_thread


#: The most threads of L{karajo_pool} (the reactor's own pool has as many).
POOL_THREADS = 10
_pools: weakref.WeakKeyDictionary[Any, ThreadPool] = weakref.WeakKeyDictionary()


def karajo_pool(reactor: Any) -> ThreadPool:
    """
    The thread pool of karajo's disk waits, bcrypt and file reads on
    C{reactor}: one per reactor, started at its first use (no thread is
    made before a task needs one) and stopped when the reactor shuts down;
    a new one after that.  Not the reactor's own pool, because its threads
    are changed for good (L{settle_pool_thread}), and a code job's
    C{deferToThread} or the resolver must not inherit that (a process
    spawned from a thread with SIGTERM blocked keeps it blocked).

    Started here rather than by a C{callWhenRunning}: a reactor that is
    spun without C{run} (trial's distributed workers) never fires its
    start-up event, and the first task then waited for ever.
    """
    pool = _pools.get(reactor)
    if pool is None or pool.joined:
        pool = _pools[reactor] = ThreadPool(0, POOL_THREADS, "karajo")
        pool.threadFactory = _SettledThread
        reactor.addSystemEventTrigger("during", "shutdown", pool.stop)
    if not pool.started:
        pool.start()
    return pool


class _SettledThread(threading.Thread):
    """A thread of L{karajo_pool}: settled before it takes its first task."""

    def run(self) -> None:
        settle_pool_thread()
        super().run()


#: What a pool thread blocks: every signal but those the kernel sends to
#: the thread at fault (left to it, so that faulthandler can report a
#: crash in a pool thread).
_POOL_THREAD_MASK = signal.valid_signals() - {
    signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGABRT,
}
#: How much nicer than the reactor's thread a pool thread is (Linux, where
#: a thread has a nice value of its own).
POOL_THREAD_NICER = 10


def settle_pool_thread() -> None:
    """
    In a thread of L{karajo_pool}: block the signals a process receives,
    and, on Linux, lower the thread's priority by L{POOL_THREAD_NICER}.

    The kernel hands a process-directed signal to any thread that does not
    block it: a pool thread asleep between two log finishes was woken for
    about half the runs' C{SIGCHLD}, only to write the byte that wakes the
    reactor.  Python runs its handlers in the main thread in any case.

    A pool thread's work is waiting on the disk (a log's fsync), bcrypt
    or a file read: nothing that should take the core from the reactor's
    thread, which answers webhooks and starts commands.  At an equal
    priority, each task's wake-up and each of its GIL hand-overs took it
    on a busy core; with the pool's weight lowered, the daemon's CPU per
    webhook run went down 6-12 % (bench/PROFILE.md, "Fourth round").
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, _POOL_THREAD_MASK)
    if sys.platform.startswith("linux"):
        tid = threading.get_native_id()
        try:
            nice = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(19, nice + POOL_THREAD_NICER))
        except OSError:
            pass  # a sandbox that forbids it: the thread keeps the daemon's priority


def stop_leftover_group(pid_path: str, job_id: str | None = None) -> None:
    """
    Kill the process group a crashed daemon left running (recorded in
    C{pid_path} while a command ran), so a restart never leaves orphans;
    a stale record (another boot, a reused number) kills nothing.
    """
    try:
        with open(pid_path) as f:
            pgid = leftover_group(f.read(), job_id)
    except FileNotFoundError:
        return
    if pgid is not None and signal_group(pgid, signal.SIGKILL):
        log.warn("killed process group {pgid} left by a previous run", pgid=pgid)
    os.unlink(pid_path)


class JobService(MultiService):
    """One job: its runner plus its timer (none for a webhook-only job)."""

    def __init__(
        self, runner: JobRunner, timer: JobTimer | None, pid_path: str | None,
        payload_path: str | None = None,
    ) -> None:
        super().__init__()
        self.runner = runner
        self.timer = timer
        self._pid_path = pid_path
        #: the state L{load} read before the service joined a running
        #: server (a job a reload adds): L{startService} adopts it
        self._loaded: RestoredState | None = None
        self._payload_path = payload_path
        self.setName(runner.name)
        runner.setServiceParent(self)
        if timer is not None:
            timer.setServiceParent(self)
            runner.listeners.append(timer)

    def load(self) -> RestoredState:
        """
        The blocking part of a start: kill what a crashed daemon left
        running, then read the job's logs and run records.  Touches nothing
        the reactor thread uses, so L{KarajoService} runs it in a thread.
        """
        if self._pid_path is not None:
            stop_leftover_group(self._pid_path, self.runner.job.id)
        # A webhook's body a crashed run left behind: after its process
        # group is gone, nothing reads it any more.
        if self._payload_path is not None and remove_payload(self._payload_path):
            log.info("removed the payload file {path} left by a previous run",
                     path=self._payload_path)
        return self.runner.store.load()

    def preload(self, state: RestoredState) -> None:
        """Keep what L{load} read (in a thread) for the L{startService} to come."""
        self._loaded = state

    def start(self, state: RestoredState) -> None:
        """Adopt what L{load} read, then start the runner and arm the timer."""
        self.runner.adopt(state)
        super().startService()

    def startService(self) -> None:
        """
        Started on its own (a test, a tool, a job a reload adds): adopt
        what L{preload} kept, else load inline, then start.
        """
        state, self._loaded = self._loaded, None
        self.start(state if state is not None else self.load())

    def replace_timer(self, timer: JobTimer | None) -> None:
        """
        A reload changed the job's timer: the old one stops now, the new
        one (if any) takes its place among the runner's listeners and is
        armed at once when the job runs.
        """
        old = self.timer
        listeners = self.runner.listeners
        at = 0
        if old is not None:
            if old in listeners:
                at = listeners.index(old)
                listeners.remove(old)
            old.disownServiceParent()
        self.timer = timer
        if timer is not None:
            listeners.insert(at, timer)
            timer.setServiceParent(self)

    @property
    def next_run(self) -> float | None:
        return self.timer.next_run if self.timer is not None else None


class Chains:
    """
    C{on_success} / C{on_failed} (docs/configuration.md, "Run policies"):
    a L{RunListener} of every job that names a chain, triggering the named
    C{[job]}s (trigger C{chain}) when a run ends so, after its last retry
    (a failed run that a retry follows triggers nothing).  A chained job
    that is paused, busy or stopping refuses as it would any trigger; that
    is logged, never raised into the runner.
    """

    def __init__(self, jobs: dict[str, JobService]) -> None:
        self._jobs = jobs
        #: a cluster node's way to start a chained job on its owner
        #: (L{karajo.cluster}); None on a single server
        self.relay: Callable[[str, RunRecord, str], Any] | None = None

    def run_started(self, runner: JobRunner, record: RunRecord) -> None:
        pass

    def run_finished(self, runner: JobRunner, record: RunRecord) -> None:
        if runner.retry_pending:
            return
        job = runner.job
        if record.status is RunStatus.SUCCESS:
            targets = getattr(job, "on_success", ())
        elif record.status is RunStatus.FAILED:
            targets = getattr(job, "on_failed", ())
        else:
            return
        for target in dict.fromkeys(targets):
            svc = self._jobs.get(target)
            if svc is None:  # validate() refuses this; a code-built server may not
                log.error("{job}: chained job {target} does not exist", job=runner.name,
                          target=target)
                continue
            if self.relay is not None:
                self.relay(target, record, str(runner.name))
                continue
            try:
                started = svc.runner.trigger(None, deferred=True, trigger=Trigger.CHAIN)
            except (JobBusy, JobPaused, ServerStopping) as e:
                log.warn("{job}: run {counter} chains to {target}, which refused: {why}",
                         job=runner.name, counter=record.counter, target=target, why=str(e))
            else:
                log.info("{job}: run {counter} {status}; chained job {target} {started}",
                         job=runner.name, counter=record.counter, status=str(record.status),
                         target=target, started=started)


class ReloadListener(Protocol):
    """
    Whatever keeps something of the configuration beside the job tables
    (the site's documents, sessions and metrics): told after each
    successful reload, once C{service.env} and the job tables are the
    new ones (docs/behaviour.md, "Reloading").
    """

    def reloaded(
        self, service: KarajoService, added: Sequence[JobService], removed: Sequence[JobService]
    ) -> None:
        """
        C{added}: the jobs that now run; C{removed}: those no longer
        listed (a run of one may still be finishing).
        """


class KarajoService(MultiService):
    """The whole server: one L{JobService} per job (plus the HTTP listener L{karajo.server} adds)."""

    def __init__(self, env: Environment, run_in_thread: Callable[..., defer.Deferred]) -> None:
        super().__init__()
        self.env = env
        self.run_in_thread = run_in_thread
        #: True once every job has its state back and every child started
        self.ready = False
        self._waiting: list[defer.Deferred[None]] = []
        self.slots = defer.DeferredSemaphore(env.max_job_running)
        self.jobs: dict[str, JobService] = {}
        self.http_jobs: dict[str, JobService] = {}
        #: things to close once every child has stopped (connection pools)
        self.closers: list[Callable[[], Any]] = []
        self.notifier: Notifier | None = None
        #: what builds the jobs a reload adds or changes
        self.paths = Paths(env.dir_base)
        self.reactor: Any = None
        self.http_clients: HttpClients | None = None
        self.chains = Chains(self.jobs)
        #: told of each successful reload (the site: documents, sessions, metrics)
        self.reload_listeners: list[ReloadListener] = []
        #: reloads by result (C{success}, C{failure}), for the metrics page
        self.reloads: dict[str, int] = {"success": 0, "failure": 0}
        #: this node's L{karajo.cluster.ClusterService} with C{[cluster]}, else None
        self.cluster: Any = None

    def stopService(self) -> defer.Deferred:
        d = defer.maybeDeferred(super().stopService)

        def close(_):
            return defer.gatherResults(
                [defer.maybeDeferred(close) for close in self.closers], consumeErrors=True
            )

        return d.addCallback(close).addCallback(lambda _: None)

    def privilegedStartService(self) -> None:
        """Listen (twistd calls this first); an address in use stops the start."""
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            reason = getattr(e.socketError, "strerror", None) or str(e.socketError)
            raise StartupError(
                f"cannot listen on {self.env.listen_address}: {reason}"
            ) from None

    def startService(self) -> None:
        """
        Read every job's logs and run records in one step off the reactor
        thread (10,000 jobs are 20,000 directory scans), then start the
        children in order: jobs adopt their state and arm their timers.
        Until then nothing can run (no timer is armed) and the site holds
        requests that need the jobs (L{when_ready}).
        """
        Service.startService(self)
        children = list(self)
        jobs = [c for c in children if isinstance(c, JobService)]
        d = self.run_in_thread(lambda: [job.load() for job in jobs])
        d.addCallback(self._start_children, children, jobs)
        d.addErrback(self._not_started)

    def _start_children(
        self, states: list[RestoredState], children: list[Any], jobs: list[JobService]
    ) -> None:
        if not self.running:  # stopped while loading
            return
        state_of = dict(zip(map(id, jobs), states, strict=True))
        for child in children:
            if isinstance(child, JobService):
                child.start(state_of[id(child)])
            else:
                child.startService()
        # Everything built so far (thousands of jobs' objects) lives as long
        # as the daemon: keep it out of the cyclic collector, whose full
        # passes over it would otherwise stall timers and requests for tens
        # of milliseconds at a time.
        gc.freeze()
        self.ready = True
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def _not_started(self, failure: Failure) -> None:
        log.failure("karajo could not read its jobs' state; nothing will run", failure)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(failure)

    def when_ready(self) -> defer.Deferred[None]:
        """Fires once every job is started (at once when it is)."""
        if self.ready:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._waiting.append(d)
        return d

    def job_service(self, kind: str, job_id: str) -> JobService | None:
        table = self.jobs if kind == JobKind.JOB else self.http_jobs
        return table.get(job_id)


def build_job_service(
    job: Job | JobHttp,
    work: Work,
    paths: Paths,
    slots: defer.DeferredSemaphore,
    clock,
    run_in_thread: Callable[..., Any],
    pid_path: str | None = None,
    listeners: Sequence[RunListener] = (),
) -> JobService:
    """A job's runner and timer, on its own log directory."""
    store = LogStore(
        paths.log_dir(job.kind, job.id),
        job.id,
        kind=job.kind,
        clock=clock,
        run_in_thread=run_in_thread,
        state_path=paths.state_file(job.kind, job.id),
    )
    runner = JobRunner(job, work, store, slots, clock, timeout=job.timeout)
    payload_path = paths.payload_file(job.kind, job.id) if pid_path is not None else None
    service = JobService(runner, job_timer(job, runner, clock), pid_path, payload_path)
    runner.listeners.extend(listeners)
    return service


def job_timer(
    job: Job | JobHttp, runner: JobRunner, clock, catch_up_at_start: bool = True
) -> JobTimer | None:
    """
    The timer of C{job} firing C{runner}, or None for a webhook-only job.
    A reload builds one for a changed timer (without a catch-up at start:
    karajo was not down).
    """
    if not job.schedule and job.interval is None:
        return None
    label = runner.name
    assert label is not None  # JobRunner names itself kind/ID; Service types it optional
    zone = ZoneInfo(job.timezone) if job.timezone else None

    def fire() -> None:
        runner.trigger(None, deferred=True)

    def fire_catch_up() -> None:
        runner.trigger(None, deferred=True, trigger=Trigger.CATCH_UP)

    def busy() -> bool:
        # Under overlap = replace a fire replaces the run; else a fire
        # while the job runs is dropped (queue: as always; skip: by name).
        # The runner's job: the one in force after a reload.
        return runner.active and runner.job.overlap != "replace"

    return JobTimer(
        clock,
        fire,
        schedule=parse_schedule(job.schedule, zone) if job.schedule else None,
        interval=None if job.schedule else job.interval,
        last_run=lambda: runner.last_run,
        is_paused=lambda: runner.paused,
        is_busy=busy,
        label=label,
        catch_up=job.catch_up,
        fire_catch_up=fire_catch_up,
        random_delay=job.random_delay,
        catch_up_at_start=catch_up_at_start,
    )


def job_work(
    job: Job, paths: Paths, reactor, run_in_thread: Callable[..., Any] = defer.maybeDeferred
) -> tuple[Work, str | None]:
    """The work of a command or code job, and where it records its pgid."""
    if job.call is not None:
        return CallableWork(job), None
    pid_path = paths.state_file(job.kind, job.id) + ".pgid"
    work = CommandWork(
        reactor, reactor, job.commands, paths.work_dir(job.kind, job.id), pid_path, run_in_thread,
        job_id=job.id, env=job.resolved_env,
        payload_path=paths.payload_file(job.kind, job.id), payload_vars=job.payload_vars,
    )
    return work, pid_path


def build_job_services(
    loaded: Loaded, reactor, run_in_thread: Callable[..., Any], notifier: Notifier | None = None,
    cluster_store: Any = None,
) -> KarajoService:
    """
    Build the jobs of C{loaded}: create the directory tree, fill in a
    generated secret when none is set, and add every job's service.

    @param run_in_thread: C{f, *args -> Deferred} for disk waits (fsync,
        rename, pruning, log reads), normally L{thread_runner}C{(reactor)}.
    @param cluster_store: with C{[cluster]}, the shared database (tests);
        by default the PostgreSQL one.
    """
    env = loaded.environment
    for warning in loaded.warnings:
        # Not "warning=": legacy log observers (trial's among them) take an
        # event with that key for a Python warning and fail on it.
        log.warn("{config_warning}", config_warning=warning)
    if not env.secret:
        env = evolve(env, secret=generate_secret())
        # The operator needs this value to sign requests; it is printed once
        # to the terminal, never written to the log.
        sys.stderr.write(
            f"karajo: no secret is set; generated secret for this run: {env.secret}\n"
        )
        log.warn("no [karajo] secret set; a random one was generated for this run")

    paths = Paths(env.dir_base)
    try:
        paths.ensure()
    except OSError as e:
        raise StartupError(
            f"dir_base {env.dir_base}: cannot create {e.filename}: {e.strerror}"
        ) from None
    service = KarajoService(env, run_in_thread)
    service.reactor = reactor
    if notifier is None and env.notifs:
        notifier = Notifier(env.notifs, reactor, server_name=env.name)
    if notifier is not None:
        service.notifier = notifier
        # A child: its queue stops with the service tree.
        notifier.setServiceParent(service)
    for job in env.jobs.values():
        add_job(service, job).setServiceParent(service)
    for http_job in env.http_jobs.values():
        add_job(service, http_job).setServiceParent(service)
    if env.cluster is not None:
        # Imported only here: a single server loads nothing of the cluster.
        from karajo.cluster import add_cluster

        add_cluster(service, reactor, cluster_store)
    return service


def new_job_service(
    service: KarajoService, job: Job | JobHttp, env: Environment | None = None
) -> JobService:
    """
    The service of C{job} on C{service}'s paths, slots, notifier and
    chains, not yet listed nor a child: at start-up and for a job a
    reload adds (C{env}: the environment it comes with, by default the
    service's).
    """
    listeners: tuple[RunListener, ...] = ()
    if service.notifier is not None:
        listeners = (service.notifier,)
    if isinstance(job, JobHttp):
        child = build_job_service(
            job, job_work_of(service, job, env)[0], service.paths, service.slots,
            service.reactor, service.run_in_thread, None, listeners,
        )
    else:
        work, pid_path = job_work_of(service, job, env)
        child = build_job_service(
            job, work, service.paths, service.slots, service.reactor, service.run_in_thread,
            pid_path, listeners,
        )
        # Every [job] hears its chains: a reload may give it some.
        child.runner.listeners.append(service.chains)
    return child


def job_work_of(
    service: KarajoService, job: Job | JobHttp, env: Environment | None = None
) -> tuple[Work, str | None]:
    """
    The work of either kind of job on C{service} (a JobHttp's on the
    server's one L{HttpClients}, made with the first one), and where a
    command job records its pgid.
    """
    if isinstance(job, JobHttp):
        if service.http_clients is None:
            service.http_clients = HttpClients(service.reactor)
        env = env if env is not None else service.env
        return JobHttpWork(job, env, service.reactor, service.http_clients), None
    return job_work(job, service.paths, service.reactor, service.run_in_thread)


def add_job(service: KarajoService, job: Job | JobHttp) -> JobService:
    """Build C{job}'s service and list it in C{service}'s table of its kind."""
    child = new_job_service(service, job)
    table = service.jobs if job.kind == JobKind.JOB else service.http_jobs
    table[job.id] = child
    return child
