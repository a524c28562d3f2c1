"""
One node of a karajo cluster (docs/cluster.md): several karajo processes
started from the same configuration share one PostgreSQL database (a
L{ClusterStore}) and act as one service.

The idea: every job has one OWNER among the alive nodes (L{ownership},
from the node list read at each heartbeat); all its runs happen there, so
the node's own L{karajo.run.JobRunner} keeps overlap, queue, retry, pause
and timeout cluster-wide unchanged.  What the database adds, as referee
while nodes briefly disagree about ownership:

  - every timer fire is CLAIMED before it runs (one statement per reactor
    turn for all fires of the turn); only a won claim fires;
  - every run begins only if the job is not running on another node
    (L{ClusterService._gate}, the runner's C{gate});
  - counters come from blocks reserved in the database (the runner's
    C{counters}), so C{$ID.$N} names one run in the whole cluster;
  - webhooks, run_now, pause, resume and cancel that reach a node that is
    not the owner are FORWARDED to it and answered as it answers;
  - run begins and ends, live log bytes (every second at most) and final
    logs are written to the database through an ordered
    L{karajo.outbox.Outbox} (live logs by L{karajo.clusterlogs}), which
    keeps them while the database is unreachable and sends them when it is
    back; every node MIRRORS every run record, for its API and dashboard.

A node that stops heartbeating for C{node_timeout} is REAPED by another:
its running runs end C{failed} naming it, and the job's new owner retries
them when the job asks for retries.  While the database is unreachable a
node finishes what runs, starts no scheduled run (the slot is remembered
as missed; C{catch_up} decides when the database is back) and answers
triggers with L{ClusterUnavailable} (503).

Nothing of this module is imported without C{[cluster]}; the PostgreSQL
store (and psycopg) only through L{open_store}.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import importlib
from collections.abc import Callable, Iterable
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from karajo import ownership
from karajo.clusterlogs import LogShipper, remote_feed
from karajo.clusterstore import (
    RECONNECTED,
    Answer,
    ClusterStore,
    Forwarded,
    NodeInfo,
    StoredRun,
    Unavailable,
)
from karajo.errors import (
    ClusterUnavailable,
    JobBusy,
    JobPaused,
    RunRefused,
    ServerStarting,
    ServerStopping,
)
from karajo.logfeed import LogFeed
from karajo.model import Cluster, TriggerRequest
from karajo.outbox import Outbox, within
from karajo.runrecord import LogName, RunRecord
from karajo.status import RunStatus, Trigger

__all__ = [
    "COUNTER_BLOCK",
    "FORWARD_WAIT",
    "ClusterService",
    "add_cluster",
    "open_store",
]

log = Logger()

#: How long a node waits for a job's owner to answer a forwarded request.
FORWARD_WAIT = 5.0
#: Counters reserved at once per job; the next block is fetched at half.
COUNTER_BLOCK = 8
#: How often a node bounds the database's old slots, replay keys and requests.
PRUNE_EVERY = 300.0

Key = tuple[str, str]

#: Actions a node acts on for a job (its own, or forwarded to it).
RUN = "run"
PAUSE = "pause"
RESUME = "resume"
CANCEL = "cancel"
#: A run lost with a dead node: C{retry:ATTEMPT:FIRST} (the attempt lost,
#: the counter of the first attempt).
RETRY = "retry"


def open_store(cluster: Cluster, reactor: Any) -> ClusterStore:
    """
    The PostgreSQL store of C{cluster}; psycopg is imported here, only
    when a C{[cluster]} is configured (C{pip install karajo[cluster]}).
    """
    pgstore = importlib.import_module("karajo.pgstore")
    store: ClusterStore = pgstore.PgStore(reactor, cluster.database)
    return store


class ClusterService(Service):
    """
    This node's part of the cluster (see the module docstring), a child of
    the L{karajo.service.KarajoService} whose jobs it hooks (L{attach}).

    @param service: the server (its job tables, C{job_service}).
    @param cluster: the C{[cluster]} settings.
    @param store: the shared database.
    @param clock: time.
    @param version: this node's karajo version; @param digest: its
        configuration digest (L{karajo.digest}).
    """

    name = "cluster"

    def __init__(
        self, service: Any, cluster: Cluster, store: ClusterStore, clock: IReactorTime,
        *, version: str, digest: str,
    ) -> None:
        self._service = service
        self.store = store
        self._clock = clock
        self.me = cluster.node
        self.version = version
        self.digest = digest
        self._heartbeat = cluster.heartbeat.total_seconds()
        self._node_timeout = cluster.node_timeout.total_seconds()
        self._started_at = clock.seconds()
        #: every node the database lists, by name (the API shows them)
        self.nodes: dict[str, NodeInfo] = {}
        #: the names of the alive nodes, sorted: what ownership is computed over
        self.alive: tuple[str, ...] = ()
        self._owners: dict[Key, str | None] = {}
        #: the database answered the last statement; since when (clock time)
        self.connected = False
        self.connected_since: float | None = None
        self._migrated = False
        self._restart_checked = False
        self.outbox = Outbox(self._lost)
        self._runners: dict[Key, Any] = {}
        self._counters: dict[Key, collections.deque[int]] = {}
        self._refilling: dict[Key, defer.Deferred[None]] = {}
        self._claims: list[tuple[Key, float, Callable[[], Any]]] = []
        self._claim_call: IDelayedCall | None = None
        #: the newest slot of each job skipped while the database was away
        self._missed: dict[Key, float] = {}
        #: the newest slot of each job left to the owner of the time
        self._skipped: dict[Key, tuple[float, str | None, Callable[[], Any]]] = {}
        #: local runs the cluster ended while this node was cut off
        self._abandoned: set[tuple[str, str, int]] = set()
        self.logs = LogShipper(store, self.outbox, clock)
        self._mirror: dict[Key, dict[int, RunRecord]] = {}
        self._answers: dict[int, defer.Deferred[Answer]] = {}
        self._ends: list[defer.Deferred] = []
        self._beat_call: IDelayedCall | None = None
        self._fetching: set[tuple[str, str, int]] = set()
        self._pruned_at: float | None = None

    # --- hooks into the jobs -------------------------------------------------

    def attach(self, svc: Any) -> None:
        """
        Hook one job's runner and timer (at start, and for a job a reload
        adds): counters from the database, the begin guard, the records
        of every node, the claim of each timer fire, and this service
        among the runner's listeners (run begins and ends shipped).
        """
        runner = svc.runner
        key = (str(runner.job.kind), runner.job.id)
        self._runners[key] = runner
        runner.store.node = self.me
        runner.counters = functools.partial(self.take_counter, key)
        runner.gate = self._gate
        runner.mirror = functools.partial(self.records_of, key, runner)
        if self not in runner.listeners:
            runner.listeners.append(self)
        self.attach_timer(svc)

    def attach_timer(self, svc: Any) -> None:
        """Claim each fire of C{svc}'s timer (a reload may have replaced it)."""
        if svc.timer is not None:
            runner = svc.runner
            key = (str(runner.job.kind), runner.job.id)
            svc.timer.gate = functools.partial(self._fire, key)

    def detach(self, svc: Any) -> None:
        runner = svc.runner
        self._runners.pop((str(runner.job.kind), runner.job.id), None)

    def reloaded(self, service: Any, added: Iterable[Any], removed: Iterable[Any]) -> None:
        """A reload: hook the added jobs, and every job's timer (a changed one is new)."""
        for svc in removed:
            self.detach(svc)
        for svc in added:
            self.attach(svc)
        for table in (service.jobs, service.http_jobs):
            for svc in table.values():
                self.attach_timer(svc)

    # --- service -------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.store.listen(self._heard)
        self._beat()

    def stopService(self) -> None:
        super().stopService()
        for call in (self._beat_call, self._claim_call):
            if call is not None and call.active():
                call.cancel()
        self._beat_call = self._claim_call = None

    async def close(self) -> None:
        """
        After every run stopped (L{karajo.service.KarajoService.closers}):
        ship the ends and logs still on their way, for a bounded time,
        then close the connections.
        """
        self.logs.stop()
        pending = defer.DeferredList(list(self._ends), consumeErrors=True)
        await within(self._clock, pending, FORWARD_WAIT)
        drained: defer.Deferred = self.outbox.put(lambda: defer.succeed(None))
        await within(self._clock, drained, FORWARD_WAIT)
        await self.store.close()

    # --- heartbeat, membership, outage -----------------------------------------

    def _beat(self) -> None:
        self._beat_call = None
        d = defer.ensureDeferred(self._heartbeat_once())
        d.addErrback(lambda f: log.failure("cluster: heartbeat failed", f))

        def again(_: object) -> None:
            if self.running:
                self._beat_call = self._clock.callLater(self._heartbeat, self._beat)

        d.addBoth(again)

    def me_info(self) -> NodeInfo:
        running = sum(1 for r in self._runners.values() if r.executing)
        return NodeInfo(self.me, True, self._clock.seconds(), running, self.version,
                        self.digest, self._started_at)

    async def _heartbeat_once(self) -> None:
        try:
            if not self._migrated:
                await self.store.migrate()
                self._migrated = True
            nodes = await self.store.heartbeat(self.me_info())
        except Unavailable:
            self._lost()
            return
        self._seen(nodes)
        if not self.connected:
            if not await self._reconnected():
                return
        since = self.connected_since
        if since is None or self._clock.seconds() - since < self._node_timeout:
            return  # not connected long enough to tell a dead node from our outage
        try:
            lost = await self.store.reap(self._node_timeout, self.me)
            now = self._clock.seconds()
            if self._pruned_at is None or now - self._pruned_at >= PRUNE_EVERY:
                self._pruned_at = now
                await self.store.prune(now)
        except Unavailable:
            self._lost()
            return
        self._reaped(lost)

    def _seen(self, nodes: Iterable[NodeInfo]) -> None:
        self.nodes = {n.name: n for n in nodes}
        alive = tuple(sorted(n.name for n in self.nodes.values() if n.alive))
        if alive != self.alive:
            log.info("cluster: alive nodes: {nodes}", nodes=" ".join(alive))
            gone = set(self.alive) - set(alive)
            self.alive = alive
            self._owners.clear()
            # Counters in hand of jobs now run elsewhere are dropped (a gap):
            # kept, they would come back older than the new owner's.
            for key in [k for k in self._counters if self.owner_of(*k) != self.me]:
                del self._counters[key]
            if gone:
                self._take_over(gone)

    def _take_over(self, gone: set[str]) -> None:
        """
        Nodes found dead: the slots they were due to run since they went
        silent (at most C{node_timeout} and four heartbeats ago) are
        claimed by their jobs' new owners, so a slot due while the dead
        node was not yet known dead still runs, once (the claim tells
        whether the dead node ran it before it died).
        """
        horizon = self._clock.seconds() - self._node_timeout - 4 * self._heartbeat
        for key, (slot, was, fire) in list(self._skipped.items()):
            if slot < horizon:
                del self._skipped[key]
            elif was in gone and self.owner_of(*key) == self.me:
                del self._skipped[key]
                log.info("{kind}/{job}: taking over a slot of lost node {node}",
                         kind=key[0], job=key[1], node=was)
                self._fire(key, slot, fire)

    def _lost(self) -> None:
        """A statement failed with L{Unavailable}: the database is away."""
        if self.connected:
            log.warn("cluster: the database is unreachable; node {node} finishes what runs, "
                     "starts no scheduled run and answers triggers 503 until it is back",
                     node=self.me)
        self.connected = False
        self.connected_since = None

    async def _reconnected(self) -> bool:
        """
        The database answers (at start, or after an outage): leftover runs
        of a restart ended, pauses and the run mirror read again, held
        writes sent, local runs the others reaped meanwhile canceled,
        missed slots caught up.  C{False} when it went away again.
        """
        try:
            if not self._restart_checked:
                for stored in await self.store.restarted(self.me):
                    log.warn("cluster: run {counter} of {kind}/{job} was running when node "
                             "{node} stopped; marked failed", counter=stored.record.counter,
                             kind=stored.kind, job=stored.record.job_id, node=self.me)
                self._restart_checked = True
            paused = await self.store.paused_jobs()
            runs = await self.store.runs()
        except Unavailable:
            self._lost()
            return False
        self.connected = True
        self.connected_since = self._clock.seconds()
        log.info("cluster: node {node} is connected to the database", node=self.me)
        # Cut off, this node may have been taken for dead and its jobs run
        # elsewhere meanwhile: counters in hand would come back older.
        self._counters.clear()
        self._apply_pauses(paused)
        for stored in runs:
            self._mirror_put(stored.kind, stored.record)
        self.outbox.release()
        await self._cancel_reaped()
        self._catch_up()
        return True

    def _apply_pauses(self, paused: set[tuple[str, str]]) -> None:
        for key, runner in self._runners.items():
            if (key in paused) != runner.paused:
                runner.pause() if key in paused else runner.resume()

    async def _cancel_reaped(self) -> None:
        """Local runs the database says ended (reaped while this node was cut off) stop."""
        for key, runner in list(self._runners.items()):
            if not runner.executing:
                continue
            for record in runner.store.records():
                if record.status is not RunStatus.RUNNING:
                    continue
                try:
                    stored = await self.store.run(key[0], key[1], record.counter)
                except Unavailable:
                    self._lost()
                    return
                if stored is not None and stored.record.status is not RunStatus.RUNNING:
                    log.warn("{job}: run {counter} was ended by the cluster while this node "
                             "was cut off; canceled", job=runner.name, counter=record.counter)
                    # Its stored end (failed, naming this node) stays.
                    self._abandoned.add((key[0], key[1], record.counter))
                    runner.cancel()

    def _reaped(self, lost: list[StoredRun]) -> None:
        """
        Runs of dead nodes, ended C{failed} by this node's reap: the job's
        new owner (here, or told) retries each when the job asks for it.
        """
        dead = {stored.record.node for stored in lost}
        if dead:
            self._seen([n for n in self.nodes.values() if n.name not in dead]
                       + [attrs.evolve(self.nodes[n], alive=False) for n in dead
                          if n in self.nodes])
        for stored in lost:
            record = stored.record
            key = (stored.kind, record.job_id)
            self._mirror_put(stored.kind, record)
            log.warn("cluster: node {node} was lost; its run {counter} of {kind}/{job} "
                     "ended failed", node=record.node, counter=record.counter,
                     kind=stored.kind, job=record.job_id)
            runner = self._runners.get(key)
            if runner is None or record.attempt > runner.job.retry:
                continue
            owner = self.owner_of(*key)
            if owner == self.me:
                self._retry_here(key, record.attempt, record.counter)
            elif owner is not None:
                action = f"{RETRY}:{record.attempt}:{record.counter}"
                self._tell_owner(Forwarded(
                    0, key[0], key[1], action, Trigger.RETRY, None, self.me, owner))

    def _retry_here(self, key: Key, attempt: int, first: int) -> None:
        """The retry of a run lost with its node, on this node (its counter in hand first)."""
        runner = self._runners.get(key)
        if runner is None:
            return
        d = self.ensure_counter(key)
        d.addCallback(lambda _: runner.retry_lost(attempt, first))
        d.addErrback(lambda f: log.warn("{job}: the retry of run {counter}, lost with its "
                                        "node, cannot start: {why}", job=runner.name,
                                        counter=first, why=f.getErrorMessage()))

    def _tell_owner(self, fwd: Forwarded) -> None:
        """Forward C{fwd} without waiting for its answer."""
        self.outbox.put(lambda: self.store.forward(self.me, fwd))

    def owner_of(self, kind: str, job_id: str) -> str | None:
        """The node that runs C{kind/job_id}, as this node sees the alive nodes."""
        key = (kind, job_id)
        try:
            return self._owners[key]
        except KeyError:
            found = self._owners[key] = ownership.owner(self.alive, kind, job_id)
            return found

    # --- counters --------------------------------------------------------------

    def take_counter(self, key: Key) -> int:
        """
        The next counter of the job from its reserved block (the runner's
        C{counters}; synchronous); the next block is fetched at half.
        """
        block = self._counters.get(key)
        if not block:
            self._refill(key).addErrback(lambda f: f.trap(ClusterUnavailable))
            raise ClusterUnavailable("no run counter in hand; the cluster database is away")
        counter = block.popleft()
        if len(block) <= COUNTER_BLOCK // 2:
            self._refill(key).addErrback(lambda f: f.trap(ClusterUnavailable))
        return counter

    def ensure_counter(self, key: Key) -> defer.Deferred[None]:
        """Fires once the job has a counter in hand (fails with L{ClusterUnavailable})."""
        if self._counters.get(key):
            return defer.succeed(None)
        return self._refill(key)

    def _refill(self, key: Key) -> defer.Deferred[None]:
        busy = self._refilling.get(key)
        if busy is not None:
            waiter: defer.Deferred[None] = defer.Deferred()

            def relay(result: object) -> object:
                if self._counters.get(key):
                    waiter.callback(None)
                else:
                    waiter.errback(ClusterUnavailable("no run counter in hand; try again"))
                return result

            busy.addBoth(relay)
            return waiter
        d = self._refilling[key] = defer.ensureDeferred(self._reserve(key))

        def done(result: object) -> object:
            self._refilling.pop(key, None)
            return result

        return d.addBoth(done)

    async def _reserve(self, key: Key) -> None:
        runner = self._runners.get(key)
        floor = max([runner.counter if runner is not None else 0, *self._mirror.get(key, ())])
        try:
            # Above the counters this node used before (it ran alone, or a
            # block of an earlier ownership): never reused.
            block = await self.store.reserve_counters(key[0], key[1], COUNTER_BLOCK, floor)
        except Unavailable:
            self._lost()
            raise ClusterUnavailable("the cluster database is unreachable") from None
        queue = self._counters.setdefault(key, collections.deque())
        queue.extend(c for c in block if c > floor)

    # --- timer fires: claims ---------------------------------------------------

    def _fire(self, key: Key, slot: float, fire: Callable[[], Any]) -> None:
        """
        A timer's fire of C{slot} (its C{gate}): only the owner claims it,
        with every other fire of this reactor turn in one statement; a
        fire while the database is away is remembered as missed.
        """
        owner = self.owner_of(*key)
        if owner != self.me:
            # Kept: should that owner turn out to be dead already, this node
            # may be the one to run the slot (L{_take_over}).
            self._skipped[key] = (slot, owner, fire)
            return
        if not self.connected:
            self._missed[key] = slot
            log.info("{kind}/{job}: slot not run: the cluster database is unreachable",
                     kind=key[0], job=key[1])
            return
        self._claims.append((key, float(round(slot)), fire))
        if self._claim_call is None:
            self._claim_call = self._clock.callLater(0, self._claim)

    def _claim(self) -> None:
        self._claim_call = None
        batch, self._claims = self._claims, []
        if not batch:
            return
        slots = [(key[0], key[1], slot) for key, slot, _ in batch]
        d = self.store.claim_slots(self.me, slots)

        def won(claimed: set[tuple[str, str, float]]) -> None:
            for key, slot, fire in batch:
                if (key[0], key[1], slot) in claimed:
                    self._fire_won(key, fire)

        def failed(failure: Failure) -> None:
            failure.trap(Unavailable)
            self._lost()
            for key, slot, _ in batch:
                self._missed[key] = max(slot, self._missed.get(key, slot))

        d.addCallbacks(won, failed)
        d.addErrback(lambda f: log.failure("cluster: claiming slots failed", f))

    def _fire_won(self, key: Key, fire: Callable[[], Any]) -> None:
        def start(_: object = None) -> None:
            try:
                fire()
            except RunRefused as e:
                log.info("{kind}/{job}: claimed slot not run: {why}", kind=key[0], job=key[1],
                         why=str(e))

        if self._counters.get(key):
            start()
            return
        d = self.ensure_counter(key)
        d.addCallback(start)
        d.addErrback(lambda f: log.info("{kind}/{job}: claimed slot not run: {why}",
                                        kind=key[0], job=key[1], why=f.getErrorMessage()))

    def _catch_up(self) -> None:
        """After an outage: each job's newest missed slot runs once if C{catch_up} allows."""
        missed, self._missed = self._missed, {}
        now = self._clock.seconds()
        for key, slot in missed.items():
            runner = self._runners.get(key)
            if runner is None or self.owner_of(*key) != self.me:
                continue
            window = runner.job.catch_up.total_seconds()
            if window <= 0 or now - slot > window:
                log.info("{job}: a slot missed during the database outage is not caught up",
                         job=runner.name)
                continue
            log.info("{job}: catching up a slot missed during the database outage",
                     job=runner.name)
            self._fire(key, slot, functools.partial(
                runner.trigger, None, deferred=True, trigger=Trigger.CATCH_UP))

    # --- run begins and ends -------------------------------------------------------

    def _gate(self, runner: Any, counter: int, trigger: str | None,
              attempt: int) -> defer.Deferred[bool]:
        """
        The runner's C{gate}: the run begins only if the job runs on no
        other node.  While the database is away the run (accepted before)
        goes on and its begin waits in the outbox.
        """
        kind = str(runner.job.kind)
        record = RunRecord(runner.job.id, counter, RunStatus.RUNNING, self._clock.seconds(),
                           None, trigger, attempt, self.me)
        d = self.outbox.put(lambda: self.store.begin_run(self.me, kind, record))

        def decided(result: object) -> bool:
            if result is False:
                log.warn("{job}: run {counter} not begun: the job runs on another node",
                         job=runner.name, counter=counter)
                return False
            return True

        return d.addCallback(decided)

    def run_started(self, runner: Any, record: RunRecord) -> None:
        """Mirror the run; ship its log as it grows."""
        kind = str(runner.job.kind)
        self._mirror_put(kind, record)
        feed = runner.store.reserve(record.counter)
        feed.tap = self.logs.tap((kind, record.job_id, record.counter), runner.store.max_bytes)

    def run_finished(self, runner: Any, record: RunRecord) -> None:
        """Ship the run's end with its final log, then prune the database like the disk."""
        kind = str(runner.job.kind)
        self.logs.drop((kind, record.job_id, record.counter))
        if (kind, record.job_id, record.counter) in self._abandoned:
            self._abandoned.discard((kind, record.job_id, record.counter))
            return
        self._mirror_put(kind, record)
        d = runner.store.read_in_thread(record.counter)

        def ship(found: tuple[LogName, bytes] | None) -> defer.Deferred:
            body = found[1] if found is not None else b""
            ended = self.outbox.put(lambda: self.store.end_run(kind, record, body))
            self._prune(kind, runner)
            return ended

        d.addCallback(ship)
        d.addErrback(lambda f: log.failure("{job}: shipping run {counter} failed", f,
                                           job=runner.name, counter=record.counter))
        self._ends.append(d)

        def shipped(result: object) -> object:
            self._ends.remove(d)
            return result

        d.addBoth(shipped)

    def _prune(self, kind: str, runner: Any) -> None:
        key = (kind, runner.job.id)
        mirror = self._mirror.get(key, {})
        finished = sorted(c for c, r in mirror.items() if r.status is not RunStatus.RUNNING)
        old = finished[:max(len(finished) - max(runner.job.log_retention, 1), 0)]
        if old:
            for counter in old:
                mirror.pop(counter, None)
            self.outbox.put(lambda: self.store.forget_runs(kind, key[1], old))

    # --- the mirror of every node's runs ----------------------------------------------

    def _mirror_put(self, kind: str, record: RunRecord) -> None:
        key = (kind, record.job_id)
        self._mirror.setdefault(key, {})[record.counter] = record
        runner = self._runners.get(key)
        if runner is None or record.node == self.me:
            return
        # Another node's run moves this job's last run (an interval counts
        # from it, on whichever node owns the job next) and status.
        if record.started is not None and (runner.last_run or 0) < record.started:
            runner.last_run = record.started
            timer = getattr(self._service.job_service(kind, record.job_id), "timer", None)
            if timer is not None:
                timer.reschedule()
        if record.status is not RunStatus.RUNNING and record.counter >= max(
                self._mirror[key]):
            runner.last_status = record.status

    def records_of(self, key: Key, runner: Any) -> list[RunRecord]:
        """
        The runner's C{mirror}: this job's runs on every node, oldest first
        (the running ones, and the newest C{log_retention} that ended).
        """
        local = runner.store.records()
        mirror = self._mirror.get(key)
        if not mirror:
            return local
        merged = {r.counter: r for r in local}
        merged.update(mirror)
        records = [merged[c] for c in sorted(merged)]
        keep = max(runner.job.log_retention, 1)
        ended = [r.counter for r in records if r.status is not RunStatus.RUNNING]
        drop = set(ended[:max(len(ended) - keep, 0)])
        return [r for r in records if r.counter not in drop]

    def record(self, kind: str, job_id: str, counter: int) -> RunRecord | None:
        return self._mirror.get((kind, job_id), {}).get(counter)

    # --- notifications ---------------------------------------------------------------------

    def _heard(self, channel: str, payload: str) -> None:
        """A NOTIFY (see L{karajo.clusterstore.CHANNELS}), on the reactor thread."""
        if channel == "karajo_run":
            self._run_changed(payload)
        elif channel == "karajo_request":
            request_id, _, node = payload.partition(" ")
            # Not this node's own request (a store whose payload names no node).
            if (node in (self.me, "") and request_id.isdigit()
                    and int(request_id) not in self._answers):
                d = defer.ensureDeferred(self._serve(int(request_id)))
                d.addErrback(lambda f: log.failure("cluster: a forwarded request failed", f))
        elif channel == "karajo_answer":
            if payload.isdigit() and int(payload) in self._answers:
                self._fetch_answer(int(payload))
        elif channel == "karajo_pause":
            self._read_pauses()
        elif channel == RECONNECTED:
            # Notifications were lost while the listening connection was away.
            for waiting in list(self._answers):
                self._fetch_answer(waiting)
            if self.connected:
                self._read_pauses()

    def _read_pauses(self) -> None:
        d = self.store.paused_jobs()
        d.addCallbacks(self._apply_pauses, lambda f: f.trap(Unavailable))

    def _run_changed(self, payload: str) -> None:
        parts = payload.split("/")
        if len(parts) != 3 or not parts[2].isdigit():
            return
        run = (parts[0], parts[1], int(parts[2]))
        if run in self._fetching:
            return
        self._fetching.add(run)
        d = self.store.run(*run)

        def got(stored: StoredRun | None) -> None:
            if stored is not None:
                self._mirror_put(stored.kind, stored.record)

        d.addCallbacks(got, lambda f: f.trap(Unavailable))
        d.addBoth(lambda _: self._fetching.discard(run))

    # --- acting on a job: here, or forwarded to its owner ------------------------------------

    async def act(self, kind: str, job_id: str, action: str,
                  request: TriggerRequest | None = None, trigger: str | None = None) -> Answer:
        """
        Do C{action} (L{RUN}, L{PAUSE}, L{RESUME}, L{CANCEL}) on the job
        where it lives: here when this node owns it, else on its owner,
        whose answer this is.  Raises L{ClusterUnavailable} when the
        database is away or the owner does not answer in L{FORWARD_WAIT}.
        """
        if not self.connected:
            raise ClusterUnavailable("the cluster database is unreachable; try again")
        owner = self.owner_of(kind, job_id)
        if owner is None:
            raise ClusterUnavailable("no cluster node is known alive yet; try again")
        if owner == self.me:
            return await self._act_here(kind, job_id, action, request, trigger)
        fwd = Forwarded(0, kind, job_id, action, trigger, request, self.me, owner)
        try:
            request_id = await self.store.forward(self.me, fwd)
        except Unavailable:
            self._lost()
            raise ClusterUnavailable("the cluster database is unreachable; try again") from None
        answer = await self._wait_answer(request_id, owner)
        runner = self._runners.get((kind, job_id))
        if answer.outcome == "ok" and runner is not None and action in (PAUSE, RESUME):
            runner.pause() if action == PAUSE else runner.resume()
        return answer

    def _wait_answer(self, request_id: int, owner: str) -> defer.Deferred[Answer]:
        d: defer.Deferred[Answer] = defer.Deferred()
        self._answers[request_id] = d

        def late() -> None:
            if not d.called:
                self._answers.pop(request_id, None)
                d.errback(ClusterUnavailable(f"node {owner}, which runs this job, did not "
                                             "answer in time; try again"))

        call = self._clock.callLater(FORWARD_WAIT, late)

        def done(result: object) -> object:
            if call.active():
                call.cancel()
            return result

        return d.addBoth(done)

    def _fetch_answer(self, request_id: int) -> None:
        d = self.store.answer_of(request_id)

        def got(answer: Answer | None) -> None:
            waiter = self._answers.get(request_id)
            if answer is not None and waiter is not None and not waiter.called:
                del self._answers[request_id]
                waiter.callback(answer)

        d.addCallbacks(got, lambda f: f.trap(Unavailable))

    async def _serve(self, request_id: int) -> None:
        """A request forwarded to this node: take it, act, answer."""
        try:
            fwd = await self.store.take(self.me, request_id)
        except Unavailable:
            self._lost()
            return
        if fwd is None:
            return
        owner = self.owner_of(fwd.kind, fwd.job_id)
        if fwd.to_node != self.me and owner not in (self.me, None) and ">" not in fwd.from_node:
            # Taken by a node that does not run the job (a store that does
            # not route by to_node): passed on to the owner, once (a node
            # name has no ">"), its answer relayed.
            answer = await self._pass_on(fwd, owner)
        elif fwd.action.startswith(RETRY + ":"):
            _, attempt, first = fwd.action.split(":")
            self._retry_here((fwd.kind, fwd.job_id), int(attempt), int(first))
            answer = Answer("ok", None, "retry scheduled")
        else:
            answer = await self._act_here(fwd.kind, fwd.job_id, fwd.action, fwd.request,
                                          fwd.trigger)
        self.outbox.put(lambda: self.store.answer(request_id, answer))

    async def _pass_on(self, fwd: Forwarded, owner: str) -> Answer:
        relay = attrs.evolve(fwd, from_node=f"{fwd.from_node}>{self.me}", to_node=owner)
        if fwd.action.startswith(RETRY + ":"):
            self._tell_owner(relay)
            return Answer("ok", None, f"passed on to {owner}")
        try:
            request_id = await self.store.forward(self.me, relay)
            return await self._wait_answer(request_id, owner)
        except Unavailable:
            self._lost()
            return Answer("refused:unavailable", None, "the cluster database is unreachable")
        except ClusterUnavailable as e:
            return Answer("refused:unavailable", None, str(e))

    async def _act_here(self, kind: str, job_id: str, action: str,
                        request: TriggerRequest | None, trigger: str | None = None) -> Answer:
        runner = self._runners.get((kind, job_id))
        if runner is None:
            return Answer("refused:not_found", None, "job not found")
        try:
            if action == RUN:
                await self.ensure_counter((kind, job_id))
                accepted = runner.submit(request, trigger=trigger)
                return Answer(accepted.outcome, accepted.counter, f"job {accepted.outcome}")
            if action in (PAUSE, RESUME):
                runner.pause() if action == PAUSE else runner.resume()
                try:
                    await self.store.set_paused(kind, job_id, action == PAUSE)
                except Unavailable:
                    self._lost()
                    raise ClusterUnavailable("the cluster database is unreachable") from None
                return Answer("ok", None, "job paused" if action == PAUSE else "job resumed")
            if action == CANCEL:
                if runner.cancel():
                    return Answer("ok", None, "job canceled")
                return Answer("refused:not_running", None, "job is not running")
        except RunRefused as e:
            return Answer("refused:" + _REFUSALS.get(type(e), "unavailable"), None, str(e))
        return Answer("refused:unknown", None, f"unknown action {action!r}")

    def chain(self, job_id: str, record: RunRecord, by: str) -> None:
        """
        The chains' C{relay}: start chained job C{job_id} (trigger
        C{chain}) on its owner; a refusal is logged, as on a single server.
        """
        d = defer.ensureDeferred(self.act("job", job_id, RUN, None, Trigger.CHAIN))

        def done(answer: Answer) -> None:
            log.info("{job}: run {counter} {status}; chained job {target}: {outcome}",
                     job=by, counter=record.counter, status=str(record.status),
                     target=job_id, outcome=answer.outcome)

        d.addCallback(done)
        d.addErrback(lambda f: log.warn("{job}: run {counter} chains to {target}, which "
                                        "refused: {why}", job=by, counter=record.counter,
                                        target=job_id, why=f.getErrorMessage()))

    async def first_time(self, key: bytes, max_age: float) -> bool:
        """The cluster-wide replay guard: whether a signed request is new everywhere."""
        digest = hashlib.sha256(key).digest()
        try:
            return await self.store.seen_request(digest, self._clock.seconds() + max_age)
        except Unavailable:
            self._lost()
            raise ClusterUnavailable("the cluster database is unreachable; try again") from None

    # --- reading runs of other nodes -----------------------------------------------------------

    async def _stored_record(self, kind: str, job_id: str, counter: int) -> RunRecord | None:
        record = self.record(kind, job_id, counter)
        if record is not None:
            return record
        try:
            stored = await self.store.run(kind, job_id, counter)
        except Unavailable:
            raise ClusterUnavailable("the cluster database is unreachable; try again") from None
        return stored.record if stored is not None else None

    async def read_log(self, kind: str, job_id: str,
                       counter: int) -> tuple[LogName, bytes] | None:
        """A run's log from the database (it ran on another node), or None."""
        record = await self._stored_record(kind, job_id, counter)
        if record is None:
            return None
        try:
            body = await self.store.read_log(kind, job_id, counter)
        except Unavailable:
            raise ClusterUnavailable("the cluster database is unreachable; try again") from None
        return record.name, body

    async def remote_feed(self, kind: str, job_id: str, counter: int) -> LogFeed | None:
        """A feed of a run of another node (L{clusterlogs.remote_feed}), or None."""
        record = await self._stored_record(kind, job_id, counter)
        if record is None:
            return None

        def status() -> str:
            return (self.record(kind, job_id, counter) or record).status

        return remote_feed(self.store, self._clock, (kind, job_id, counter), status)

    # --- what the API shows ---------------------------------------------------------------------

    def mismatched(self) -> list[str]:
        """The alive nodes whose configuration digest differs from this node's."""
        return sorted(n.name for n in self.nodes.values()
                      if n.alive and n.config_digest != self.digest)


def digest_warnings(digest: str, nodes: Iterable[tuple[str, bool, str]]) -> list[str]:
    """
    What C{karajo check} says of the alive nodes C{(name, alive, digest)}
    started from another configuration than this one's C{digest}.
    """
    return [f"node {name} runs another configuration (digest {theirs[:12]}, "
            f"this one {digest[:12]}): start every node from the same files"
            for name, alive, theirs in sorted(nodes) if alive and theirs != digest]


def read_nodes(database: str) -> list[tuple[str, bool, str]]:
    """
    Every node's C{(name, alive, config_digest)}, read with a short blocking
    connection: for C{karajo check}, a short-lived process with no reactor.
    """
    psycopg = importlib.import_module("psycopg")
    with psycopg.connect(database, connect_timeout=5) as connection:
        rows = connection.execute("SELECT name, alive, config_digest FROM karajo_node").fetchall()
    return [(str(name), bool(alive), str(digest)) for name, alive, digest in rows]


_REFUSALS: dict[type, str] = {
    JobBusy: "busy",
    JobPaused: "paused",
    ServerStopping: "stopping",
    ServerStarting: "starting",
    ClusterUnavailable: "unavailable",
}


def add_cluster(service: Any, reactor: Any, store: ClusterStore | None = None) -> ClusterService:
    """
    Make C{service} (a L{karajo.service.KarajoService} whose environment
    has a C{[cluster]}) a cluster node: hook every job, start with it,
    hear its reloads, close the store after its runs stopped.

    @param store: the shared database; by default L{open_store}'s.
    """
    from karajo.digest import config_digest
    from karajo.version import __version__

    cluster = service.env.cluster
    node = ClusterService(
        service, cluster, store if store is not None else open_store(cluster, reactor), reactor,
        version=__version__, digest=config_digest(service.env),
    )
    for table in (service.jobs, service.http_jobs):
        for svc in table.values():
            node.attach(svc)
    node.setServiceParent(service)
    service.cluster = node
    service.chains.relay = node.chain
    service.reload_listeners.append(node)
    service.closers.append(lambda: defer.ensureDeferred(node.close()))
    return node
