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
call's Deferred with L{Unavailable}, and so does a call not answered by
its deadline (C{connect_timeout + statement_timeout + 1} s: a server that
takes bytes but answers nothing, stopped or its disk hung, trips no other
timeout; the waiting thread's socket is then shut so the thread is freed
too); for a second after one, calls fail at
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
import socket
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

from karajo import pgstatements as sql
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


def _shut(conn: psycopg.Connection) -> None:
    """Shut a connection's socket from another thread: its waiting thread gets an error."""
    try:
        sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
    except (OSError, psycopg.Error):
        return  # closed meanwhile
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


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
        #: How long a call may take, from the reactor's view: a connect and a
        #: statement, each at its timeout, and a second more.
        self._deadline = connect_timeout + statement_timeout + 1.0
        own = (
            f"-c statement_timeout={timeout_ms} -c lock_timeout={timeout_ms}"
            f" -c idle_in_transaction_session_timeout={2 * timeout_ms}"
        )
        try:
            given = conninfo_to_dict(conninfo).get("options") or ""
        except psycopg.ProgrammingError:
            # Not psycopg's message: it quotes pieces of the string (a password too).
            raise ValueError("the cluster database URL cannot be read") from None
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

    def _in_thread(self, work: Callable[[psycopg.Connection], _T], using: list) -> _T:
        try:
            conn = self._thread_connection()
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            raise Unavailable(f"cannot connect to {self.database}: {e}") from None
        using.append(conn)
        try:
            return work(conn)
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            self._local.conn = None
            self._discard(conn)
            raise Unavailable(str(e).strip()) from None
        finally:
            using.clear()

    def _call(self, work: Callable[[psycopg.Connection], _T]) -> defer.Deferred[_T]:
        """
        Run C{work(connection)} on the pool; L{Unavailable} when the database
        is not there, or has not answered by the deadline.
        """
        if self._closed:
            return defer.fail(Unavailable("the cluster store is closed"))
        if self._reactor.seconds() < self._down_until:
            return defer.fail(Unavailable(f"{self.database} was unreachable a moment ago"))
        using: list[psycopg.Connection] = []
        done: defer.Deferred[_T] = defer.Deferred()

        def late() -> None:
            # A server that accepts bytes but answers nothing (stopped,
            # its disk hung) holds the thread past every server-side
            # timeout: its socket is shut so the thread gets an error.
            for conn in using:
                _shut(conn)
            done.errback(Unavailable(
                f"{self.database} did not answer within {self._deadline:g}s"
            ))

        timer = self._reactor.callLater(self._deadline, late)

        def finished(result: object) -> None:
            if not timer.active():
                return  # answered too late: already failed
            timer.cancel()
            if isinstance(result, Failure):
                done.errback(result)
            else:
                done.callback(result)  # type: ignore[arg-type]

        deferToThreadPool(self._reactor, self._pool, self._in_thread, work, using).addBoth(finished)
        done.addCallbacks(self._up, self._failed)
        return done

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
        return self._fetch(sql.HEARTBEAT, params, lambda rows: [NodeInfo(*row) for row in rows])

    def reap(self, node_timeout: float, me: str) -> defer.Deferred[list[StoredRun]]:
        label = format_duration(datetime.timedelta(seconds=node_timeout))
        params = {"me": me, "timeout": node_timeout, "label": label}
        return self._fetch(sql.REAP, params, _stored_runs)

    def restarted(self, me: str) -> defer.Deferred[list[StoredRun]]:
        return self._fetch(sql.RESTARTED, {"me": me}, _stored_runs)

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
        self._ever = False
        self._stopped = False

    def start(self) -> None:
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
        if self._stopped:
            return
        if self._retry == LISTEN_RETRY:  # the first failure in a row; the next ones are quiet
            _log.warn(
                "Cannot listen to the cluster database {database}: {error}; trying again",
                database=self._store.database, error=failure.getErrorMessage(),
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
