"""
The cluster's shared state on PostgreSQL: L{PgStore}, the
L{karajo.clusterstore.ClusterStore} of a real cluster (docs/cluster.md).

Imported only when the configuration has a C{[cluster]} section (psycopg
is the C{cluster} extra).

How it talks to the database
============================

Statements run on a pool of threads of its own (C{pool_size}, default 4),
each thread holding one blocking psycopg connection; a call is handed over
with C{deferToThreadPool} and its result comes back on the reactor thread.
The choice was measured (C{bench/db_roundtrip.py}; figures in
bench/README.md) against non-blocking libpq connections whose socket the
reactor watches.  Non-blocking costs the process 2-3x less CPU per
statement and is faster for a bare round trip, but the reactor thread
itself pays more with it (it parses every result): median reactor-thread
CPU per claim 61 us with this store against 81 us non-blocking, 16 in
flight.  The reactor thread is what timers and HTTP wait for, so the pool
wins; it also keeps the connect, its name lookup and a server gone silent
entirely off the reactor, and psycopg whole (parameters, types, prepared
statements, errors).  A write waits for the database's commit either way.

Cost per operation: one statement, one round trip (two the first time a
connection meets a statement: it is prepared then).  Connections are in
autocommit mode (no C{BEGIN}/C{COMMIT} round trips); what must change
several tables at once is one statement with data-modifying C{WITH}
clauses, atomic by itself, and notifications are sent by C{pg_notify} in
that same statement (delivered at its commit).  Batches (slot claims, log
chunks) are one statement over C{unnest} of arrays.  Statements are
prepared on first use on each connection (C{prepare_threshold=0}).  Every
C{WHERE} has its index (L{karajo.clusterschema}).

Failures: a connection error, a refused or timed-out connect
(C{connect_timeout}), a statement over C{statement_timeout} all fail the
call's Deferred with L{Unavailable}; for a second after one, calls fail at
once without waiting for a connect (a node polling an unreachable database
then costs nothing).  Before a statement, a connection the server closed
meanwhile (its socket readable while idle: a restart, an admin shutdown)
is replaced, and so is every connection when the listening connection
was lost, so the first statement after a database restart finds a fresh
connection rather than failing.

Listening: one more connection, its socket watched by the reactor, runs
C{LISTEN} on every channel; notifications are read with libpq's
non-blocking C{consume_input} on the reactor thread.  When it is lost it
is made again (after 0.5 s, then doubling up to 5 s), the channels
listened to again, and C{karajo_reconnected} told.

The database URL may hold a password: it is never logged or put in an
error; L{describe} gives what may be shown.
"""

from __future__ import annotations

import datetime
import os
import select
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb
from psycopg.types.numeric import Int8Dumper
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from karajo.clusterschema import migrate as migrate_schema
from karajo.clusterstore import (
    CHANNELS,
    RECONNECTED,
    Answer,
    Forwarded,
    NodeInfo,
    StoredRun,
    Unavailable,
)
from karajo.duration import format_duration
from karajo.model import TriggerRequest
from karajo.runrecord import RunRecord

__all__ = ["PgStore", "describe"]

_log = Logger()
_T = TypeVar("_T")

#: Slots are kept this long (beyond the newest of each job).
SLOT_RETENTION = 24 * 60 * 60.0
#: Calls fail at once for this long after the database failed one.
BACKOFF = 1.0
#: The listening connection is made again after this, doubling up to the max.
LISTEN_RETRY = 0.5
LISTEN_RETRY_MAX = 5.0

_RUN_COLUMNS = "kind, job_id, counter, status, started, ended, trigger, attempt, node"
_RUN_PAYLOAD = "kind || '/' || job_id || '/' || counter"
_RUNS = f"SELECT {_RUN_COLUMNS} FROM karajo_run"
_RUNS_ORDER = " ORDER BY kind, job_id, counter"


def describe(conninfo: str) -> str:
    """The database of C{conninfo} as it may be shown: host, port, name, user; no password."""
    try:
        parts = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "(unparsable database URL)"
    shown = [f"{k}={parts[k]}" for k in ("host", "port", "dbname", "user") if parts.get(k)]
    return " ".join(shown) or "(default database)"


def _stored(row: Sequence[Any]) -> StoredRun:
    kind, job_id, counter, status, started, ended, trigger, attempt, node = row
    return StoredRun(kind, RunRecord(job_id, counter, status, started, ended, trigger, attempt, node))


def _readable(fd: int) -> bool:
    """Whether an idle connection's socket has something to read: the server said goodbye."""
    poller = select.poll()  # not select(): descriptors above 1023 are common in a busy daemon
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def _stored_runs(rows: list[tuple[Any, ...]]) -> list[StoredRun]:
    return [_stored(row) for row in rows]


class PgStore:
    """
    L{karajo.clusterstore.ClusterStore} on PostgreSQL; see the module docstring.

    @param reactor: provides C{IReactorTime}, C{IReactorFDSet} and
        C{IReactorThreads} (its own pool stops this one's threads).
    @param conninfo: libpq URL or C{key=value} string (never logged).
    @param options: extra server settings for every connection, as in libpq's
        C{options} (tests give C{-c search_path=...}).
    """

    def __init__(
        self,
        reactor: Any,
        conninfo: str,
        *,
        pool_size: int = 4,
        connect_timeout: int = 3,
        statement_timeout: float = 5.0,
        options: str = "",
    ) -> None:
        self._reactor = reactor
        self._conninfo = conninfo
        self.database = describe(conninfo)
        timeout_ms = int(statement_timeout * 1000)
        own = (
            f"-c statement_timeout={timeout_ms} -c lock_timeout={timeout_ms}"
            f" -c idle_in_transaction_session_timeout={2 * timeout_ms}"
        )
        given = conninfo_to_dict(conninfo).get("options") or ""
        self._connect_args: dict[str, Any] = {
            "autocommit": True,
            "prepare_threshold": 0,
            "connect_timeout": connect_timeout,
            "application_name": "karajo",
            "options": " ".join(o for o in (str(given), own, options) if o),
            # A database host gone silent is noticed in seconds, not hours.
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 2,
            "tcp_user_timeout": timeout_ms,
        }
        self._pool = ThreadPool(minthreads=0, maxthreads=pool_size, name="karajo-db")
        self._pool.start()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: set[psycopg.Connection] = set()
        #: Bumped when every pooled connection must be made again.
        self._generation = 0
        self._down_until = 0.0
        self._down = False
        self._closed = False
        self._listener: _Listener | None = None

    # -- plumbing --------------------------------------------------------

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self._conninfo, **self._connect_args)
        # Every int as bigint: one prepared statement per query whatever the
        # values, and no smallint arithmetic that could overflow.
        conn.adapters.register_dumper(int, Int8Dumper)
        with self._lock:
            self._connections.add(conn)
        return conn

    def _discard(self, conn: psycopg.Connection | None) -> None:
        if conn is None:
            return
        with self._lock:
            self._connections.discard(conn)
        try:
            conn.close()
        except Exception:  # a broken connection may fail to close; it is gone anyway
            pass

    def _thread_connection(self) -> psycopg.Connection:
        """This thread's connection, made again when stale (see the module docstring)."""
        conn: psycopg.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and (
            conn.closed
            or conn.broken
            or self._local.generation != self._generation
            or _readable(conn.fileno())
        ):
            self._discard(conn)
            conn = None
        if conn is None:
            self._local.conn = None
            self._local.generation = self._generation
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _in_thread(self, work: Callable[[psycopg.Connection], _T]) -> _T:
        try:
            conn = self._thread_connection()
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            raise Unavailable(f"cannot connect to {self.database}: {e}") from None
        try:
            return work(conn)
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            self._local.conn = None
            self._discard(conn)
            raise Unavailable(str(e).strip()) from None

    def _call(self, work: Callable[[psycopg.Connection], _T]) -> defer.Deferred[_T]:
        """Run C{work(connection)} on the pool; L{Unavailable} when the database is not there."""
        if self._closed:
            return defer.fail(Unavailable("the cluster store is closed"))
        if self._reactor.seconds() < self._down_until:
            return defer.fail(Unavailable(f"{self.database} was unreachable a moment ago"))
        d = deferToThreadPool(self._reactor, self._pool, self._in_thread, work)
        d.addCallbacks(self._up, self._failed)
        return d

    def _up(self, result: _T) -> _T:
        if self._down:
            self._down = False
            _log.info("Cluster database {database} reachable again", database=self.database)
        return result

    def _failed(self, failure: Failure) -> Failure:
        if failure.check(Unavailable):
            self._down_until = self._reactor.seconds() + BACKOFF
            if not self._down:
                self._down = True
                _log.warn(
                    "Cluster database {database} unavailable: {error}",
                    database=self.database, error=failure.getErrorMessage(),
                )
        return failure

    def _fresh_connections(self) -> None:
        """Every pooled connection is made again before its next statement."""
        self._generation += 1

    def _fetch(
        self, query: str, params: Any, convert: Callable[[list[tuple[Any, ...]]], _T]
    ) -> defer.Deferred[_T]:
        """The rows of C{query}, made values by C{convert} (in the thread too)."""
        return self._call(lambda conn: convert(conn.execute(query, params).fetchall()))

    def _execute(self, query: str, params: Any = None) -> defer.Deferred[None]:
        def work(conn: psycopg.Connection) -> None:
            conn.execute(query, params)

        return self._call(work)

    # -- the protocol ----------------------------------------------------

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
        return self._fetch(_HEARTBEAT, params, lambda rows: [NodeInfo(*row) for row in rows])

    def reap(self, node_timeout: float, me: str) -> defer.Deferred[list[StoredRun]]:
        label = format_duration(datetime.timedelta(seconds=node_timeout))
        params = {"me": me, "timeout": node_timeout, "label": label}
        return self._fetch(_REAP, params, _stored_runs)

    def restarted(self, me: str) -> defer.Deferred[list[StoredRun]]:
        return self._fetch(_RESTARTED, {"me": me}, _stored_runs)

    def reserve_counters(
        self, kind: str, job_id: str, n: int, after: int = 0
    ) -> defer.Deferred[range]:
        if n < 1:
            raise ValueError(f"reserve at least one counter, not {n}")
        params = {"kind": kind, "job": job_id, "n": n, "after": after}
        return self._fetch(_RESERVE, params, lambda rows: range(rows[0][0] - n + 1, rows[0][0] + 1))

    def claim_slots(
        self, me: str, slots: Sequence[tuple[str, str, float]]
    ) -> defer.Deferred[set[tuple[str, str, float]]]:
        # One row per key: ON CONFLICT DO UPDATE refuses to touch a row twice.
        unique = list(dict.fromkeys((k, j, float(s)) for k, j, s in slots))
        if not unique:
            return defer.succeed(set())
        kinds, jobs, times = (list(column) for column in zip(*unique, strict=True))
        params = {"me": me, "kinds": kinds, "jobs": jobs, "slots": times}
        return self._fetch(_CLAIM, params, lambda rows: {(k, j, s) for k, j, s in rows})

    def last_slot(self, kind: str, job_id: str) -> defer.Deferred[float | None]:
        return self._fetch(
            "SELECT max(slot) FROM karajo_slot WHERE kind = %s AND job_id = %s",
            (kind, job_id), lambda rows: rows[0][0],
        )

    def begin_run(self, me: str, kind: str, record: RunRecord) -> defer.Deferred[bool]:
        params = {
            "me": me, "kind": kind, "job": record.job_id, "counter": record.counter,
            "status": str(record.status), "started": record.started, "ended": record.ended,
            "trigger": record.trigger, "attempt": record.attempt,
        }
        return self._fetch(_BEGIN, params, lambda rows: rows[0][0] == 1)

    def end_run(self, kind: str, record: RunRecord, log: bytes) -> defer.Deferred[None]:
        return self._execute(_END, {
            "kind": kind, "job": record.job_id, "counter": record.counter,
            "status": str(record.status), "started": record.started, "ended": record.ended,
            "trigger": record.trigger, "attempt": record.attempt, "node": record.node,
            "log": bytes(log),
        })

    def append_logs(
        self, chunks: Sequence[tuple[str, str, int, int, bytes]]
    ) -> defer.Deferred[None]:
        if not chunks:
            return defer.succeed(None)
        kinds, jobs, counters, offsets, data = (list(column) for column in zip(*chunks, strict=True))
        return self._execute(_APPEND, {
            "kinds": kinds, "jobs": jobs, "counters": counters, "offsets": offsets,
            "data": [bytes(b) for b in data],
        })

    def runs(
        self, kind: str | None = None, job_id: str | None = None
    ) -> defer.Deferred[list[StoredRun]]:
        # Three statements rather than one with optional filters: each keeps its index.
        if kind is None:
            return self._fetch(_RUNS + _RUNS_ORDER, None, _stored_runs)
        if job_id is None:
            return self._fetch(_RUNS + " WHERE kind = %s" + _RUNS_ORDER, (kind,), _stored_runs)
        return self._fetch(
            _RUNS + " WHERE kind = %s AND job_id = %s" + _RUNS_ORDER, (kind, job_id), _stored_runs
        )

    def run(self, kind: str, job_id: str, counter: int) -> defer.Deferred[StoredRun | None]:
        return self._fetch(
            _RUNS + " WHERE kind = %s AND job_id = %s AND counter = %s",
            (kind, job_id, counter), lambda rows: _stored(rows[0]) if rows else None,
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
        return self._fetch(_READ_LOG, params, assemble)

    def forget_runs(
        self, kind: str, job_id: str, counters: Sequence[int]
    ) -> defer.Deferred[None]:
        if not counters:
            return defer.succeed(None)
        return self._execute(_FORGET, {"kind": kind, "job": job_id, "counters": list(counters)})

    def set_paused(self, kind: str, job_id: str, paused: bool) -> defer.Deferred[None]:
        return self._execute(_SET_PAUSED, {"kind": kind, "job": job_id, "paused": paused})

    def paused_jobs(self) -> defer.Deferred[set[tuple[str, str]]]:
        return self._fetch(
            "SELECT kind, job_id FROM karajo_job WHERE paused", None,
            lambda rows: {(k, j) for k, j in rows},
        )

    def seen_request(self, key: bytes, expires: float) -> defer.Deferred[bool]:
        return self._fetch(
            "INSERT INTO karajo_replay (key, expires) VALUES (%s, %s)"
            " ON CONFLICT (key) DO NOTHING RETURNING 1",
            (bytes(key), expires), bool,
        )

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
        return self._fetch(_FORWARD, params, lambda rows: rows[0][0])

    def take(self, me: str, request_id: int) -> defer.Deferred[Forwarded | None]:
        def forwarded(rows: list[tuple[Any, ...]]) -> Forwarded | None:
            if not rows:
                return None
            id_, kind, job_id, action, trigger, method, path, headers, body, from_, to = rows[0]
            request = None
            if method is not None:
                request = TriggerRequest(method, path, dict(headers or {}), bytes(body or b""))
            return Forwarded(id_, kind, job_id, action, trigger, request, from_, to)

        return self._fetch(_TAKE, {"me": me, "id": request_id}, forwarded)

    def answer(self, request_id: int, answer: Answer) -> defer.Deferred[None]:
        return self._execute(_ANSWER, {
            "id": request_id, "outcome": answer.outcome, "counter": answer.counter,
            "message": answer.message,
        })

    def answer_of(self, request_id: int) -> defer.Deferred[Answer | None]:
        return self._fetch(
            "SELECT outcome, counter, message FROM karajo_request"
            " WHERE id = %s AND outcome IS NOT NULL",
            (request_id,), lambda rows: Answer(*rows[0]) if rows else None,
        )

    def prune(self, now: float) -> defer.Deferred[None]:
        return self._execute(_PRUNE, {"slots": now - SLOT_RETENTION, "now": now})

    def listen(self, channel_callback: Callable[[str, str], None]) -> None:
        if self._listener is not None:
            raise RuntimeError("this store listens already")
        self._listener = _Listener(self, channel_callback)
        self._listener.start()

    def close(self) -> defer.Deferred[None]:
        self._closed = True
        if self._listener is not None:
            self._listener.stop()
            self._listener = None

        def stop() -> None:
            self._pool.stop()
            with self._lock:
                left = list(self._connections)
            for conn in left:
                self._discard(conn)

        # ThreadPool.stop joins its threads: waited for off the reactor thread.
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), stop)


class _Listener:
    """The listening connection: its socket watched by the reactor, made again when lost."""

    def __init__(self, store: PgStore, callback: Callable[[str, str], None]) -> None:
        self._store = store
        self._callback = callback
        self._conn: psycopg.Connection | None = None
        self._fd = -1
        self._retry = LISTEN_RETRY
        self._pending: Any = None  # the IDelayedCall of the next attempt
        self._connecting = False
        self._ever = False
        self._stopped = False

    def start(self) -> None:
        self._connecting = True
        d = deferToThreadPool(self._store._reactor, self._store._pool, self._connect)
        d.addCallbacks(self._connected, self._not_connected)

    def _connect(self) -> psycopg.Connection:
        conn = self._store._connect()
        try:
            conn.execute("; ".join(f"LISTEN {channel}" for channel in CHANNELS), prepare=False)
            conn.pgconn.nonblocking = 1
        except BaseException:
            self._store._discard(conn)
            raise
        return conn

    def _connected(self, conn: psycopg.Connection) -> None:
        self._connecting = False
        if self._stopped:
            self._store._discard(conn)
            return
        self._conn = conn
        self._fd = os.dup(conn.pgconn.socket)
        self._retry = LISTEN_RETRY
        self._store._reactor.addReader(self)
        if self._ever:
            _log.info("Listening to the cluster database again")
            self._tell(RECONNECTED, "")
        self._ever = True
        self.doRead()  # anything that came with the LISTEN's answer

    def _not_connected(self, failure: Failure) -> None:
        self._connecting = False
        if self._stopped:
            return
        _log.warn(
            "Cannot listen to the cluster database {database}: {error}; trying again in {delay}s",
            database=self._store.database, error=failure.getErrorMessage(), delay=self._retry,
        )
        self._again()

    def _again(self) -> None:
        self._pending = self._store._reactor.callLater(self._retry, self._attempt)
        self._retry = min(self._retry * 2, LISTEN_RETRY_MAX)

    def _attempt(self) -> None:
        self._pending = None
        if not self._stopped:
            self.start()

    def _tell(self, channel: str, payload: str) -> None:
        try:
            self._callback(channel, payload)
        except Exception:
            _log.failure("A cluster notification's handler failed ({channel})", channel=channel)

    # IReadDescriptor
    def fileno(self) -> int:
        # A duplicate of the connection's socket, ours to close: libpq closes
        # its own when the connection is lost, which would take the socket
        # out of the reactor's poller behind its back.
        return self._fd

    def logPrefix(self) -> str:
        return "karajo-db-listen"

    def doRead(self) -> None:
        conn = self._conn
        if conn is None:
            return
        pgconn = conn.pgconn
        try:
            pgconn.consume_input()
        except psycopg.Error as e:
            self._lost(str(e).strip())
            return
        while (note := pgconn.notifies()) is not None:
            self._tell(
                note.relname.decode("utf-8", "replace"), note.extra.decode("utf-8", "replace")
            )
            if self._conn is None:  # the handler closed the store
                return
        if pgconn.status != pq.ConnStatus.OK:
            self._lost("connection closed")

    def connectionLost(self, reason: object) -> None:
        pass

    def _lost(self, why: str) -> None:
        _log.warn("Lost the cluster database's listening connection: {why}", why=why)
        self._drop()
        # The server went away: the pooled connections are likely dead too.
        self._store._fresh_connections()
        if not self._stopped:
            self._again()

    def _drop(self) -> None:
        if self._conn is not None:
            self._store._reactor.removeReader(self)
            os.close(self._fd)
            self._store._discard(self._conn)
            self._conn, self._fd = None, -1

    def stop(self) -> None:
        self._stopped = True
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        self._drop()


# -- the statements ------------------------------------------------------

_HEARTBEAT = """
WITH old AS (SELECT alive FROM karajo_node WHERE name = %(name)s),
up AS (
    INSERT INTO karajo_node (name, alive, last_seen, running, version, config_digest, started)
    VALUES (%(name)s, true, now(), %(running)s, %(version)s, %(digest)s, %(started)s)
    ON CONFLICT (name) DO UPDATE SET alive = true, last_seen = now(),
        running = excluded.running, version = excluded.version,
        config_digest = excluded.config_digest, started = excluded.started
    RETURNING name, alive, last_seen, running, version, config_digest, started,
        (SELECT pg_notify('karajo_node', %(name)s)
         WHERE NOT coalesce((SELECT alive FROM old), false)) AS told
)
SELECT name, alive, extract(epoch FROM last_seen)::float8, running, version, config_digest,
    started
FROM up
UNION ALL
SELECT name, alive, extract(epoch FROM last_seen)::float8, running, version, config_digest,
    started
FROM karajo_node WHERE name <> %(name)s
"""

# The stored log of a run ended by the cluster: its live chunks, then a line.
_ENDED_LOG = """
coalesce((SELECT string_agg(c.data, ''::bytea ORDER BY c.off) FROM karajo_log_chunk c
          WHERE c.kind = r.kind AND c.job_id = r.job_id AND c.counter = r.counter), ''::bytea)
    || convert_to({line} || E'\\n', 'UTF8')
"""

_REAP = f"""
WITH dead AS (
    UPDATE karajo_node SET alive = false
    WHERE alive AND name <> %(me)s AND last_seen < now() - make_interval(secs => %(timeout)s)
    RETURNING name, pg_notify('karajo_node', name)
),
ended AS (
    UPDATE karajo_run r SET status = 'failed', ended = extract(epoch FROM now()),
        log = {_ENDED_LOG.format(
            line="'!!! node ' || r.node || ' was lost (not heard from for ' || %(label)s || ')'")}
    FROM dead WHERE r.node = dead.name AND r.status = 'running'
    RETURNING {", ".join("r." + c for c in _RUN_COLUMNS.split(", "))},
        pg_notify('karajo_run', r.kind || '/' || r.job_id || '/' || r.counter)
),
freed AS (
    UPDATE karajo_job j SET running_node = NULL, running_counter = NULL
    FROM dead WHERE j.running_node = dead.name
),
dropped AS (
    DELETE FROM karajo_log_chunk c USING ended e
    WHERE c.kind = e.kind AND c.job_id = e.job_id AND c.counter = e.counter
)
SELECT {_RUN_COLUMNS} FROM ended
"""

_RESTARTED = f"""
WITH ended AS (
    UPDATE karajo_run r SET status = 'failed', ended = extract(epoch FROM now()),
        log = {_ENDED_LOG.format(
            line="'!!! node ' || r.node || ' restarted during this run; marked failed at start-up'")}
    WHERE r.node = %(me)s AND r.status = 'running'
    RETURNING {", ".join("r." + c for c in _RUN_COLUMNS.split(", "))},
        pg_notify('karajo_run', r.kind || '/' || r.job_id || '/' || r.counter)
),
freed AS (
    UPDATE karajo_job SET running_node = NULL, running_counter = NULL WHERE running_node = %(me)s
),
dropped AS (
    DELETE FROM karajo_log_chunk c USING ended e
    WHERE c.kind = e.kind AND c.job_id = e.job_id AND c.counter = e.counter
)
SELECT {_RUN_COLUMNS} FROM ended
"""

_RESERVE = """
INSERT INTO karajo_job (kind, job_id, counter) VALUES (%(kind)s, %(job)s, %(after)s + %(n)s)
ON CONFLICT (kind, job_id) DO UPDATE
    SET counter = greatest(karajo_job.counter, %(after)s) + %(n)s
RETURNING counter
"""

# A slot claimed again by its holder is won again: a retried claim is safe.
_CLAIM = """
INSERT INTO karajo_slot (kind, job_id, slot, node)
SELECT kind, job_id, slot, %(me)s
FROM unnest(%(kinds)s::text[], %(jobs)s::text[], %(slots)s::float8[]) AS u(kind, job_id, slot)
ON CONFLICT (kind, job_id, slot) DO UPDATE SET node = excluded.node
    WHERE karajo_slot.node = excluded.node
RETURNING kind, job_id, slot
"""

_BEGIN = f"""
WITH j AS (
    INSERT INTO karajo_job (kind, job_id, running_node, running_counter)
    VALUES (%(kind)s, %(job)s, %(me)s, %(counter)s)
    ON CONFLICT (kind, job_id) DO UPDATE
        SET running_node = excluded.running_node, running_counter = excluded.running_counter
        WHERE karajo_job.running_node IS NULL OR karajo_job.running_node = excluded.running_node
    RETURNING 1
),
r AS (
    INSERT INTO karajo_run ({_RUN_COLUMNS})
    SELECT %(kind)s, %(job)s, %(counter)s, %(status)s, %(started)s, %(ended)s, %(trigger)s,
        %(attempt)s, %(me)s
    FROM j
    ON CONFLICT (kind, job_id, counter) DO UPDATE SET status = excluded.status,
        started = excluded.started, ended = excluded.ended, trigger = excluded.trigger,
        attempt = excluded.attempt, node = excluded.node
    RETURNING pg_notify('karajo_run', {_RUN_PAYLOAD})
)
SELECT count(*) FROM j
"""

_END = f"""
WITH r AS (
    INSERT INTO karajo_run ({_RUN_COLUMNS}, log)
    VALUES (%(kind)s, %(job)s, %(counter)s, %(status)s, %(started)s, %(ended)s, %(trigger)s,
        %(attempt)s, %(node)s, %(log)s)
    ON CONFLICT (kind, job_id, counter) DO UPDATE SET status = excluded.status,
        started = excluded.started, ended = excluded.ended, trigger = excluded.trigger,
        attempt = excluded.attempt, node = excluded.node, log = excluded.log
    RETURNING pg_notify('karajo_run', {_RUN_PAYLOAD})
),
j AS (
    UPDATE karajo_job SET running_node = NULL, running_counter = NULL
    WHERE kind = %(kind)s AND job_id = %(job)s
        AND running_node = %(node)s AND running_counter = %(counter)s
)
DELETE FROM karajo_log_chunk WHERE kind = %(kind)s AND job_id = %(job)s AND counter = %(counter)s
"""

# Chunks of runs no longer running (ended, reaped) are not stored.
_APPEND = f"""
WITH c AS (
    INSERT INTO karajo_log_chunk (kind, job_id, counter, off, data)
    SELECT u.kind, u.job_id, u.counter, u.off, u.data
    FROM unnest(%(kinds)s::text[], %(jobs)s::text[], %(counters)s::int8[], %(offsets)s::int8[],
                %(data)s::bytea[]) AS u(kind, job_id, counter, off, data)
    JOIN karajo_run r USING (kind, job_id, counter)
    WHERE r.status = 'running'
    ON CONFLICT DO NOTHING
    RETURNING kind, job_id, counter
)
SELECT pg_notify('karajo_run', p) FROM (SELECT DISTINCT {_RUN_PAYLOAD} AS p FROM c) AS d
"""

_READ_LOG = """
SELECT -1::int8, substring(log FROM (%(off)s + 1)::int) FROM karajo_run
WHERE kind = %(kind)s AND job_id = %(job)s AND counter = %(counter)s AND log IS NOT NULL
UNION ALL
SELECT off, data FROM karajo_log_chunk
WHERE kind = %(kind)s AND job_id = %(job)s AND counter = %(counter)s
    AND off + length(data) > %(off)s
ORDER BY 1
"""

_FORGET = f"""
WITH c AS (
    DELETE FROM karajo_log_chunk
    WHERE kind = %(kind)s AND job_id = %(job)s AND counter = ANY(%(counters)s::int8[])
)
DELETE FROM karajo_run
WHERE kind = %(kind)s AND job_id = %(job)s AND counter = ANY(%(counters)s::int8[])
RETURNING pg_notify('karajo_run', {_RUN_PAYLOAD})
"""

_SET_PAUSED = """
INSERT INTO karajo_job (kind, job_id, paused) VALUES (%(kind)s, %(job)s, %(paused)s)
ON CONFLICT (kind, job_id) DO UPDATE SET paused = excluded.paused
RETURNING pg_notify('karajo_pause', kind || '/' || job_id)
"""

# The payload names the node the request is for: only that one takes it.
_FORWARD = """
INSERT INTO karajo_request (kind, job_id, action, trigger, method, path, headers, body,
    from_node, to_node)
VALUES (%(kind)s, %(job)s, %(action)s, %(trigger)s, %(method)s, %(path)s, %(headers)s,
    %(body)s, %(from)s, %(to)s)
RETURNING id, pg_notify('karajo_request', id::text || ' ' || to_node)
"""

_TAKE = """
UPDATE karajo_request SET taken_by = %(me)s
WHERE id = %(id)s AND taken_by IS NULL AND to_node IN ('', %(me)s)
RETURNING id, kind, job_id, action, trigger, method, path, headers, body, from_node, to_node
"""

_ANSWER = """
UPDATE karajo_request SET outcome = %(outcome)s, counter = %(counter)s, message = %(message)s
WHERE id = %(id)s
RETURNING pg_notify('karajo_answer', id::text)
"""

# Each job keeps its newest slot, however old: last_slot still answers.
_PRUNE = """
WITH s AS (
    DELETE FROM karajo_slot s WHERE s.slot < %(slots)s
        AND s.slot < (SELECT max(m.slot) FROM karajo_slot m
                      WHERE m.kind = s.kind AND m.job_id = s.job_id)
),
r AS (DELETE FROM karajo_replay WHERE expires < %(now)s)
DELETE FROM karajo_request WHERE created < now() - interval '1 hour'
"""
