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
    turn for all fires of the turn); only a won claim fires
    (L{karajo.clusterclaims});
  - every run begins only if the job is not running on another node
    (L{karajo.clusterruns}, the runner's C{gate});
  - counters come from blocks reserved in the database (the runner's
    C{counters}, L{karajo.clustercounters}), so C{$ID.$N} names one run
    in the whole cluster;
  - webhooks, run_now, pause, resume and cancel that reach a node that is
    not the owner are FORWARDED to it and answered as it answers
    (L{karajo.clusterrequests});
  - run begins and ends, live log bytes (every second at most) and final
    logs are written to the database through an ordered
    L{karajo.outbox.Outbox} (live logs by L{karajo.clusterlogs}), which
    keeps them while the database is unreachable and sends them when it is
    back; every node MIRRORS every run record, for its API and dashboard
    (L{karajo.clustermirror}).

This module holds the node itself: its membership (heartbeats, the alive
nodes, the owner of each job), the hooks into the jobs, the outage state,
the dispatch of notifications, and reaping.

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

import functools
import importlib
from collections.abc import Coroutine, Iterable
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from karajo import ownership
from karajo.clusterclaims import SlotClaims
from karajo.clustercounters import COUNTER_BLOCK, CounterBlocks
from karajo.clusterlogs import LogShipper
from karajo.clustermirror import RunMirror
from karajo.clusterrequests import FORWARD_WAIT, RETRY, Requests
from karajo.clusterruns import RunShipping
from karajo.clusterstore import (
    RECONNECTED,
    Answer,
    ClusterStore,
    Forwarded,
    NodeInfo,
    StoredRun,
    Unavailable,
)
from karajo.logfeed import LogFeed
from karajo.model import Cluster, TriggerRequest
from karajo.outbox import Outbox, within
from karajo.runrecord import LogName
from karajo.status import RunStatus, Trigger

__all__ = [
    "COUNTER_BLOCK",
    "FORWARD_WAIT",
    "ClusterService",
    "add_cluster",
    "open_store",
]

log = Logger()

#: How long after a lease ran out (database clock) a node reaps it.
LEASE_MARGIN = 0.05
#: How often a node bounds the database's old slots, replay keys and requests.
PRUNE_EVERY = 300.0

Key = tuple[str, str]


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
        self.service = service
        self.store = store
        self.clock = clock
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
        #: the writes to the database, in order, held while it is away
        self.outbox = Outbox(self.lost)
        #: the runner of each job, by (kind, id)
        self.runners: dict[Key, Any] = {}
        #: counter blocks of the jobs this node runs
        self.counters = CounterBlocks(self)
        #: the claims of the timers' fires
        self.claims = SlotClaims(self)
        #: every node's run records
        self.mirror = RunMirror(self)
        #: requests to the owners of jobs, and forwarded to this node
        self.requests = Requests(self)
        #: the runs' begin guard, begins and ends shipped
        self.runs = RunShipping(self)
        #: running logs shipped
        self.logs = LogShipper(store, self.outbox, clock)
        self._beat_call: IDelayedCall | None = None
        #: the heartbeat in flight
        self._beating: defer.Deferred[None] | None = None
        self._reap_call: IDelayedCall | None = None
        self._pruned_at: float | None = None

    # --- hooks into the jobs -------------------------------------------------

    def attach(self, svc: Any) -> None:
        """
        Hook one job's runner and timer (at start, and for a job a reload
        adds): counters from the database, the begin guard, the records
        of every node, the claim of each timer fire, and L{RunShipping}
        among the runner's listeners (run begins and ends shipped).
        """
        runner = svc.runner
        key = (str(runner.job.kind), runner.job.id)
        self.runners[key] = runner
        runner.store.node = self.me
        runner.counters = functools.partial(self.counters.take, key)
        runner.gate = self.runs.gate
        runner.mirror = functools.partial(self.mirror.records_of, key, runner)
        runner.running_elsewhere = self.mirror.running_elsewhere(key)
        if self.runs not in runner.listeners:
            runner.listeners.append(self.runs)
        self.attach_timer(svc)

    def attach_timer(self, svc: Any) -> None:
        """Claim each fire of C{svc}'s timer (a reload may have replaced it)."""
        if svc.timer is not None:
            runner = svc.runner
            key = (str(runner.job.kind), runner.job.id)
            svc.timer.gate = functools.partial(self.claims.fire, key)

    def detach(self, svc: Any) -> None:
        runner = svc.runner
        self.runners.pop((str(runner.job.kind), runner.job.id), None)

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
        for call in (self._beat_call, self._reap_call):
            if call is not None and call.active():
                call.cancel()
        self._beat_call = self._reap_call = None
        self.claims.stop()

    async def close(self) -> None:
        """
        After every run stopped (L{karajo.service.KarajoService.closers}):
        ship the ends and logs still on their way, then LEAVE the cluster
        (after them, in the outbox's order: the others take this node's
        jobs at their next heartbeat), for a bounded time each, then
        close the connections.
        """
        self.logs.stop()
        await within(self.clock, self.runs.ends(), FORWARD_WAIT)
        if self._beating is not None:
            # Answered after the leave, it would mark this node alive again.
            await within(self.clock, self._beating, FORWARD_WAIT)
        left: defer.Deferred = self.outbox.put(self._leave)
        await within(self.clock, left, FORWARD_WAIT)
        await self.store.close()

    def _leave(self) -> defer.Deferred[None]:
        def left(ended: list[StoredRun]) -> None:
            for stored in ended:
                log.warn("cluster: run {counter} of {kind}/{job} was still running in the "
                         "database as node {node} left; marked failed",
                         counter=stored.record.counter, kind=stored.kind,
                         job=stored.record.job_id, node=self.me)
            log.info("cluster: node {node} left the cluster", node=self.me)

        return self.store.leave(self.me).addCallback(left)

    # --- heartbeat, membership, outage -----------------------------------------

    def _beat(self) -> None:
        self._beat_call = None
        d = self._beating = defer.ensureDeferred(self._heartbeat_once())
        d.addErrback(lambda f: log.failure("cluster: heartbeat failed", f))

        def again(_: object) -> None:
            self._beating = None
            if self.running:
                self._beat_call = self.clock.callLater(self._heartbeat, self._beat)

        d.addBoth(again)

    def _beat_soon(self) -> None:
        """The next heartbeat now (none is on its way: it would see the change)."""
        if self._beat_call is not None and self._beat_call.active():
            self._beat_call.reset(0)

    def me_info(self) -> NodeInfo:
        running = sum(1 for r in self.runners.values() if r.executing)
        return NodeInfo(self.me, True, self.clock.seconds(), running, self.version,
                        self.digest, self._started_at)

    async def _heartbeat_once(self) -> None:
        try:
            if not self._migrated:
                await self.store.migrate()
                self._migrated = True
            nodes = await self.store.heartbeat(self.me_info())
        except Unavailable:
            self.lost()
            return
        self._seen(nodes)
        if not self.connected:
            if not await self._reconnected():
                return
        if await self._reap_once():
            self._watch_leases()

    async def _reap_once(self) -> bool:
        """Reap dead nodes (and prune); C{False} when this node may not or cannot."""
        since = self.connected_since
        if since is None or self.clock.seconds() - since < self._node_timeout:
            return False  # not connected long enough to tell a dead node from our outage
        try:
            lost = await self.store.reap(self._node_timeout, self.me)
            now = self.clock.seconds()
            if self._pruned_at is None or now - self._pruned_at >= PRUNE_EVERY:
                self._pruned_at = now
                await self.store.prune(now)
        except Unavailable:
            self.lost()
            return False
        self._reaped(lost)
        return True

    def _watch_leases(self) -> None:
        """
        Reap again the moment an alive node's lease runs out, when that is
        before this node's next heartbeat: a dead node is noticed within
        C{node_timeout} of its last heartbeat, not up to a heartbeat later.
        The delay is counted on the database's clock (the other node's
        C{last_seen} against this node's), so clocks of machines may differ.
        """
        listed = list(self.nodes.values())
        mine = next((n.last_seen for n in listed if n.name == self.me), None)
        if mine is None or (self._reap_call is not None and self._reap_call.active()):
            return
        due = [n.last_seen + self._node_timeout - mine for n in listed
               if n.alive and n.name != self.me]
        soon = min((d for d in due if d < self._heartbeat), default=None)
        if soon is not None:
            self._reap_call = self.clock.callLater(max(soon, 0.0) + LEASE_MARGIN, self._reap)

    def _reap(self) -> None:
        self._reap_call = None
        if self.running and self.connected:
            d = defer.ensureDeferred(self._reap_once())
            d.addErrback(lambda f: log.failure("cluster: reaping failed", f))

    def _seen(self, nodes: Iterable[NodeInfo]) -> None:
        self.nodes = {n.name: n for n in nodes}
        alive = tuple(sorted(n.name for n in self.nodes.values() if n.alive))
        if alive != self.alive:
            log.info("cluster: alive nodes: {nodes}", nodes=" ".join(alive))
            gone = set(self.alive) - set(alive)
            self.alive = alive
            self._owners.clear()
            self.counters.drop_moved()
            if gone:
                # The slots the dead nodes were due to run since they went
                # silent: at most node_timeout and four heartbeats ago.
                horizon = self.clock.seconds() - self._node_timeout - 4 * self._heartbeat
                self.claims.take_over(gone, horizon)

    def lost(self) -> None:
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
            self.lost()
            return False
        self.connected = True
        self.connected_since = self.clock.seconds()
        log.info("cluster: node {node} is connected to the database", node=self.me)
        # Cut off, this node may have been taken for dead and its jobs run
        # elsewhere meanwhile: counters in hand would come back older.
        self.counters.clear()
        self._apply_pauses(paused)
        for stored in runs:
            self.mirror.put(stored.kind, stored.record)
        self.outbox.release()
        await self._cancel_reaped()
        self.claims.catch_up()
        return True

    def _apply_pauses(self, paused: set[tuple[str, str]]) -> None:
        for key, runner in self.runners.items():
            if (key in paused) != runner.paused:
                runner.pause() if key in paused else runner.resume()

    async def _cancel_reaped(self) -> None:
        """Local runs the database says ended (reaped while this node was cut off) stop."""
        for key, runner in list(self.runners.items()):
            if not runner.executing:
                continue
            for record in runner.store.records():
                if record.status is not RunStatus.RUNNING:
                    continue
                try:
                    stored = await self.store.run(key[0], key[1], record.counter)
                except Unavailable:
                    self.lost()
                    return
                if stored is not None and stored.record.status is not RunStatus.RUNNING:
                    log.warn("{job}: run {counter} was ended by the cluster while this node "
                             "was cut off; canceled", job=runner.name, counter=record.counter)
                    # Its stored end (failed, naming this node) stays.
                    self.runs.abandoned.add((key[0], key[1], record.counter))
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
            self.mirror.put(stored.kind, record)
            log.warn("cluster: node {node} was lost; its run {counter} of {kind}/{job} "
                     "ended failed", node=record.node, counter=record.counter,
                     kind=stored.kind, job=record.job_id)
            runner = self.runners.get(key)
            if runner is None or record.attempt > runner.job.retry:
                continue
            owner = self.owner_of(*key)
            if owner == self.me:
                self.retry_here(key, record.attempt, record.counter)
            elif owner is not None:
                action = f"{RETRY}:{record.attempt}:{record.counter}"
                self.requests.tell_owner(Forwarded(
                    0, key[0], key[1], action, Trigger.RETRY, None, self.me, owner))

    def retry_here(self, key: Key, attempt: int, first: int) -> None:
        """The retry of a run lost with its node, on this node (its counter in hand first)."""
        runner = self.runners.get(key)
        if runner is None:
            return
        d = self.counters.ensure(key)
        d.addCallback(lambda _: runner.retry_lost(attempt, first))
        d.addErrback(lambda f: log.warn("{job}: the retry of run {counter}, lost with its "
                                        "node, cannot start: {why}", job=runner.name,
                                        counter=first, why=f.getErrorMessage()))

    def owner_of(self, kind: str, job_id: str) -> str | None:
        """The node that runs C{kind/job_id}, as this node sees the alive nodes."""
        key = (kind, job_id)
        try:
            return self._owners[key]
        except KeyError:
            found = self._owners[key] = ownership.owner(self.alive, kind, job_id)
            return found

    # --- notifications ---------------------------------------------------------------------

    def _heard(self, channel: str, payload: str) -> None:
        """A NOTIFY (see L{karajo.clusterstore.CHANNELS}), on the reactor thread."""
        if channel == "karajo_run":
            self.mirror.changed(payload)
        elif channel == "karajo_request":
            self.requests.heard_request(payload)
        elif channel == "karajo_answer":
            self.requests.heard_answer(payload)
        elif channel == "karajo_pause":
            self._read_pauses()
        elif channel == "karajo_node":
            # A node joined, left, or was found dead (by another node's reap): the
            # membership, and so every job's owner, seen now on every node,
            # not at each one's next heartbeat.
            if payload != self.me:
                self._beat_soon()
        elif channel == RECONNECTED:
            # Notifications were lost while the listening connection was away.
            self.requests.reconnected()
            if self.connected:
                self._read_pauses()
                self.mirror.refresh()

    def _read_pauses(self) -> None:
        d = self.store.paused_jobs()
        d.addCallbacks(self._apply_pauses, lambda f: f.trap(Unavailable))

    # --- what the web asks -----------------------------------------------------------------

    def act(self, kind: str, job_id: str, action: str, request: TriggerRequest | None = None,
            trigger: str | None = None) -> Coroutine[Any, Any, Answer]:
        """L{Requests.act}: C{action} on the job where it lives."""
        return self.requests.act(kind, job_id, action, request, trigger)

    def first_time(self, key: bytes, max_age: float) -> Coroutine[Any, Any, bool]:
        """L{Requests.first_time}: the cluster-wide replay guard."""
        return self.requests.first_time(key, max_age)

    def read_log(self, kind: str, job_id: str,
                 counter: int) -> Coroutine[Any, Any, tuple[LogName, bytes] | None]:
        """L{RunMirror.read_log}: a run of another node's log."""
        return self.mirror.read_log(kind, job_id, counter)

    def remote_feed(self, kind: str, job_id: str,
                    counter: int) -> Coroutine[Any, Any, LogFeed | None]:
        """L{RunMirror.remote_feed}: a run of another node followed."""
        return self.mirror.remote_feed(kind, job_id, counter)

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
    service.chains.relay = node.requests.chain
    service.reload_listeners.append(node)
    service.closers.append(lambda: defer.ensureDeferred(node.close()))
    return node
