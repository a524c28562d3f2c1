"""
A private PostgreSQL server for tests that stop, kill or restart the
database (fault tests, the cluster end-to-end tests).

C{initdb} and C{pg_ctl} from C{/usr/lib/postgresql/15/bin} (or
C{$KARAJO_TEST_PG_BIN}) make a cluster in a temporary directory, served on
a free loopback port (and a unix socket in the same directory), trust
authentication, fsync off (a commit still reaches the kernel before it returns, so a
killed server keeps what it committed).  PostgreSQL refuses to run as root: as root the
programs run as the C{postgres} user (the directory is handed to it).

    server = PgServer()
    server.start()          # blocks until it answers
    server.conninfo         # "host=127.0.0.1 port=N dbname=postgres user=postgres"
    server.stop(); server.start(); server.kill(); server.cleanup()
    server.freeze(); server.thaw()   # SIGSTOP / SIGCONT: a server that answers nothing

The calls block (seconds at most): call them from test set-up and from
code that may block, not from reactor callbacks that must stay prompt.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from karajo.process import processes

__all__ = ["PG_BIN", "SHARED", "PgServer", "alive", "available", "schema_for_test"]

PG_BIN = os.environ.get("KARAJO_TEST_PG_BIN", "/usr/lib/postgresql/15/bin")


def available() -> bool:
    """Whether this machine can run a private server."""
    return os.access(os.path.join(PG_BIN, "initdb"), os.X_OK)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One private PostgreSQL server; see the module docstring."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="karajo-pg-")
        self.data = os.path.join(self.dir, "data")
        self.logfile = os.path.join(self.dir, "server.log")
        self.port = _free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._initialised = False

    @property
    def conninfo(self) -> str:
        return f"host=127.0.0.1 port={self.port} dbname=postgres user=postgres"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            self._as + [os.path.join(PG_BIN, argv[0]), *argv[1:]],
            check=check, capture_output=True, text=True, timeout=60,
        )

    def start(self) -> None:
        """Start (making the cluster the first time); returns when it answers."""
        if not self._initialised:
            self._run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync")
            self._initialised = True
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", self.data, "-l", self.logfile, "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop: C{fast} ends every session at once (what a restart does to clients)."""
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop", check=False)

    def kill(self) -> None:
        """SIGKILL the postmaster (its sessions die with it soon after)."""
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and alive(pid):
                time.sleep(0.05)

    def freeze(self) -> None:
        """SIGSTOP the server and every session: it still accepts bytes, answers nothing."""
        self._signal_all(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal_all(signal.SIGCONT)

    def _signal_all(self, signum: int) -> None:
        pid = self.pid()
        if not pid:
            return
        for p in [pid, *_children(pid)]:
            try:
                os.kill(p, signum)
            except ProcessLookupError:
                pass

    def pid(self) -> int | None:
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def cleanup(self) -> None:
        """Stop (if running) and remove every file."""
        if self._initialised:
            self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def _children(pid: int) -> list[int]:
    """The processes whose parent is C{pid} (from /proc)."""
    return [child for child, (_state, ppid, _group) in processes().items() if ppid == pid]


def alive(pid: int) -> bool:
    """Whether process C{pid} exists (a zombie counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


#: The database every machine running the tests has (docs/cluster.md).
SHARED = os.environ.get(
    "KARAJO_TEST_DATABASE", "host=127.0.0.1 port=5432 dbname=test user=postgres"
)


def schema_for_test(conninfo: str = SHARED) -> tuple[str, str, object]:
    """
    A fresh schema in C{conninfo}'s database, so tests never see each
    other's tables: its name, the libpq C{options} that make it the
    C{search_path}, and a function that drops it.
    """
    import uuid

    import psycopg

    name = "karajo_test_" + uuid.uuid4().hex[:12]
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"CREATE SCHEMA {name}")

    def drop() -> None:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")

    return name, f"-c search_path={name}", drop
