"""
Reloading the configuration on C{SIGHUP} (docs/behaviour.md, "Reloading").

Two steps.  L{plan} is pure: it compares the running environment with a
newly read one and says which jobs are added, removed and changed (keyed
by kind and job ID), and which settings only a restart can change.
L{Reloader} does the rest on a live L{KarajoService}: it reads and
validates every file off the reactor thread, builds the added jobs and
reads their state (also off the thread), and only then, in one reactor
turn, swaps: nothing is touched until the whole new configuration is
known to be good, so any error leaves the running one in force.

A changed job keeps its L{karajo.run.JobRunner} (counter, records, pause,
a run in progress) and takes its new value and work for its next run; a
removed one stops its timer at once and is taken out of the server once
a run in progress has finished; an added one starts as at start-up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from attrs import evolve, frozen
from twisted.internet import defer
from twisted.logger import Logger

from karajo.config import Loaded, load_environment
from karajo.errors import ConfigError
from karajo.kinds import JobKind
from karajo.model import Environment, Job, JobHttp, Origin
from karajo.notify import Notifier
from karajo.service import (
    JobService,
    KarajoService,
    job_timer,
    job_work_of,
    new_job_service,
)

__all__ = ["RESTART_KEYS", "Plan", "Reloader", "plan"]

log = Logger()

#: C{[karajo]} keys a reload cannot change: the listening socket, the
#: directory tree, the shared run slots, the site's body cap and public
#: directory are all made once at start-up.  A change is warned about and
#: the running value stays until the next restart.
RESTART_KEYS = ("listen_address", "dir_base", "max_job_running", "max_body_size", "dir_public")

#: the fields of a job its timer is made of
_TIMER_FIELDS = ("schedule", "interval", "timezone", "catch_up", "random_delay")

AnyJob = Job | JobHttp
Key = tuple[JobKind, str]


def jobs_by_key(env: Environment) -> dict[Key, AnyJob]:
    """Every job of C{env} by (kind, job ID), in config order."""
    table: dict[Key, AnyJob] = {}
    for job in env.jobs.values():
        table[(JobKind.JOB, job.id)] = job
    for http_job in env.http_jobs.values():
        table[(JobKind.JOB_HTTP, http_job.id)] = http_job
    return table


def timer_changed(old: AnyJob, new: AnyJob) -> bool:
    """Whether C{new} needs another timer than C{old}."""
    return any(getattr(old, f) != getattr(new, f) for f in _TIMER_FIELDS)


def _at(origin: Origin, key: str) -> str:
    line = origin.line_of(key)
    return f"{origin.filename}:{line}" if line is not None else origin.filename


@frozen
class Plan:
    """
    What a reload does, decided before anything is touched.

    @ivar env: the environment that runs from now on: the new one, with
        the running values of L{RESTART_KEYS} and, when the new one sets
        no secret, the running secret (a generated one was shown once).
    @ivar added: jobs to build and start.
    @ivar removed: jobs to stop, by (kind, job ID).
    @ivar changed: jobs whose next run takes the new value.
    @ivar restart: warnings, C{FILE:LINE: reason}, for settings only a
        restart applies.
    """

    env: Environment
    added: tuple[AnyJob, ...]
    removed: tuple[Key, ...]
    changed: tuple[AnyJob, ...]
    restart: tuple[str, ...]


def plan(running: Environment, new: Environment) -> Plan:
    """Compare the running environment with a validated new one (pure)."""
    restart = []
    kept: dict[str, Any] = {}
    for key in RESTART_KEYS:
        before, after = getattr(running, key), getattr(new, key)
        if before != after:
            kept[key] = before
            restart.append(
                f"{_at(new.origin, key)}: {key} changed from {before!r} to {after!r}; "
                "it takes effect at the next restart"
            )
    if running.cluster != new.cluster:
        # Never shown: the database string may hold a password.
        kept["cluster"] = running.cluster
        where = (new.cluster or running.cluster or new).origin
        restart.append(f"{where.filename}:{where.line}: [cluster] changed; "
                       "it takes effect at the next restart")
    if not new.secret:
        kept["secret"] = running.secret
    env = evolve(new, **kept)

    old_jobs, new_jobs = jobs_by_key(running), jobs_by_key(env)
    # A JobHttp's request is signed with the global secret (when it has
    # none of its own) and times out by the global http_timeout.
    http_env_changed = (running.secret, running.http_timeout) != (env.secret, env.http_timeout)
    added = tuple(job for key, job in new_jobs.items() if key not in old_jobs)
    removed = tuple(key for key in old_jobs if key not in new_jobs)
    changed = tuple(
        job
        for key, job in new_jobs.items()
        if key in old_jobs
        and (old_jobs[key] != job or (key[0] is JobKind.JOB_HTTP and http_env_changed))
    )
    return Plan(env, added, removed, changed, tuple(restart))


class Reloader:
    """
    Reloads C{service} from the main file C{path}.  One reload at a time:
    a request while one runs makes one more follow it.

    @param environ: the environment C{$VAR} credentials are read from;
        the daemon took them out of its own at start-up (L{karajo.scrub}),
        so the tap passes the values it read then.
    @param load: reads and validates the files (tests pass their own).
    """

    def __init__(
        self,
        service: KarajoService,
        path: str,
        environ: Mapping[str, str] | None = None,
        *,
        load: Callable[[str, Mapping[str, str] | None], Loaded] = load_environment,
    ) -> None:
        self._service = service
        self._path = path
        self._environ = environ
        self._load = load
        self._running: defer.Deferred[bool] | None = None
        self._again = False
        #: removed jobs whose last run still goes on, by (kind, job ID)
        self.retiring: dict[Key, JobService] = {}

    def reload(self) -> defer.Deferred[bool]:
        """
        Read every file again and apply it; fires True when the new
        configuration is in force, False when the old one stays.
        """
        if self._running is not None:
            self._again = True
            return self._running
        d = self._running = defer.ensureDeferred(self._reload())

        def done(result: bool) -> Any:
            self._running = None
            if self._again:
                self._again = False
                return self.reload()
            return result

        return d.addCallback(done)

    async def _reload(self) -> bool:
        service = self._service
        log.info("reloading the configuration from {path}", path=self._path)
        try:
            loaded: Loaded = await service.run_in_thread(
                self._load, self._path, self._environ
            )
            steps = plan(service.env, loaded.environment)
            fresh, revived = self._build(steps)
            states = await service.run_in_thread(lambda: [svc.load() for svc in fresh])
        except ConfigError as e:
            for warning in e.warnings:
                log.warn("{config_warning}", config_warning=warning)
            log.error(
                "configuration not reloaded; the running one stays in force: {config_error}",
                config_error=str(e),
            )
            service.reloads["failure"] += 1
            return False
        except Exception:
            log.failure("configuration not reloaded; the running one stays in force")
            service.reloads["failure"] += 1
            return False
        if not service.running:
            log.info("karajo is stopping; the reload is dropped")
            return False
        for warning in loaded.warnings:
            log.warn("{config_warning}", config_warning=warning)
        for warning in steps.restart:
            log.warn("{config_warning}", config_warning=warning)
        self._apply(steps, dict(zip(map(id, fresh), states, strict=True)), fresh, revived)
        service.reloads["success"] += 1
        log.info(
            "configuration reloaded: {added} added, {removed} removed, {changed} changed",
            added=len(steps.added), removed=len(steps.removed), changed=len(steps.changed),
        )
        return True

    def _build(self, steps: Plan) -> tuple[list[JobService], list[AnyJob]]:
        """
        The services of the added jobs, built beside the running ones
        (nothing listed or started yet); a job removed by an earlier
        reload whose last run still goes on is revived instead, so two
        runners never share a job's logs and counter.
        """
        fresh, revived = [], []
        for job in steps.added:
            if (job.kind, job.id) in self.retiring:
                revived.append(job)
            else:
                fresh.append(new_job_service(self._service, job, steps.env))
        return fresh, revived

    def _apply(
        self, steps: Plan, states: dict[int, Any], fresh: list[JobService],
        revived: list[AnyJob],
    ) -> None:
        """The swap, in one reactor turn."""
        service = self._service
        env = service.env = steps.env
        self._notifier(env, fresh)

        for job in steps.changed:
            svc = service.job_service(job.kind, job.id)
            assert svc is not None  # the plan was made against these tables
            self._reconfigure(svc, job, env)
            log.info("{kind} {job} changed; its next run uses the new configuration",
                     kind=str(job.kind), job=job.id)

        removed: list[JobService] = []
        for kind, job_id in steps.removed:
            table = service.jobs if kind is JobKind.JOB else service.http_jobs
            svc = table.pop(job_id)
            removed.append(svc)
            self._retire((kind, job_id), svc)

        added: list[JobService] = []
        for job in revived:
            svc = self.retiring.pop((job.kind, job.id))
            svc.runner.unretire()
            self._reconfigure(svc, job, env, force_timer=True)
            added.append(svc)
        for svc in fresh:
            svc.preload(states[id(svc)])
            svc.setServiceParent(service)
            added.append(svc)
        by_key = {(svc.runner.job.kind, svc.runner.job.id): svc for svc in added}
        for svc in added:
            log.info("{job} added", job=svc.name)

        # The tables in the new config's order, changed in place (the
        # chains and the site hold them).
        for kind, table, jobs in (
            (JobKind.JOB, service.jobs, env.jobs),
            (JobKind.JOB_HTTP, service.http_jobs, env.http_jobs),
        ):
            order = {}
            for job in jobs.values():
                svc = table.get(job.id) or by_key[(kind, job.id)]
                order[job.id] = svc
            table.clear()
            table.update(order)
        for listener in list(service.reload_listeners):
            try:
                listener.reloaded(service, added, removed)
            except Exception:
                log.failure("a reload listener failed")

    def _reconfigure(
        self, svc: JobService, job: AnyJob, env: Environment, force_timer: bool = False
    ) -> None:
        service = self._service
        runner = svc.runner
        old = runner.job
        work, _ = job_work_of(service, job, env)
        runner.reconfigure(job, work)
        if force_timer or timer_changed(old, job):
            svc.replace_timer(job_timer(job, runner, service.reactor, catch_up_at_start=False))

    def _retire(self, key: Key, svc: JobService) -> None:
        """
        Stop a removed job's timer now; once a run in progress has ended
        (its log final), take the job out of the server.  Its logs stay.
        """
        svc.replace_timer(None)
        self.retiring[key] = svc
        if svc.runner.active:
            log.info("{job} removed; its run in progress finishes first", job=svc.name)
        else:
            log.info("{job} removed", job=svc.name)

        def gone(_: object) -> None:
            if self.retiring.get(key) is not svc:
                return  # revived by a later reload
            del self.retiring[key]
            if svc.parent is not None:
                svc.disownServiceParent()

        svc.runner.retire().addCallback(gone).addErrback(
            lambda f: log.failure("stopping removed job {job} failed", f, job=svc.name)
        )

    def _notifier(self, env: Environment, fresh: Sequence[JobService]) -> None:
        """The notifs of C{env} for the notifier (made now if the first ones came)."""
        service = self._service
        notifier = service.notifier
        if notifier is not None:
            notifier.reconfigure(env.notifs, env.name)
            return
        if not env.notifs:
            return
        notifier = service.notifier = Notifier(env.notifs, service.reactor, server_name=env.name)
        notifier.setServiceParent(service)
        # Right after the timer, where a notifier made at start-up sits.
        for svc in [*service.jobs.values(), *service.http_jobs.values(), *fresh]:
            listeners = svc.runner.listeners
            at = 1 if svc.timer is not None and listeners[:1] == [svc.timer] else 0
            listeners.insert(at, notifier)
