"""
Shared machinery of the reliability suites: the daemon as a real process,
signed webhooks, a /proc scanner for job processes, and figure reporting.

C{KARAJO_RELIABILITY=long} selects the long variants; figures are printed
(one C{[reliability] suite: key=value ...} line per suite) and, when
C{KARAJO_RELIABILITY_REPORT} names a file, appended to it as JSON lines,
which is how C{bench/reliability.py} collects them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import sys
import time
import uuid
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from karajo.process import processes

from ..e2e.daemon import free_port, start_twistd, wait_listening
from ..helpers import config_tree

LONG = os.environ.get("KARAJO_RELIABILITY", "").strip().lower() == "long"
SECRET = "r3liable"


def scale(quick: int, long: int) -> int:
    """C{quick} in CI, C{long} with C{KARAJO_RELIABILITY=long}."""
    return long if LONG else quick


def report(suite: str, **figures: Any) -> None:
    """Print one suite's figures and append them to the report file, if any."""
    figures = {"suite": suite, "variant": "long" if LONG else "quick", **figures}
    text = " ".join(f"{k}={v}" for k, v in figures.items() if k != "suite")
    sys.__stdout__.write(f"\n[reliability] {suite}: {text}\n")
    sys.__stdout__.flush()
    path = os.environ.get("KARAJO_RELIABILITY_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(figures, sort_keys=True) + "\n")


def sleep(seconds: float) -> defer.Deferred:
    return deferLater(reactor, seconds, lambda: None)


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


# --- the daemon --------------------------------------------------------------


class Daemon:
    """
    C{twistd -n karajo} on a config tree under C{base}, listening on a
    free loopback port; it can be started again (same port, same
    dir_base) after it was killed.
    """

    def __init__(self, base: str, main: str, files: dict[str, str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.base = os.path.abspath(base)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = config_tree(
            self.base,
            f"listen_address = 127.0.0.1:{self.port}\nsecret = {SECRET}\n" + main,
            files,
        )
        self.env = env
        self.proto = None
        self.process = None
        self.pid: int | None = None
        self.outputs: list[bytes] = []

    @property
    def alive(self) -> bool:
        return self.proto is not None and not self.proto.ended.called

    def spawn(self) -> None:
        """Start the process, without waiting for anything."""
        assert not self.alive
        self.proto, self.process = start_twistd(self.config, cwd=self.base, env=self.env)
        self.pid = self.process.pid

    async def start(self, timeout: float = 15.0) -> float:
        """Spawn the daemon and wait until it listens; return how long that took."""
        self.spawn()
        try:
            return await wait_listening(self.port, timeout)
        except TimeoutError:
            self.kill()
            await self.proto.ended
            raise AssertionError("daemon did not listen:\n" + self.output()) from None

    def output(self) -> str:
        return b"".join(self.outputs + [bytes(self.proto.out if self.proto else b"")]).decode(
            "utf-8", "replace"
        )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive and self.pid is not None:
            os.kill(self.pid, sig)

    async def wait(self) -> int:
        """Wait for the process to end; its exit code."""
        code = await self.proto.ended
        self.outputs.append(bytes(self.proto.out))
        self.proto.out.clear()
        return code

    async def crash(self) -> None:
        """C{kill -9} and wait until it is gone."""
        self.kill(signal.SIGKILL)
        await self.wait()

    async def stop(self) -> tuple[int, float]:
        """SIGTERM; the exit code and the seconds from the signal to the exit."""
        started = time.monotonic()
        self.kill(signal.SIGTERM)
        code = await self.wait()
        return code, time.monotonic() - started

    async def cleanup(self) -> None:
        """For addCleanup: never leave a daemon (or its jobs) running."""
        if self.alive:
            self.kill(signal.SIGKILL)
            await self.wait()
        for pid in job_processes(self.base):
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except OSError:
                pass

    # --- paths under dir_base

    def log_dir(self, job: str, kind: str = "job") -> str:
        return os.path.join(self.base, "var", "log", "karajo", kind, job)

    def pgid_file(self, job: str) -> str:
        return os.path.join(self.base, "var", "run", "karajo", "job", job + ".pgid")

    def work_root(self) -> str:
        return os.path.join(self.base, "var", "lib", "karajo")

    def recorded_groups(self) -> dict[str, int]:
        """
        The pgid files that record a group now: job id -> process group
        (a job's file stays between its commands, empty).
        """
        directory = os.path.join(self.base, "var", "run", "karajo", "job")
        groups = {}
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return groups
        for name in names:
            if name.endswith(".pgid"):
                try:
                    with open(os.path.join(directory, name)) as f:
                        groups[name[: -len(".pgid")]] = int(f.read().split()[0])
                except (OSError, ValueError, IndexError):
                    pass
        return groups


# --- webhooks ----------------------------------------------------------------


def sign(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_body() -> bytes:
    """A unique payload the replay protection accepts: epoch now plus a nonce."""
    return json.dumps({"_karajo_epoch": int(time.time()), "nonce": uuid.uuid4().hex}).encode()


# --- processes ---------------------------------------------------------------


def live_in_groups(groups) -> list[int]:
    """Live (not zombie) processes in any of the process groups C{groups}."""
    wanted = set(groups)
    return sorted(
        pid for pid, (state, _, pgid) in processes().items()
        if pgid in wanted and state not in ("Z", "X")
    )


def job_processes(base: str, exclude_descendants_of: int | None = None) -> list[int]:
    """
    Live processes whose working directory is inside C{base}'s job working
    directories (every command karajo starts runs there), except the
    descendants of C{exclude_descendants_of} (the running daemon's own
    jobs).  This finds a leftover even when no pgid file names its group.
    """
    root = os.path.join(os.path.abspath(base), "var", "lib", "karajo") + os.sep
    table = processes()
    found = []
    for pid, (state, _, _) in table.items():
        if state in ("Z", "X"):
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if not (cwd + os.sep).startswith(root):
            continue
        if exclude_descendants_of is not None and _descends(pid, exclude_descendants_of, table):
            continue
        found.append(pid)
    return sorted(found)


def _descends(pid: int, ancestor: int, table) -> bool:
    seen = set()
    while pid in table and pid not in seen and pid > 1:
        if pid == ancestor:
            return True
        seen.add(pid)
        pid = table[pid][1]
    return pid == ancestor


async def wait_until(predicate, timeout: float, step: float = 0.02) -> bool:
    """Poll C{predicate()} until true or C{timeout} seconds passed."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        await sleep(step)

