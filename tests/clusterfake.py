"""
An in-memory L{karajo.clusterstore.ClusterStore} with the semantics of the
PostgreSQL one (L{karajo.pgstore}), for unit tests of the node logic on
C{task.Clock}.

One L{FakeDatabase} is the shared database; each node gets its own
L{FakeStore} on it (its connection).  Every method's effect happens at
once and whole, as one SQL statement's does: a claim is won by exactly one
store, a counter block is never handed out twice, a node is reaped by one
reaper.  NOTIFYs reach every listening store on a later reactor turn
(C{clock.callLater(0)}), as they reach other connections after the
commit.  The database's clock is the test's clock.

Faults: C{database.up = False} makes every store fail with L{Unavailable}
(the server stopped); C{store.cut = True} only that node's (its network).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import attrs
from twisted.internet import defer
from twisted.internet.task import Clock

from karajo.clusterstore import (
    RECONNECTED,
    Answer,
    Forwarded,
    NodeInfo,
    StoredRun,
    Unavailable,
)
from karajo.runrecord import RunRecord
from karajo.status import RunStatus

__all__ = ["FakeDatabase", "FakeStore"]


@attrs.define
class _Job:
    counter: int = 0
    running_node: str | None = None
    running_counter: int | None = None
    paused: bool = False


@attrs.define
class _Request:
    fwd: Forwarded
    taken_by: str | None = None
    answer: Answer | None = None


class FakeDatabase:
    """The shared state: what the tables of the PostgreSQL store hold."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.up = True
        self.nodes: dict[str, NodeInfo] = {}
        self.jobs: dict[tuple[str, str], _Job] = {}
        self.slots: dict[tuple[str, str, float], str] = {}
        self.runs: dict[tuple[str, str, int], StoredRun] = {}
        self.logs: dict[tuple[str, str, int], bytes] = {}
        self.chunks: dict[tuple[str, str, int], list[tuple[int, bytes]]] = {}
        self.seen: dict[bytes, float] = {}
        self.requests: dict[int, _Request] = {}
        self._ids = itertools.count(1)
        self.listeners: list[FakeStore] = []
        #: every statement made, by method name (what a test may count)
        self.statements: list[str] = []

    def job(self, kind: str, job_id: str) -> _Job:
        return self.jobs.setdefault((kind, job_id), _Job())

    def notify(self, channel: str, payload: str) -> None:
        for store in list(self.listeners):
            self.clock.callLater(0, store.deliver, channel, payload)

    def next_id(self) -> int:
        return next(self._ids)


class FakeStore:
    """One node's connection to a L{FakeDatabase}."""

    def __init__(self, database: FakeDatabase, route: bool = True) -> None:
        self.db = database
        self.cut = False
        #: whether forwarded requests go to their to_node only (the shared
        #: protocol's first version did not: any node took them)
        self.route = route
        self._callback: Callable[[str, str], None] | None = None
        self._was_down = False

    # --- plumbing ----------------------------------------------------------

    def _do(self, name: str, f: Callable[[], object]) -> defer.Deferred:
        if self.cut or not self.db.up:
            self._was_down = True
            return defer.fail(Unavailable(f"{name}: database unreachable"))
        if self._was_down and self._callback is not None:
            self._was_down = False
            self.db.clock.callLater(0, self.deliver, RECONNECTED, "")
        self.db.statements.append(name)
        return defer.succeed(f())

    def deliver(self, channel: str, payload: str) -> None:
        if self._callback is not None and not self.cut and self.db.up:
            self._callback(channel, payload)

    def _now(self) -> float:
        return self.db.clock.seconds()

    # --- the protocol ------------------------------------------------------

    def migrate(self) -> defer.Deferred[None]:
        return self._do("migrate", lambda: None)

    def heartbeat(self, me: NodeInfo) -> defer.Deferred[list[NodeInfo]]:
        def run() -> list[NodeInfo]:
            before = self.db.nodes.get(me.name)
            self.db.nodes[me.name] = attrs.evolve(me, alive=True, last_seen=self._now())
            if before is None or not before.alive:
                self.db.notify("karajo_node", me.name)
            return list(self.db.nodes.values())

        return self._do("heartbeat", run)

    def reap(self, node_timeout: float, me: str) -> defer.Deferred[list[StoredRun]]:
        def run() -> list[StoredRun]:
            now = self._now()
            dead = [n for n in self.db.nodes.values()
                    if n.alive and n.name != me and n.last_seen < now - node_timeout]
            ended = []
            for node in dead:
                self.db.nodes[node.name] = attrs.evolve(node, alive=False, running=0)
                self.db.notify("karajo_node", node.name)
                line = (f"!!! node {node.name} was lost (not heard from for "
                        f"{node_timeout:g}s)\n").encode()
                ended += self._end_running(node.name, line)
            return ended

        return self._do("reap", run)

    def _end_running(self, node: str, line: bytes) -> list[StoredRun]:
        ended = []
        for key, stored in list(self.db.runs.items()):
            record = stored.record
            if record.node != node or record.status is not RunStatus.RUNNING:
                continue
            record = attrs.evolve(record, status=RunStatus.FAILED, ended=self._now())
            stored = self.db.runs[key] = StoredRun(stored.kind, record)
            body = self.db.logs.get(key) or b"".join(d for _, d in self.db.chunks.pop(key, []))
            self.db.logs[key] = body + line
            job = self.db.job(stored.kind, record.job_id)
            if job.running_node == node:
                job.running_node = job.running_counter = None
            self.db.notify("karajo_run", f"{stored.kind}/{record.job_id}/{record.counter}")
            ended.append(stored)
        return ended

    def restarted(self, me: str) -> defer.Deferred[list[StoredRun]]:
        return self._do("restarted", lambda: self._end_running(
            me, f"!!! node {me} restarted during this run\n".encode()))

    def leave(self, me: str) -> defer.Deferred[list[StoredRun]]:
        def run() -> list[StoredRun]:
            node = self.db.nodes.get(me)
            if node is not None and node.alive:
                self.db.nodes[me] = attrs.evolve(node, alive=False, running=0)
                self.db.notify("karajo_node", me)
            return self._end_running(me, f"!!! node {me} stopped during this run\n".encode())

        return self._do("leave", run)

    def reserve_counters(
        self, kind: str, job_id: str, n: int, after: int = 0
    ) -> defer.Deferred[range]:
        def run() -> range:
            job = self.db.job(kind, job_id)
            job.counter = max(job.counter, after) + n
            return range(job.counter - n + 1, job.counter + 1)

        return self._do("reserve_counters", run)

    def claim_slots(
        self, me: str, slots: Sequence[tuple[str, str, float]]
    ) -> defer.Deferred[set[tuple[str, str, float]]]:
        def run() -> set[tuple[str, str, float]]:
            won = set()
            for slot in slots:
                if self.db.slots.setdefault(slot, me) == me:
                    won.add(slot)
            return won

        return self._do("claim_slots", run)

    def last_slot(self, kind: str, job_id: str) -> defer.Deferred[float | None]:
        return self._do("last_slot", lambda: max(
            (s for k, j, s in self.db.slots if (k, j) == (kind, job_id)), default=None))

    def _begin(self, me: str, kind: str, record: RunRecord) -> bool:
        job = self.db.job(kind, record.job_id)
        if job.running_node not in (None, me):
            return False
        job.running_node, job.running_counter = me, record.counter
        self.db.runs[(kind, record.job_id, record.counter)] = StoredRun(
            kind, attrs.evolve(record, node=me))
        self.db.notify("karajo_run", f"{kind}/{record.job_id}/{record.counter}")
        return True

    def begin_run(self, me: str, kind: str, record: RunRecord) -> defer.Deferred[bool]:
        return self._do("begin_run", lambda: self._begin(me, kind, record))

    def begin_runs(
        self, me: str, runs: Sequence[tuple[str, RunRecord]]
    ) -> defer.Deferred[list[bool]]:
        # One statement: all decided at once, in order (a job twice: the second after the first).
        return self._do("begin_runs", lambda: [self._begin(me, kind, r) for kind, r in runs])

    def _end(self, kind: str, record: RunRecord, log: bytes) -> None:
        key = (kind, record.job_id, record.counter)
        self.db.runs[key] = StoredRun(kind, record)
        self.db.logs[key] = log
        self.db.chunks.pop(key, None)
        job = self.db.job(kind, record.job_id)
        if job.running_node == record.node and job.running_counter == record.counter:
            job.running_node = job.running_counter = None
        self.db.notify("karajo_run", f"{kind}/{record.job_id}/{record.counter}")

    def end_run(self, kind: str, record: RunRecord, log: bytes) -> defer.Deferred[None]:
        return self._do("end_run", lambda: self._end(kind, record, log))

    def end_runs(self, runs: Sequence[tuple[str, RunRecord, bytes]]) -> defer.Deferred[None]:
        def run() -> None:
            for kind, record, log in runs:
                self._end(kind, record, log)

        return self._do("end_runs", run)

    def append_logs(self, chunks: Sequence[tuple[str, str, int, int, bytes]]) -> defer.Deferred[None]:
        def run() -> None:
            for kind, job_id, counter, offset, data in chunks:
                stored = self.db.chunks.setdefault((kind, job_id, counter), [])
                if all(at != offset for at, _ in stored):
                    stored.append((offset, data))
                self.db.notify("karajo_run", f"{kind}/{job_id}/{counter}")

        return self._do("append_logs", run)

    def runs(
        self, kind: str | None = None, job_id: str | None = None
    ) -> defer.Deferred[list[StoredRun]]:
        return self._do("runs", lambda: [
            r for (k, j, _), r in sorted(self.db.runs.items())
            if kind in (None, k) and job_id in (None, j)])

    def run(self, kind: str, job_id: str, counter: int) -> defer.Deferred[StoredRun | None]:
        return self._do("run", lambda: self.db.runs.get((kind, job_id, counter)))

    def read_log(
        self, kind: str, job_id: str, counter: int, offset: int = 0
    ) -> defer.Deferred[bytes]:
        def run() -> bytes:
            key = (kind, job_id, counter)
            if key in self.db.logs:
                return self.db.logs[key][offset:]
            body = b""
            for at, data in sorted(self.db.chunks.get(key, [])):
                if at == len(body):
                    body += data
            return body[offset:]

        return self._do("read_log", run)

    def forget_runs(self, kind: str, job_id: str, counters: Sequence[int]) -> defer.Deferred[None]:
        def run() -> None:
            for counter in counters:
                for table in (self.db.runs, self.db.logs, self.db.chunks):
                    table.pop((kind, job_id, counter), None)

        return self._do("forget_runs", run)

    def set_paused(self, kind: str, job_id: str, paused: bool) -> defer.Deferred[None]:
        def run() -> None:
            self.db.job(kind, job_id).paused = paused
            self.db.notify("karajo_pause", f"{kind}/{job_id}")

        return self._do("set_paused", run)

    def paused_jobs(self) -> defer.Deferred[set[tuple[str, str]]]:
        return self._do("paused_jobs", lambda: {k for k, j in self.db.jobs.items() if j.paused})

    def seen_request(self, key: bytes, expires: float) -> defer.Deferred[bool]:
        def run() -> bool:
            now = self._now()
            for old in [k for k, t in self.db.seen.items() if t < now]:
                del self.db.seen[old]
            if key in self.db.seen:
                return False
            self.db.seen[key] = expires
            return True

        return self._do("seen_request", run)

    def forward(self, me: str, fwd: Forwarded) -> defer.Deferred[int]:
        def run() -> int:
            request_id = self.db.next_id()
            self.db.requests[request_id] = _Request(attrs.evolve(fwd, id=request_id))
            self.db.notify("karajo_request",
                           f"{request_id} {fwd.to_node}" if self.route else str(request_id))
            return request_id

        return self._do("forward", run)

    def take(self, me: str, request_id: int) -> defer.Deferred[Forwarded | None]:
        def run() -> Forwarded | None:
            request = self.db.requests.get(request_id)
            if request is None or request.taken_by is not None:
                return None
            if self.route and request.fwd.to_node not in (me, ""):
                return None
            request.taken_by = me
            return request.fwd if self.route else attrs.evolve(request.fwd, to_node="")

        return self._do("take", run)

    def answer(self, request_id: int, answer: Answer) -> defer.Deferred[None]:
        def run() -> None:
            self.db.requests[request_id].answer = answer
            self.db.notify("karajo_answer", str(request_id))

        return self._do("answer", run)

    def answer_of(self, request_id: int) -> defer.Deferred[Answer | None]:
        def run() -> Answer | None:
            request = self.db.requests.get(request_id)
            return request.answer if request is not None else None

        return self._do("answer_of", run)

    def prune(self, now: float) -> defer.Deferred[None]:
        def run() -> None:
            for slot in [s for s in self.db.slots if s[2] < now - 86400]:
                del self.db.slots[slot]
            for key in [k for k, t in self.db.seen.items() if t < now]:
                del self.db.seen[key]

        return self._do("prune", run)

    def listen(self, channel_callback: Callable[[str, str], None]) -> None:
        self._callback = channel_callback
        self.db.listeners.append(self)

    def close(self) -> defer.Deferred[None]:
        if self in self.db.listeners:
            self.db.listeners.remove(self)
        self._callback = None
        return defer.succeed(None)
