"""
How a Twisted process should talk to PostgreSQL: a thread pool of blocking
psycopg connections, or non-blocking libpq connections whose socket the
reactor watches.  Measured, in the same run, on the same statements.

  - C{threads}: what L{karajo.pgstore} does: a pool of threads, each with
    its own psycopg connection (autocommit, statements prepared), a call
    handed over with C{deferToThreadPool} and its result back through
    C{callFromThread}.
  - C{nonblocking}: psycopg's libpq binding (C{psycopg.pq}) driven by the
    reactor: the statement sent with C{send_query_prepared}, the socket
    watched for reading, the result read with C{consume_input} /
    C{get_result} on the reactor thread.  As many connections as the pool
    has threads, each one statement at a time.

The third line of each pair is L{karajo.pgstore.PgStore} itself doing the
same over its pool (C{last_slot} for the select; C{claim_slots} of one
slot), the cost a node really pays.

Two statements: C{select} (C{SELECT $1::int}, the bare round trip) and
C{claim} (one slot claimed as L{karajo.pgstore} claims it: C{INSERT ... ON
CONFLICT DO UPDATE ... WHERE ... RETURNING}, always a new key).  Two
shapes: C{serial} (one statement after the other: the latency of one
operation) and C{concurrent} (C{--inflight} statements in flight at once:
the throughput).  Figures per statement: wall-clock microseconds, the
CPU the whole process spent (C{getrusage}: user + system, every thread)
and the CPU of the reactor thread alone (C{time.thread_time} on it): the
cost the reactor pays, which delays timers and HTTP.

    PYTHONPATH=. python bench/db_roundtrip.py [--dsn DSN] [--n 3000] [--inflight 16]

The default DSN is the test database on 127.0.0.1:5432.  The tables live
in a schema of their own, dropped at the end.
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import psycopg  # noqa: E402
from psycopg import pq  # noqa: E402
from twisted.internet import defer, reactor  # noqa: E402
from twisted.internet.threads import deferToThreadPool  # noqa: E402
from twisted.python.threadpool import ThreadPool  # noqa: E402

from bench._report import table  # noqa: E402
from karajo.clusterschema import migrate  # noqa: E402
from karajo.pgstore import PgStore  # noqa: E402

SCHEMA = f"bench_roundtrip_{os.getpid()}"
SELECT = "SELECT %s::int"
CLAIM = (
    "INSERT INTO karajo_slot (kind, job_id, slot, node) VALUES ('job', %s, %s, 'me') "
    "ON CONFLICT (kind, job_id, slot) DO UPDATE SET node = excluded.node "
    "WHERE karajo_slot.node = excluded.node RETURNING slot"
)
# The same in libpq's own placeholders, for the non-blocking driver.
PQ_STATEMENTS = {
    "select": b"SELECT $1::int",
    "claim": CLAIM.replace("%s", "$1", 1).replace("%s", "$2", 1).encode(),
}


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Store:
    """L{karajo.pgstore.PgStore} itself: C{last_slot} and C{claim_slots} of one slot."""

    def __init__(self, dsn: str, size: int) -> None:
        self.store = PgStore(reactor, dsn, pool_size=size, options=f"-c search_path={SCHEMA}")

    def run(self, kind: str, args: tuple) -> defer.Deferred:
        if kind == "select":
            return self.store.last_slot("job", "x")
        return self.store.claim_slots("me", [("job", args[0], args[1])])

    def close(self) -> defer.Deferred:
        return self.store.close()


class Threads:
    """The thread pool: one blocking psycopg connection per thread."""

    def __init__(self, dsn: str, size: int) -> None:
        self.dsn = dsn
        self.pool = ThreadPool(minthreads=size, maxthreads=size, name="db")
        self.local = threading.local()
        self.pool.start()

    def _conn(self) -> psycopg.Connection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = psycopg.connect(
                self.dsn, autocommit=True, prepare_threshold=0,
                options=f"-c search_path={SCHEMA}",
            )
            self.local.conn = conn
        return conn

    def run(self, kind: str, args: tuple) -> defer.Deferred:
        query = SELECT if kind == "select" else CLAIM

        def work() -> list:
            return self._conn().execute(query, args).fetchall()

        return deferToThreadPool(reactor, self.pool, work)

    def close(self) -> None:
        self.pool.stop()


class _NbConn:
    """One non-blocking libpq connection, its socket watched by the reactor."""

    def __init__(self, dsn: str) -> None:
        self.pg = pq.PGconn.connect(dsn.encode())
        if self.pg.status != pq.ConnStatus.OK:
            raise RuntimeError(self.pg.error_message.decode())
        self._exec(f"SET search_path = {SCHEMA}".encode())
        for name, text in PQ_STATEMENTS.items():
            result = self.pg.prepare(name.encode(), text)
            if result.status != pq.ExecStatus.COMMAND_OK:
                raise RuntimeError(result.error_message.decode())
        self.pg.nonblocking = 1
        self.busy: defer.Deferred | None = None
        self.rows: list = []
        reactor.addReader(self)

    def _exec(self, sql: bytes) -> None:
        result = self.pg.exec_(sql)
        if result.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
            raise RuntimeError(result.error_message.decode())

    def send(self, kind: str, args: tuple) -> defer.Deferred:
        self.busy = defer.Deferred()
        self.rows = []
        self.pg.send_query_prepared(kind.encode(), [str(a).encode() for a in args])
        while self.pg.flush():  # small statements: done at once
            pass
        return self.busy

    def fileno(self) -> int:
        return self.pg.socket

    def logPrefix(self) -> str:
        return "pq"

    def doRead(self) -> None:
        self.pg.consume_input()
        while not self.pg.is_busy():
            result = self.pg.get_result()
            if result is None:
                done, self.busy = self.busy, None
                if done is not None:
                    done.callback(self.rows)
                return
            if result.status == pq.ExecStatus.FATAL_ERROR:
                raise RuntimeError(result.error_message.decode())
            self.rows.extend(
                tuple(result.get_value(r, c) for c in range(result.nfields))
                for r in range(result.ntuples)
            )

    def connectionLost(self, reason: object) -> None:
        pass

    def close(self) -> None:
        reactor.removeReader(self)
        self.pg.finish()


class NonBlocking:
    """Non-blocking connections: a statement waits for a free one."""

    def __init__(self, dsn: str, size: int) -> None:
        self.free = collections.deque(_NbConn(dsn) for _ in range(size))
        self.all = list(self.free)
        self.waiting: collections.deque = collections.deque()

    def run(self, kind: str, args: tuple) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.waiting.append((kind, args, d))
        self._pump()
        return d

    def _pump(self) -> None:
        while self.free and self.waiting:
            conn = self.free.popleft()
            kind, args, d = self.waiting.popleft()

            def done(rows: list, conn: _NbConn = conn, d: defer.Deferred = d) -> None:
                self.free.append(conn)
                d.callback(rows)
                self._pump()

            conn.send(kind, args).addCallback(done)

    def close(self) -> None:
        for conn in self.all:
            conn.close()


_key = iter(range(1, 1 << 62))


def args_of(kind: str) -> tuple:
    n = next(_key)
    return (n,) if kind == "select" else (f"j{n % 1000}", float(n))


async def measure(driver: Any, kind: str, n: int, inflight: int) -> tuple[float, float, float]:
    """Wall, process CPU and reactor-thread CPU, each in microseconds per statement."""
    for _ in range(50):  # warm: connections made, statements prepared
        await driver.run(kind, args_of(kind))
    wall0, cpu0, thread0 = time.perf_counter(), cpu(), time.thread_time()
    if inflight <= 1:
        for _ in range(n):
            await driver.run(kind, args_of(kind))
    else:
        left = [n]

        async def worker() -> None:
            while left[0] > 0:
                left[0] -= 1
                await driver.run(kind, args_of(kind))

        await defer.gatherResults([defer.ensureDeferred(worker()) for _ in range(inflight)])
    per = 1e6 / n
    return (
        (time.perf_counter() - wall0) * per,
        (cpu() - cpu0) * per,
        (time.thread_time() - thread0) * per,
    )


async def main(options: argparse.Namespace) -> None:
    admin = psycopg.connect(options.dsn, autocommit=True)
    admin.execute(f"CREATE SCHEMA {SCHEMA}")
    admin.execute(f"SET search_path = {SCHEMA}")
    migrate(admin)
    rows = []
    try:
        makers: dict[str, Callable[[], Any]] = {
            "threads": lambda: Threads(options.dsn, options.pool),
            "nonblocking": lambda: NonBlocking(options.dsn, options.pool),
            "PgStore": lambda: Store(options.dsn, options.pool),
        }
        # Interleaved (threads, non-blocking, threads, ...) so that a
        # neighbour's load falls on both alike.
        for _round in range(options.rounds):
            for shape, inflight in (("serial", 1), ("concurrent", options.inflight)):
                for kind in ("select", "claim"):
                    for name, make in makers.items():
                        driver = make()
                        try:
                            figures = await measure(driver, kind, options.n, inflight)
                        finally:
                            await defer.maybeDeferred(driver.close)
                        rows.append((name, shape, kind) + tuple(f"{f:.0f}" for f in figures))
    finally:
        admin.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
        admin.close()
    print(f"{options.n} statements per line, pool of {options.pool}, "
          f"{options.inflight} in flight when concurrent; microseconds per statement")
    print(table(rows, ("driver", "shape", "statement", "wall", "cpu", "reactor cpu")))


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default="host=127.0.0.1 port=5432 dbname=test user=postgres")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--pool", type=int, default=4)
    parser.add_argument("--inflight", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()
    failure: list = []

    def go() -> None:
        d = defer.ensureDeferred(main(options))
        d.addErrback(failure.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run()
    if failure:
        failure[0].printTraceback()
        sys.exit(1)


if __name__ == "__main__":
    run()
