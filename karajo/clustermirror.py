"""
Every node's runs as this node knows them (docs/cluster.md, "Runs and
logs"): each node MIRRORS every run record of the cluster in memory
(read at connect, updated on C{NOTIFY karajo_run}), for its API's
C{logs}, its dashboard and the C{last_run} an interval counts from; and
the log and events stream of a run of another node, read from the
database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.task import deferLater

from karajo.clusterlogs import remote_feed
from karajo.clusterstore import StoredRun, Unavailable
from karajo.errors import ClusterUnavailable
from karajo.logfeed import LogFeed
from karajo.runrecord import LogName, RunRecord
from karajo.status import RunStatus

if TYPE_CHECKING:
    from karajo.cluster import ClusterService

__all__ = ["RunMirror"]

Key = tuple[str, str]


#: How long a run not found in the database is looked for again (seconds),
#: and how often.
BEGIN_WAIT = 2.0
BEGIN_POLL = 0.25


class RunMirror:
    """The run records of every node, by job and counter."""

    def __init__(self, node: ClusterService) -> None:
        self._node = node
        self._runs: dict[Key, dict[int, RunRecord]] = {}
        #: the counters of each job's runs running on other nodes
        self._elsewhere: dict[Key, set[int]] = {}
        self._fetching: set[tuple[str, str, int]] = set()

    def counters(self, key: Key) -> list[int]:
        """The counters of the job's runs this node knows of (any node)."""
        return list(self._runs.get(key, ()))

    def running_elsewhere(self, key: Key) -> bool:
        """Whether a run of the job is running on another node (the runner's flag)."""
        return bool(self._elsewhere.get(key))

    def put(self, kind: str, record: RunRecord) -> None:
        node = self._node
        key = (kind, record.job_id)
        self._runs.setdefault(key, {})[record.counter] = record
        runner = node.runners.get(key)
        if record.node == node.me:
            return
        elsewhere = self._elsewhere.setdefault(key, set())
        if record.status is RunStatus.RUNNING:
            elsewhere.add(record.counter)
        else:
            elsewhere.discard(record.counter)
        if runner is None:
            return
        # Its status shows the run (a job running on another node is running).
        runner.running_elsewhere = bool(elsewhere)
        # Another node's run moves this job's last run (an interval counts
        # from it, on whichever node owns the job next) and status.
        if record.started is not None and (runner.last_run or 0) < record.started:
            runner.last_run = record.started
            timer = getattr(node.service.job_service(kind, record.job_id), "timer", None)
            if timer is not None:
                timer.reschedule()
        if record.status is not RunStatus.RUNNING and record.counter >= max(
                self._runs[key]):
            runner.last_status = record.status

    def records_of(self, key: Key, runner: Any) -> list[RunRecord]:
        """
        The runner's C{mirror}: this job's runs on every node, oldest first
        (the running ones, and the newest C{log_retention} that ended).
        """
        local = runner.store.records()
        mirror = self._runs.get(key)
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
        return self._runs.get((kind, job_id), {}).get(counter)

    def forget_old(self, key: Key, keep: int) -> list[int]:
        """Drop the job's ended runs but the newest C{keep}; their counters."""
        mirror = self._runs.get(key, {})
        finished = sorted(c for c, r in mirror.items() if r.status is not RunStatus.RUNNING)
        old = finished[:max(len(finished) - max(keep, 1), 0)]
        for counter in old:
            mirror.pop(counter, None)
        return old

    def refresh(self) -> None:
        """
        Every run record read again: a run that another node began or ended
        (its held writes sent when the database came back) while this node's
        listening connection was away was told to nobody here.
        """
        d = self._node.store.runs()

        def got(runs: list[StoredRun]) -> None:
            for stored in runs:
                self.put(stored.kind, stored.record)

        d.addCallbacks(got, lambda f: f.trap(Unavailable))

    def changed(self, payload: str) -> None:
        """C{karajo_run} (C{kind/id/counter}): the run is read again."""
        parts = payload.split("/")
        if len(parts) != 3 or not parts[2].isdigit():
            return
        run = (parts[0], parts[1], int(parts[2]))
        if run in self._fetching:
            return
        self._fetching.add(run)
        d = self._node.store.run(*run)

        def got(stored: StoredRun | None) -> None:
            if stored is not None:
                self.put(stored.kind, stored.record)

        d.addCallbacks(got, lambda f: f.trap(Unavailable))
        d.addBoth(lambda _: self._fetching.discard(run))

    # --- reading runs of other nodes -----------------------------------------------------------

    async def _stored_record(self, kind: str, job_id: str, counter: int) -> RunRecord | None:
        """
        The record of a run of another node.  A client that follows the run
        a webhook to another node just started may ask before that node's
        begin is written (begins go out once per reactor turn): a run not
        found is looked for again for up to L{BEGIN_WAIT} seconds, the time
        a running run may be behind on other nodes (docs/cluster.md), before
        it is called unknown.
        """
        waited = 0.0
        while True:
            record = self.record(kind, job_id, counter)
            if record is not None:
                return record
            try:
                stored = await self._node.store.run(kind, job_id, counter)
            except Unavailable:
                raise ClusterUnavailable("the cluster database is unreachable; try again") from None
            if stored is not None:
                return stored.record
            if waited >= BEGIN_WAIT:
                return None
            await deferLater(self._node.clock, BEGIN_POLL, lambda: None)
            waited += BEGIN_POLL

    async def read_log(self, kind: str, job_id: str,
                       counter: int) -> tuple[LogName, bytes] | None:
        """A run's log from the database (it ran on another node), or None."""
        record = await self._stored_record(kind, job_id, counter)
        if record is None:
            return None
        try:
            body = await self._node.store.read_log(kind, job_id, counter)
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

        return remote_feed(self._node.store, self._node.clock, (kind, job_id, counter), status)
