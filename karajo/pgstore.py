"""
The cluster's shared state on PostgreSQL: L{PgStore}, the
L{karajo.clusterstore.ClusterStore} of a real cluster (docs/cluster.md).

Imported only when the configuration has a C{[cluster]} section (psycopg
is the C{cluster} extra).  Its connections (a pool of threads, deadlines,
the listening connection) are in L{karajo.pgconnections}; this module is
the statements' Python side: parameters in, values out.

Cost per operation: one statement, one round trip (two the first time a
connection meets a statement: it is prepared then).  Connections are in
autocommit mode (no C{BEGIN}/C{COMMIT} round trips); what must change
several tables at once is one statement with data-modifying C{WITH}
clauses, atomic by itself, and notifications are sent by C{pg_notify} in
that same statement (delivered at its commit).  Batches (slot claims, log
chunks) are one statement over C{unnest} of arrays.  Statements are
prepared on first use on each connection (C{prepare_threshold=0}).  Every
C{WHERE} has its index (L{karajo.clusterschema}).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from twisted.internet import defer
from twisted.logger import Logger

from karajo import pgstatements as sql
from karajo.clusterschema import migrate as migrate_schema
from karajo.clusterstore import Answer, Forwarded, NodeInfo, StoredRun
from karajo.duration import format_duration
from karajo.model import TriggerRequest
from karajo.pgconnections import PgConnections, describe
from karajo.runrecord import RunRecord

__all__ = ["PgStore", "describe"]

_log = Logger()

#: Slots are kept this long (beyond the newest of each job).
SLOT_RETENTION = 24 * 60 * 60.0


def _stored(row: Sequence[Any]) -> StoredRun:
    kind, job_id, counter, status, started, ended, trigger, attempt, node = row
    return StoredRun(kind, RunRecord(job_id, counter, status, started, ended, trigger, attempt, node))


def _stored_runs(rows: list[tuple[Any, ...]]) -> list[StoredRun]:
    return [_stored(row) for row in rows]


class PgStore(PgConnections):
    """
    L{karajo.clusterstore.ClusterStore} on PostgreSQL; see the module
    docstring.  Made as L{PgConnections} is (reactor, database URL,
    pool size, timeouts, options).
    """

    def migrate(self) -> defer.Deferred[None]:
        def work(conn: psycopg.Connection) -> None:
            found = migrate_schema(conn)
            _log.info("Cluster schema at version {found} before start", found=found)

        return self._call(work)

    def heartbeat(self, me: NodeInfo) -> defer.Deferred[list[NodeInfo]]:
        params = {
            "name": me.name, "running": me.running, "version": me.version,
            "digest": me.config_digest, "started": me.started,
        }
        return self._fetch(sql.HEARTBEAT, params, lambda rows: [NodeInfo(*row) for row in rows])

    def reap(self, node_timeout: float, me: str) -> defer.Deferred[list[StoredRun]]:
        label = format_duration(datetime.timedelta(seconds=node_timeout))
        params = {"me": me, "timeout": node_timeout, "label": label}
        return self._fetch(sql.REAP, params, _stored_runs)

    def restarted(self, me: str) -> defer.Deferred[list[StoredRun]]:
        return self._fetch(sql.RESTARTED, {"me": me}, _stored_runs)

    def leave(self, me: str) -> defer.Deferred[list[StoredRun]]:
        return self._fetch(sql.LEAVE, {"me": me}, _stored_runs)

    def reserve_counters(
        self, kind: str, job_id: str, n: int, after: int = 0
    ) -> defer.Deferred[range]:
        if n < 1:
            raise ValueError(f"reserve at least one counter, not {n}")
        params = {"kind": kind, "job": job_id, "n": n, "after": after}
        return self._fetch(sql.RESERVE, params, lambda rows: range(rows[0][0] - n + 1, rows[0][0] + 1))

    def claim_slots(
        self, me: str, slots: Sequence[tuple[str, str, float]]
    ) -> defer.Deferred[set[tuple[str, str, float]]]:
        # One row per key (ON CONFLICT DO UPDATE touches a row once), in one
        # order on every node: two nodes claiming the same slots in different
        # orders would each wait for the other (a deadlock, seen in tests).
        unique = sorted({(k, j, float(s)) for k, j, s in slots})
        if not unique:
            return defer.succeed(set())
        kinds, jobs, times = (list(column) for column in zip(*unique, strict=True))
        params = {"me": me, "kinds": kinds, "jobs": jobs, "slots": times}
        return self._fetch(sql.CLAIM, params, lambda rows: {(k, j, s) for k, j, s in rows})

    def last_slot(self, kind: str, job_id: str) -> defer.Deferred[float | None]:
        return self._fetch(sql.LAST_SLOT, (kind, job_id), lambda rows: rows[0][0])

    def begin_run(self, me: str, kind: str, record: RunRecord) -> defer.Deferred[bool]:
        return self.begin_runs(me, [(kind, record)]).addCallback(lambda began: began[0])

    def begin_runs(
        self, me: str, runs: Sequence[tuple[str, RunRecord]]
    ) -> defer.Deferred[list[bool]]:
        if not runs:
            return defer.succeed([])
        # A job may appear once per statement (ON CONFLICT touches a row
        # once): a second run of the same job, rare, goes in a next one.
        rounds: list[list[int]] = []
        seen: dict[tuple[str, str], int] = {}
        for i, (kind, record) in enumerate(runs):
            n = seen.get((kind, record.job_id), 0)
            seen[(kind, record.job_id)] = n + 1
            if n == len(rounds):
                rounds.append([])
            rounds[n].append(i)
        for indexes in rounds:  # in one order on every node, as claims are
            indexes.sort(key=lambda i: (runs[i][0], runs[i][1].job_id))

        def work(conn: psycopg.Connection) -> list[bool]:
            began = [False] * len(runs)
            for indexes in rounds:
                batch = [runs[i] for i in indexes]
                rows = conn.execute(sql.BEGIN, {
                    "me": me,
                    "kinds": [kind for kind, _ in batch],
                    "jobs": [r.job_id for _, r in batch],
                    "counters": [r.counter for _, r in batch],
                    "statuses": [str(r.status) for _, r in batch],
                    "started": [r.started for _, r in batch],
                    "ended": [r.ended for _, r in batch],
                    "triggers": [r.trigger for _, r in batch],
                    "attempts": [r.attempt for _, r in batch],
                }).fetchall()
                for i, (ok,) in zip(indexes, rows, strict=True):
                    began[i] = ok
            return began

        return self._call(work)

    def end_run(self, kind: str, record: RunRecord, log: bytes) -> defer.Deferred[None]:
        return self.end_runs([(kind, record, log)])

    def end_runs(self, runs: Sequence[tuple[str, RunRecord, bytes]]) -> defer.Deferred[None]:
        # One row per run (the last word wins), in one order on every node.
        last = {(kind, r.job_id, r.counter): (kind, r, log) for kind, r, log in runs}
        batch = [last[key] for key in sorted(last)]
        if not batch:
            return defer.succeed(None)
        return self._execute(sql.END, {
            "kinds": [kind for kind, _, _ in batch],
            "jobs": [r.job_id for _, r, _ in batch],
            "counters": [r.counter for _, r, _ in batch],
            "statuses": [str(r.status) for _, r, _ in batch],
            "started": [r.started for _, r, _ in batch],
            "ended": [r.ended for _, r, _ in batch],
            "triggers": [r.trigger for _, r, _ in batch],
            "attempts": [r.attempt for _, r, _ in batch],
            "nodes": [r.node for _, r, _ in batch],
            "logs": [bytes(log) for _, _, log in batch],
        })

    def append_logs(
        self, chunks: Sequence[tuple[str, str, int, int, bytes]]
    ) -> defer.Deferred[None]:
        if not chunks:
            return defer.succeed(None)
        kinds, jobs, counters, offsets, data = (list(column) for column in zip(*chunks, strict=True))
        return self._execute(sql.APPEND, {
            "kinds": kinds, "jobs": jobs, "counters": counters, "offsets": offsets,
            "data": [bytes(b) for b in data],
        })

    def runs(
        self, kind: str | None = None, job_id: str | None = None
    ) -> defer.Deferred[list[StoredRun]]:
        if kind is None:
            return self._fetch(sql.RUNS_ALL, None, _stored_runs)
        if job_id is None:
            return self._fetch(sql.RUNS_OF_KIND, (kind,), _stored_runs)
        return self._fetch(sql.RUNS_OF_JOB, (kind, job_id), _stored_runs)

    def run(self, kind: str, job_id: str, counter: int) -> defer.Deferred[StoredRun | None]:
        return self._fetch(
            sql.RUN, (kind, job_id, counter), lambda rows: _stored(rows[0]) if rows else None
        )

    def read_log(
        self, kind: str, job_id: str, counter: int, offset: int = 0
    ) -> defer.Deferred[bytes]:
        offset = max(0, offset)

        def assemble(rows: list[tuple[Any, ...]]) -> bytes:
            if rows and rows[0][0] < 0:  # the final body, already cut at offset
                return bytes(rows[0][1])
            return b"".join(bytes(data)[max(0, offset - off):] for off, data in rows)

        params = {"kind": kind, "job": job_id, "counter": counter, "off": offset}
        return self._fetch(sql.READ_LOG, params, assemble)

    def forget_runs(
        self, kind: str, job_id: str, counters: Sequence[int]
    ) -> defer.Deferred[None]:
        if not counters:
            return defer.succeed(None)
        return self._execute(sql.FORGET, {"kind": kind, "job": job_id, "counters": list(counters)})

    def set_paused(self, kind: str, job_id: str, paused: bool) -> defer.Deferred[None]:
        return self._execute(sql.SET_PAUSED, {"kind": kind, "job": job_id, "paused": paused})

    def paused_jobs(self) -> defer.Deferred[set[tuple[str, str]]]:
        return self._fetch(sql.PAUSED, None, lambda rows: {(k, j) for k, j in rows})

    def seen_request(self, key: bytes, expires: float) -> defer.Deferred[bool]:
        return self._fetch(sql.SEEN, (bytes(key), expires), bool)

    def forward(self, me: str, fwd: Forwarded) -> defer.Deferred[int]:
        request = fwd.request
        params = {
            "kind": fwd.kind, "job": fwd.job_id, "action": fwd.action, "trigger": fwd.trigger,
            "method": request.method if request else None,
            "path": request.path if request else None,
            "headers": Jsonb(dict(request.headers)) if request else None,
            "body": bytes(request.body) if request else None,
            "from": me, "to": fwd.to_node,
        }
        return self._fetch(sql.FORWARD, params, lambda rows: rows[0][0])

    def take(self, me: str, request_id: int) -> defer.Deferred[Forwarded | None]:
        def forwarded(rows: list[tuple[Any, ...]]) -> Forwarded | None:
            if not rows:
                return None
            id_, kind, job_id, action, trigger, method, path, headers, body, from_, to = rows[0]
            request = None
            if method is not None:
                request = TriggerRequest(method, path, dict(headers or {}), bytes(body or b""))
            return Forwarded(id_, kind, job_id, action, trigger, request, from_, to)

        return self._fetch(sql.TAKE, {"me": me, "id": request_id}, forwarded)

    def answer(self, request_id: int, answer: Answer) -> defer.Deferred[None]:
        return self._execute(sql.ANSWER, {
            "id": request_id, "outcome": answer.outcome, "counter": answer.counter,
            "message": answer.message,
        })

    def answer_of(self, request_id: int) -> defer.Deferred[Answer | None]:
        return self._fetch(
            sql.ANSWER_OF, (request_id,), lambda rows: Answer(*rows[0]) if rows else None
        )

    def prune(self, now: float) -> defer.Deferred[None]:
        return self._execute(sql.PRUNE, {"slots": now - SLOT_RETENTION, "now": now})

