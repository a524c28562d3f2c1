"""
Tests for how a command is started (L{karajo.process}): its group, its
signals and its descriptors, on the direct C{posix_spawn} path and on the
C{setsid(1)} fallback, with real processes on the real reactor.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from karajo import process
from karajo.process import command_env, spawn_command, spawn_leader
from karajo.service import POOL_THREAD_NICER, karajo_pool, thread_runner

# The shell's own view of itself: pid, process group, session (fields 1, 5
# and 6 of /proc/PID/stat), the signals it ignores and blocks, whether it
# has descriptor FD, what its stdin is and what reading it gives.
# Builtins only until the masks are read: dash blocks every signal while it
# forks, so a forked reader (grep) could see that passing state instead.
PROBE = (
    "while read -r key value; do case $key in SigIgn:|SigBlk:) echo $key $value;; esac; "
    "done < /proc/$$/status; "
    "read -r pid comm state ppid pgrp session rest < /proc/$$/stat; "
    'echo "ids $pid $pgrp $session"; '
    "if [ -e /proc/$$/fd/FD ]; then echo fd open; else echo fd closed; fi; "
    'echo "stdin $(readlink /proc/$$/fd/0)"; '
    'echo "input $(cat | wc -c)"'
)

STANDARD_SIGNALS = (1 << 31) - 1  # bits of signals 1 to 31


class SpawnTests(TestCase):
    timeout = 20

    async def probe(self, fd: int = 0) -> dict[str, str]:
        out: list[bytes] = []
        command = PROBE.replace("FD", str(fd))
        running = spawn_command(reactor, reactor, command, "/", command_env(1), out.append)
        await running.ended
        lines = b"".join(out).decode().splitlines()
        return {line.split(None, 1)[0].rstrip(":"): line.split(None, 1)[1] for line in lines}

    def use_fallback(self) -> None:
        self.patch(process, "leader_spawn_usable", lambda reactor: False)

    def test_direct_spawn_in_use(self) -> None:
        """
        On the Twisted karajo is built against, commands skip the exec of
        setsid(1).  If this fails after a Twisted upgrade, karajo still
        works (through setsid), half a millisecond slower per command:
        see L{process.LeaderProcess}.
        """
        self.assertTrue(process.leader_spawn_usable(reactor))

    async def leader_ids(self) -> tuple[int, int, int]:
        pid, pgrp, session = map(int, (await self.probe())["ids"].split())
        self.assertEqual(pid, pgrp)
        self.assertNotEqual(pgrp, os.getpgrp())
        return pid, pgrp, session

    async def test_group_leader_without_a_terminal(self) -> None:
        """
        A daemon without a controlling terminal starts each command as the
        leader of its own group, in the daemon's session: no session (and
        no scheduler autogroup) per command.
        """
        self.patch(process, "_has_terminal", lambda: False)
        _pid, _pgrp, session = await self.leader_ids()
        self.assertEqual(session, os.getsid(0))

    async def test_session_leader_with_a_terminal(self) -> None:
        """With a controlling terminal, a command leads a new session: the terminal is out of reach."""
        self.patch(process, "_has_terminal", lambda: True)
        pid, _pgrp, session = await self.leader_ids()
        self.assertEqual(pid, session)

    async def test_session_leader_fallback(self) -> None:
        self.use_fallback()
        pid, _pgrp, session = await self.leader_ids()
        self.assertEqual(pid, session)

    def test_has_terminal(self) -> None:
        """Asked of /dev/tty, which opens only with a controlling terminal."""
        try:
            os.close(os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY))
            expected = True
        except OSError:
            expected = False
        process._has_terminal.cache_clear()
        self.addCleanup(process._has_terminal.cache_clear)
        self.assertEqual(process._has_terminal(), expected)

    async def check_clean_signals_and_fds(self) -> None:
        # Python ignores SIGPIPE and the test runner may block signals; a
        # job must see neither.  An inheritable descriptor of the daemon
        # must not reach it either.
        self.assertEqual(signal.getsignal(signal.SIGPIPE), signal.SIG_IGN)
        leaked = os.open(os.devnull, os.O_RDONLY)
        os.set_inheritable(leaked, True)
        self.addCleanup(os.close, leaked)
        seen = await self.probe(leaked)
        # Standard signals only: glibc's posix_spawn ignores its own two
        # real-time signals (32, 33) in every child it starts.
        self.assertEqual(int(seen["SigIgn"], 16) & STANDARD_SIGNALS, 0)
        self.assertEqual(int(seen["SigBlk"], 16), 0)
        self.assertEqual(seen["fd"], "closed")
        # No input: a command that reads stdin gets end-of-file at once.
        self.assertEqual(seen["stdin"], os.devnull)
        self.assertEqual(seen["input"], "0")

    async def test_clean_signals_and_fds(self) -> None:
        await self.check_clean_signals_and_fds()

    async def test_clean_signals_and_fds_fallback(self) -> None:
        self.use_fallback()
        await self.check_clean_signals_and_fds()

    async def test_clean_fds_without_close_range(self) -> None:
        """
        Where the kernel or libc has no close_range, the descriptors are
        listed and the inheritable ones closed in the child instead.
        """
        self.patch(process, "_close_range", lambda: None)
        await self.check_clean_signals_and_fds()

    def test_close_range_in_use(self) -> None:
        """
        On this machine one close_range call replaces a fcntl per
        descriptor at each spawn (bench/PROFILE.md).
        """
        self.assertIsNotNone(process._close_range())

    async def test_cwd_with_odd_name(self) -> None:
        odd = os.path.abspath(self.mktemp()) + "/-a dir; $(x) 'q'"
        os.makedirs(odd)
        out: list[bytes] = []
        running = spawn_command(reactor, reactor, "pwd", odd, command_env(1), out.append)
        await running.ended
        self.assertEqual(b"".join(out).decode().strip(), odd)

    async def test_output_read_a_pipeful_at_a_time(self) -> None:
        """
        Output already in the pipe comes in reads of up to 64 KiB, not
        Twisted's 8 KiB: each read costs the log writer and every follower
        of the run one piece.  The command writes 60,000 bytes in one
        write(2), then waits, so the whole of it is in the pipe at once.
        """
        out: list[bytes] = []
        command = (f"{sys.executable} -c 'import os; os.write(1, b\"x\" * 60000)'; sleep 0.3")
        running = spawn_command(reactor, reactor, command, "/", command_env(1), out.append)
        await running.ended
        self.assertEqual(b"".join(out), b"x" * 60000)
        self.assertGreater(max(map(len, out)), 8192)
        self.assertLessEqual(max(map(len, out)), process.READ_SIZE)


class SpawnInSessionTests(TestCase):
    def test_sources_that_are_also_targets(self) -> None:
        """
        Descriptors are placed right even when a source number is another
        descriptor's target: here the child's stdout is our fd 2 and its
        stderr our fd 1 (a daemon started with closed stdio gets its pipes
        on such low numbers).
        """
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        saved = os.dup(1), os.dup(2)
        try:
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            pid = spawn_leader(
                "/bin/sh", ["sh", "-c", "echo to-out; echo to-err >&2"],
                {"PATH": "/usr/bin:/bin"}, {1: 2, 2: 1},
            )
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in (*saved, out_w, err_w):
                os.close(fd)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        with os.fdopen(out_r, "rb") as out, os.fdopen(err_r, "rb") as err:
            # fd 1 of the child was our fd 2, whose pipe is err_*.
            self.assertEqual(err.read(), b"to-out\n")
            self.assertEqual(out.read(), b"to-err\n")

    def test_spawn_failure_raises(self) -> None:
        with self.assertRaises(OSError):
            spawn_leader("/nonexistent/sh", ["sh"], {}, {})


class PoolThreadTests(TestCase):
    """
    karajo's thread pool (karajo.service.thread_runner): its threads block
    the signals a process receives, so the kernel hands each SIGCHLD to the
    reactor's thread, and run nicer than it; the reactor's own pool, which
    a code job's deferToThread uses, is left as it is.
    """

    async def test_pool_thread_blocks_sigchld(self) -> None:
        in_pool = await thread_runner(reactor)(_blocked)
        self.assertIn(signal.SIGCHLD, in_pool)
        self.assertIn(signal.SIGTERM, in_pool)
        self.assertNotIn(signal.SIGSEGV, in_pool)
        self.assertNotIn(signal.SIGCHLD, _blocked())  # the reactor's thread still takes it

    async def test_pool_thread_nicer(self) -> None:
        if not sys.platform.startswith("linux"):
            raise SkipTest("a thread has a nice value of its own on Linux only")
        main = _nice()
        if main >= 19:
            raise SkipTest("already at the lowest priority: nothing to lower")
        in_pool = await thread_runner(reactor)(_nice)
        self.assertEqual(in_pool, min(19, main + POOL_THREAD_NICER))
        self.assertEqual(_nice(), main)

    async def test_pool_started_without_run(self) -> None:
        """
        A reactor spun without run() (trial's distributed workers) never
        fires its start-up event: the pool starts at its first task anyway,
        stops with the reactor's shutdown, and a later task gets a new one.
        """
        never_run = _NeverRunReactor()
        run_in_thread = thread_runner(never_run)
        self.assertEqual(await run_in_thread(lambda: 7), 7)
        first = karajo_pool(never_run)
        (shutdown,) = never_run.shutdown
        shutdown()
        self.assertTrue(first.joined)
        self.assertEqual(await run_in_thread(lambda: 8), 8)
        self.assertIsNot(karajo_pool(never_run), first)
        for stop in never_run.shutdown[1:]:
            stop()

    async def test_reactor_pool_untouched(self) -> None:
        """A code job's thread, and what it spawns, keep the daemon's mask and priority."""
        await thread_runner(reactor)(_nice)  # karajo's pool is in use
        for _ in range(12):  # more tasks than the reactor's pool has threads (10)
            blocked, nice = await deferToThread(lambda: (_blocked(), _nice()))
            self.assertNotIn(signal.SIGTERM, blocked)
            self.assertEqual(nice, _nice())


def _blocked() -> set[int]:
    return set(signal.pthread_sigmask(signal.SIG_BLOCK, []))


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


class _NeverRunReactor:
    """A reactor with threads whose start-up event never fires; results go to the real one."""

    def __init__(self) -> None:
        self.shutdown: list[Any] = []

    def getThreadPool(self) -> None:
        raise AssertionError("karajo's tasks never go to the reactor's own pool")

    def addSystemEventTrigger(self, phase: str, event: str, f: Any) -> None:
        assert (phase, event) == ("during", "shutdown")
        self.shutdown.append(f)

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        reactor.callFromThread(f, *args, **kwargs)
