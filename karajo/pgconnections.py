"""
The connections of the cluster's store (L{karajo.pgstore}) to PostgreSQL:
a pool of threads with one connection each, every call under a deadline,
and the listening connection.  Imported only with C{[cluster]}.

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

Connections are in autocommit mode (no C{BEGIN}/C{COMMIT} round trips)
and statements are prepared on first use on each connection
(C{prepare_threshold=0}).

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

import os
import select
import socket
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.numeric import Int8Dumper
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from karajo.clusterstore import CHANNELS, RECONNECTED, Unavailable

__all__ = ["PgConnections", "describe"]

_log = Logger()
_T = TypeVar("_T")

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


class PgConnections:
    """
    The store's way to the database (see the module docstring): C{_call}
    runs a function with a connection on the pool, C{_fetch} and
    C{_execute} one statement, C{listen} and C{close} are the store's;
    L{karajo.pgstore.PgStore} adds the statements.

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

    def __init__(self, store: PgConnections, callback: Callable[[str, str], None]) -> None:
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
