"""
Tests for running jobs (L{karajo.run}, L{karajo.work}, L{karajo.process}):
real processes on the real reactor.  The state machine itself (queue, pause,
slots, cancel, timeout, stop) is tested with a fake work and a clock in
tests/unit/test_runner.py.
"""

from __future__ import annotations

import os
import re
import signal
import stat
from datetime import timedelta

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from karajo import service as service_module
from karajo.config import validate
from karajo.joblog import SPARE_NAME
from karajo.model import Environment, Job
from karajo.paths import Paths
from karajo.process import KILL_GRACE, group_record, processes
from karajo.service import build_job_service, job_work, stop_leftover_group
from karajo.work import PidFile

PREFIX = re.compile(rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC job: [a-z0-9_-]+: ")


def sync_thread(f, *args):
    return defer.maybeDeferred(f, *args)


class RunTestCase(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        self.slots = defer.DeferredSemaphore(4)

    def service(self, job: Job, start: bool = True, slots=None, clock=None):
        """
        The job's service on the real reactor, or on C{clock} (a
        L{task.Clock}, for code jobs only) when a test must know that
        nothing more is scheduled.
        """
        env, _ = validate(Environment(dir_base=self.base, secret="s", jobs={job.name: job}))
        job = env.jobs[job.name]
        paths = Paths(self.base)
        work, pid_path = job_work(job, paths, clock or reactor)
        svc = build_job_service(
            job, work, paths, slots or self.slots, clock or reactor, sync_thread, pid_path
        )
        if start:
            svc.startService()
            self.addCleanup(lambda: svc.running and svc.stopService())
        return svc

    async def run_once(self, svc) -> tuple[str, bytes]:
        svc.runner.trigger(None)
        await svc.runner.when_idle()
        name = [r.name for r in svc.runner.records()][-1]
        _, content = svc.runner.store.read(name.counter)
        return name.filename, content

    def log_dir(self, job_id: str) -> str:
        return Paths(self.base).log_dir("job", job_id)


class CommandTests(RunTestCase):
    async def test_order_and_fail_fast(self) -> None:
        """Commands run in order; the first failing one fails the run and the rest are skipped."""
        svc = self.service(Job(name="seq", commands=["echo one", "false", "echo three"]))
        name, content = await self.run_once(svc)
        self.assertEqual(name, "seq.1.failed")
        text = content.decode()
        self.assertLess(text.index("--- Execute  1: echo one"), text.index("seq: one\n"))
        self.assertIn("--- Execute  2: false", text)
        self.assertIn("!!! exit status 1", text)
        self.assertNotIn("three", text)
        self.assertEqual(svc.runner.status, "failed")

    async def test_markers_and_prefix(self) -> None:
        """Every line carries the documented prefix (docs/behaviour.md, "Log files"); BEGIN, Execute and DONE markers are there."""
        svc = self.service(Job(name="Marks", commands=["echo hi", "printf 'no newline'"]))
        name, content = await self.run_once(svc)
        self.assertEqual(name, "marks.1.success")
        lines = content.splitlines()
        self.assertTrue(all(PREFIX.match(line) for line in lines), lines)
        bodies = [PREFIX.sub(b"", line) for line in lines]
        self.assertEqual(
            bodies,
            [b"=== BEGIN", b"--- Execute  1: echo hi", b"hi", b"--- Execute  2: printf 'no newline'",
             b"no newline", b"=== DONE"],
        )

    async def test_env_and_cwd(self) -> None:
        """Commands run in the job's working dir and see only the counter and a sane PATH."""
        os.environ["KARAJO_TEST_LEAK"] = "leaked-secret"
        self.addCleanup(os.environ.pop, "KARAJO_TEST_LEAK")
        svc = self.service(Job(name="env", commands=["pwd", "env"]))
        _, content = await self.run_once(svc)
        text = content.decode()
        self.assertIn(f"env: {Paths(self.base).work_dir('job', 'env')}\n", text)
        self.assertIn("env: KARAJO_JOB_COUNTER=1\n", text)
        self.assertIn("env: PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n", text)
        self.assertNotIn("leaked-secret", text)
        self.assertNotIn("KARAJO_TEST_LEAK", text)
        # cd in the wrapper must not leave the daemon's directory behind.
        self.assertNotIn("OLDPWD", text)

    async def test_shell_like_sh_c(self) -> None:
        """A command sees $0, $# and exit statuses as under /bin/sh -c; a bad cwd fails clearly."""
        svc = self.service(Job(name="shellish", commands=['echo "[$0] [$#] [$*]"', "(exit 3)"]))
        _, content = await self.run_once(svc)
        self.assertIn(b"shellish: [sh] [0] []\n", content)
        self.assertIn(b"!!! exit status 3", content)

    async def test_stderr_captured(self) -> None:
        """stderr is logged like stdout."""
        svc = self.service(Job(name="err", commands=["echo oops >&2"]))
        _, content = await self.run_once(svc)
        self.assertIn(b"err: oops\n", content)

    async def test_stdout_and_stderr_in_order(self) -> None:
        """stdout and stderr are one stream: the log has lines in the order written."""
        svc = self.service(Job(name="order", commands=[
            "echo 1; echo 2 >&2; echo 3; echo 4 >&2; echo 5",
            "cd /nonexistent-karajo-dir; echo after",
        ]))
        _, content = await self.run_once(svc)
        lines = [line.split(b"order: ", 1)[1] for line in content.splitlines()
                 if b" job: order: " in line and line.split(b"order: ", 1)[1][:3] not in (b"===", b"---", b"!!!")]
        self.assertEqual(lines[:5], [b"1", b"2", b"3", b"4", b"5"])
        self.assertIn(b"nonexistent-karajo-dir", lines[5])
        self.assertEqual(lines[6:], [b"after"])

    async def test_retention(self) -> None:
        """
        Only the newest log_retention logs are kept; the file of one pruned
        log stays, emptied, as the spare the next run's log is made of.
        """
        svc = self.service(Job(name="keep", commands=["true"], log_retention=2))
        for _ in range(4):
            await self.run_once(svc)
        self.assertEqual(sorted(os.listdir(self.log_dir("keep"))),
                         [SPARE_NAME, "keep.3.success", "keep.4.success"])
        self.assertEqual(os.path.getsize(os.path.join(self.log_dir("keep"), SPARE_NAME)), 0)
        self.assertEqual([n.filename for n in [r.name for r in svc.runner.records()]], ["keep.3.success", "keep.4.success"])

    async def test_counter_across_restart(self) -> None:
        """A new service on the same dir_base continues the counter and restores the last status."""
        job = Job(name="count", commands=["echo $KARAJO_JOB_COUNTER"], log_retention=1)
        svc = self.service(job)
        await self.run_once(svc)
        await self.run_once(svc)
        await svc.stopService()
        again = self.service(job)
        self.assertEqual(again.runner.counter, 2)
        self.assertEqual(again.runner.last_status, "success")
        self.assertIsNotNone(again.runner.last_run)
        name, content = await self.run_once(again)
        self.assertEqual(name, "count.3.success")
        self.assertIn(b"count: 3\n", content)

    async def test_crash_leftover_finalised(self) -> None:
        """A leftover running log from a crash is finalised as failed with an explanation."""
        job = Job(name="crash", commands=["true"])
        svc = self.service(job, start=False)
        os.makedirs(self.log_dir("crash"))
        with open(os.path.join(self.log_dir("crash"), "crash.7"), "wb") as f:
            f.write(b"2026-01-01 00:00:00 UTC job: crash: half a line")
        with open(os.path.join(self.log_dir("crash"), "crash.notes"), "wb") as f:
            f.write(b"not a log")
        svc.startService()
        self.addCleanup(svc.stopService)
        self.assertEqual(svc.runner.counter, 7)
        self.assertEqual(svc.runner.last_status, "failed")
        _, content = svc.runner.store.read(7)
        self.assertIn(b"karajo stopped during this run", content)
        self.assertIn("crash.notes", os.listdir(self.log_dir("crash")))
        name, _ = await self.run_once(svc)
        self.assertEqual(name, "crash.8.success")


class CallableTests(RunTestCase):
    async def run_call(self, call) -> tuple[str, bytes]:
        return await self.run_once(self.service(Job(name="code", call=call)))

    async def test_plain(self) -> None:
        """A plain callable writes to the log (str or bytes) and succeeds."""
        seen = []

        def call(log, request):
            seen.append(request)
            log.write("hello from code\n")
            log.write(b"bytes too\n")

        name, content = await self.run_call(call)
        self.assertEqual(name, "code.1.success")
        self.assertIn(b"code: hello from code\n", content)
        self.assertIn(b"code: bytes too\n", content)
        self.assertEqual(seen, [None])

    async def test_deferred(self) -> None:
        """A callable may return a Deferred."""

        def call(log, request):
            return deferLater(reactor, 0.01, log.write, "later\n")

        name, content = await self.run_call(call)
        self.assertEqual(name, "code.1.success")
        self.assertIn(b"later", content)

    async def test_coroutine(self) -> None:
        """A callable may be a coroutine function."""

        async def call(log, request):
            await deferLater(reactor, 0.01, lambda: None)
            log.write("async\n")

        name, content = await self.run_call(call)
        self.assertEqual(name, "code.1.success")
        self.assertIn(b"async", content)

    async def test_raising(self) -> None:
        """An exception fails the run with its message in the log."""

        def call(log, request):
            raise ValueError("no good")

        name, content = await self.run_call(call)
        self.assertEqual(name, "code.1.failed")
        self.assertIn(b"!!! ValueError: no good", content)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc."""
    return [
        pid for pid, (state, _ppid, group) in processes().items()
        if group == pgid and state not in ("Z", "X")
    ]


def group_alive(pgid: int) -> bool:
    return bool(group_members(pgid))


class StopTests(RunTestCase):
    async def started_group(self, svc) -> int:
        svc.runner.trigger(None)
        pid_path = Paths(self.base).state_file("job", svc.runner.job.id) + ".pgid"
        for _ in range(100):
            if recorded(pid_path):
                break
            await deferLater(reactor, 0.02, lambda: None)
        with open(pid_path) as f:
            pgid = int(f.read().split()[0])
        await deferLater(reactor, 0.2, lambda: None)  # let the shell start its children
        self.assertTrue(group_alive(pgid))
        return pgid

    async def test_cancel_kills_group(self) -> None:
        """Cancel ends the run canceled within 3 s and leaves no process of the job alive."""
        svc = self.service(Job(name="c", commands=["sleep 60 & sleep 60; wait"]))
        pgid = await self.started_group(svc)
        started = reactor.seconds()
        self.assertTrue(svc.runner.cancel())
        await svc.runner.when_idle()
        self.assertLess(reactor.seconds() - started, 3)
        self.assertFalse(group_alive(pgid))
        self.assertEqual(svc.runner.last_status, "canceled")
        _, content = svc.runner.store.read(1)
        self.assertIn(b"??? CANCELED", content)

    async def test_cancel_ignoring_term(self) -> None:
        """A command that ignores TERM is killed after the grace period."""
        svc = self.service(Job(name="stubborn", commands=["trap '' TERM; sleep 60 & sleep 60; wait"]))
        pgid = await self.started_group(svc)
        started = reactor.seconds()
        svc.runner.cancel()
        await svc.runner.when_idle()
        self.assertLess(reactor.seconds() - started, 4)
        self.assertFalse(group_alive(pgid))
        self.assertEqual(svc.runner.last_status, "canceled")

    async def test_timeout(self) -> None:
        """A run over its timeout is stopped the same way and fails, saying so."""
        svc = self.service(
            Job(name="slow", commands=["sleep 60 & sleep 60; wait", "echo never"], timeout=timedelta(seconds=0.5))
        )
        pgid = await self.started_group(svc)
        await svc.runner.when_idle()
        self.assertFalse(group_alive(pgid))
        self.assertEqual(svc.runner.last_status, "failed")
        _, content = svc.runner.store.read(1)
        self.assertIn(b"!!! timed out after 500ms", content)
        self.assertNotIn(b"never", content.replace(b"echo never", b""))

    async def test_background_leftovers_stopped(self) -> None:
        """A command that exits leaving a background child does not leave it running."""
        svc = self.service(Job(name="bg", commands=["sleep 60 & echo started"]))
        svc.runner.trigger(None)
        await svc.runner.when_idle()
        self.assertEqual(svc.runner.last_status, "success")
        self.assertFalse(recorded(Paths(self.base).state_file("job", "bg") + ".pgid"))

    async def escaped(self, svc, commands_pid: str) -> int:
        """The pid a command wrote of a process it started in its own session."""
        for _ in range(100):
            if os.path.exists(commands_pid) and open(commands_pid).read().strip():
                break
            await deferLater(reactor, 0.02, lambda: None)
        pid = int(open(commands_pid).read())
        self.addCleanup(lambda: os.kill(pid, signal.SIGKILL) if os.path.exists(f"/proc/{pid}") else None)
        return pid

    async def test_escaped_process_does_not_hold_the_run(self) -> None:
        """
        A process that left the command's group (setsid) and keeps its
        output open is out of karajo's reach; the run still ends, KILL_GRACE
        after the command did, with a line saying why.
        """
        pidfile = os.path.join(os.path.abspath(self.mktemp()))
        svc = self.service(Job(name="esc", commands=[
            f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 60' & sleep 0.2; echo done"]))
        started = reactor.seconds()
        svc.runner.trigger(None)
        await self.escaped(svc, pidfile)
        await svc.runner.when_idle()
        self.assertLess(reactor.seconds() - started, KILL_GRACE + 2)
        self.assertEqual(svc.runner.last_status, "success")
        _, content = svc.runner.store.read(1)
        self.assertIn(b"esc: done\n", content)
        self.assertIn(b"--- stopped reading output 2s after the command ended", content)

    async def test_cancel_with_escaped_process(self) -> None:
        """Cancel ends the run even when an escaped process holds its output."""
        pidfile = os.path.join(os.path.abspath(self.mktemp()))
        svc = self.service(Job(name="escc", commands=[
            f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 60' & sleep 60"]))
        svc.runner.trigger(None)
        await self.escaped(svc, pidfile)
        started = reactor.seconds()
        self.assertTrue(svc.runner.cancel())
        await svc.runner.when_idle()
        self.assertLess(reactor.seconds() - started, KILL_GRACE + 2)
        self.assertEqual(svc.runner.last_status, "canceled")

    async def test_leftover_ignoring_term_killed(self) -> None:
        """A leftover of the group that ignores TERM is killed after the grace period."""
        svc = self.service(Job(name="stubborn", commands=["sh -c 'trap \"\" TERM; sleep 60' & sleep 0.2"]))
        pgid = await self.started_group(svc)
        await svc.runner.when_idle()
        self.assertEqual(svc.runner.last_status, "success")
        self.assertFalse(group_alive(pgid))

    async def test_stop_service_finalises(self) -> None:
        """Stopping the service cancels the running run and finalises its log."""
        svc = self.service(Job(name="s", commands=["sleep 60"]))
        pgid = await self.started_group(svc)
        await svc.stopService()
        self.assertFalse(group_alive(pgid))
        self.assertEqual(os.listdir(self.log_dir("s")), ["s.1.canceled"])
        _, content = svc.runner.store.read(1)
        self.assertIn(b"??? CANCELED: karajo is stopping", content)

    async def test_orphans_of_crash_killed(self) -> None:
        """A process group recorded by a crashed daemon is killed at the next start."""
        job = Job(name="orphan", commands=["true"])
        svc = self.service(job, start=False)
        proc = reactor.spawnProcess(
            __import__("twisted.internet.protocol", fromlist=["ProcessProtocol"]).ProcessProtocol(),
            "/usr/bin/setsid", ["setsid", "/bin/sh", "-c", "sleep 60 & sleep 60"], env={}
        )
        pgid = proc.pid
        await deferLater(reactor, 0.1, lambda: None)
        self.assertTrue(group_alive(pgid))
        os.makedirs(os.path.dirname(Paths(self.base).state_file("job", "orphan")), exist_ok=True)
        with open(Paths(self.base).state_file("job", "orphan") + ".pgid", "w") as f:
            f.write(group_record(pgid) or "")
        svc.startService()
        self.addCleanup(svc.stopService)
        for _ in range(50):
            if not group_alive(pgid):
                break
            await deferLater(reactor, 0.02, lambda: None)
        self.assertFalse(group_alive(pgid))


class GroupRecordTests(RunTestCase):
    async def test_fast_command_recorded_with_start_time(self) -> None:
        """
        Every record a run writes carries the boot id and the leader's start
        time, even for commands that end at once and a thread pool that
        writes late: the record is made right after the spawn.
        """
        from karajo import work as workmod
        from karajo.process import _boot_id

        written: list[str | None] = []
        real_write = workmod.PidFile.write

        def spy(pid_file, record: str | None) -> None:
            written.append(record)
            real_write(pid_file, record)

        self.patch(workmod.PidFile, "write", spy)
        job = Job(name="fast", commands=["true"] * 10)
        env, _ = validate(Environment(dir_base=self.base, secret="s", jobs={job.name: job}))
        job = env.jobs[job.name]
        paths = Paths(self.base)

        def late_thread(f, *args):
            return deferLater(reactor, 0.05, f, *args)

        work, pid_path = job_work(job, paths, reactor, late_thread)
        svc = build_job_service(job, work, paths, self.slots, reactor, late_thread, pid_path)
        svc.startService()
        self.addCleanup(lambda: svc.running and svc.stopService())
        svc.runner.trigger(None)
        await svc.runner.when_idle()
        self.assertEqual(svc.runner.last_status, "success")
        # Each record is emptied when its command ends, before the next one.
        self.assertEqual(written[-1], None)
        pairs = zip(written, written[1:], strict=False)
        self.assertTrue(all(a is None or b is None for a, b in pairs))
        for record in filter(None, written):
            parts = record.split()
            self.assertEqual(len(parts), 3, record)
            self.assertEqual(parts[1], _boot_id())
            self.assertRegex(parts[2], r"\A[0-9]+\Z")
        self.assertEqual(os.path.getsize(pid_path), 0)


class PidFileTests(RunTestCase):
    def test_rewritten_in_place(self) -> None:
        """One file per job: each record replaces the last in the same inode, emptied after."""
        path = os.path.join(self.base, "j.pgid")
        os.makedirs(self.base, exist_ok=True)
        pid_file = PidFile(path)
        pid_file.write("123 boot 456\n")
        inode = os.stat(path).st_ino
        with open(path) as f:
            self.assertEqual(f.read(), "123 boot 456\n")
        pid_file.write(None)
        self.assertEqual(os.path.getsize(path), 0)
        pid_file.write("7 boot 8\n")
        with open(path) as f:
            self.assertEqual(f.read(), "7 boot 8\n")
        pid_file.write(None)
        pid_file.close()
        pid_file.write("9 boot 10\n")  # the next run's first command
        pid_file.close()
        self.assertEqual(os.stat(path).st_ino, inode)

    def test_directory_made_when_missing(self) -> None:
        """The pid file's directory, removed by an operator, is made again, mode 0700."""
        path = os.path.join(self.base, "gone", "j.pgid")
        pid_file = PidFile(path)
        pid_file.write("1 boot 2\n")
        pid_file.close()
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode), 0o700)
        with open(path) as f:
            self.assertEqual(f.read(), "1 boot 2\n")

    def test_link_replaced_not_followed(self) -> None:
        """A link put at the pid file's name is replaced by the file, never written through."""
        os.makedirs(self.base, exist_ok=True)
        target = os.path.join(self.base, "target")
        with open(target, "w") as f:
            f.write("keep")
        path = os.path.join(self.base, "j.pgid")
        os.symlink(target, path)
        pid_file = PidFile(path)
        pid_file.write("1 boot 2\n")
        pid_file.close()
        with open(target) as f:
            self.assertEqual(f.read(), "keep")
        self.assertFalse(os.path.islink(path))
        with open(path) as f:
            self.assertEqual(f.read(), "1 boot 2\n")

    def test_empty_file_kills_nothing(self) -> None:
        """A restart reads the empty file a finished command leaves as no group, and removes it."""
        os.makedirs(self.base, exist_ok=True)
        path = os.path.join(self.base, "j.pgid")
        open(path, "w").close()
        killed: list[int] = []
        self.patch(service_module, "signal_group", lambda pgid, sig: killed.append(pgid))
        stop_leftover_group(path, "j")
        self.assertEqual(killed, [])
        self.assertFalse(os.path.exists(path))


def recorded(pid_path: str) -> bool:
    """Whether a job's pid file records a group now (it stays between commands, empty)."""
    try:
        return os.path.getsize(pid_path) > 0
    except FileNotFoundError:
        return False


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


class LeftoverRecordTests(TestCase):
    def test_round_trip(self) -> None:
        """A record of a live group is recognised; garbage and old boots are not."""
        import subprocess

        from karajo.process import group_record, leftover_group

        # A group of its own whose leader is alive: the test's own group
        # may have lost its leader (a shell that started it in the background).
        leader = subprocess.Popen(["sleep", "60"], start_new_session=True)
        self.addCleanup(leader.wait)
        self.addCleanup(leader.kill)
        me = leader.pid
        self.assertEqual(leftover_group(group_record(me)), me)
        for stale in ("", "x", "1", "0 a b", f"{me} another-boot 123"):
            self.assertIsNone(leftover_group(stale), stale)

    def test_unproven_identity_not_killed(self) -> None:
        """
        A record that does not prove the group's identity -- bare, short,
        without a start time, or whose leader is gone -- names no group:
        a reused number may now lead an unrelated one.
        """
        from karajo.process import _boot_id, _start_time, leftover_group

        me = os.getpgrp()
        started = _start_time(me)
        for record in (f"{me}\n", f"{me} {_boot_id()}", f"{me} {_boot_id()} -",
                       f"{me} - {started}", f"{me} {_boot_id()} {started} extra"):
            self.assertIsNone(leftover_group(record), record)
        proc = os.posix_spawn("/bin/true", ["true"], {})
        os.waitpid(proc, 0)
        self.assertIsNone(leftover_group(f"{proc} {_boot_id()} {started}"))

    def test_leader_gone_children_of_the_job_proven(self) -> None:
        """
        A crashed run's shell may be gone while what it started lives on in
        its group: the group is proven by its members, every one a command
        of that job (KARAJO_JOB_ID), and only then.
        """
        import signal as _signal

        from karajo.process import _boot_id, _start_time, leftover_group

        env = {"PATH": "/usr/bin:/bin", "KARAJO_JOB_ID": "crashy"}
        leader = os.posix_spawn("/bin/sh", ["sh", "-c", "sleep 60 & sleep 0.5"], env,
                                setsid=True)
        self.addCleanup(lambda: _kill_group(leader, _signal.SIGKILL))
        started = _start_time(leader)
        self.assertIsNotNone(started)
        os.waitpid(leader, 0)  # the shell is gone, its sleep is not
        record = f"{leader} {_boot_id()} {started}"
        self.assertEqual(leftover_group(record, "crashy"), leader)
        self.assertIsNone(leftover_group(record, "another-job"))
        self.assertIsNone(leftover_group(record))  # no job to prove it by

    def test_reused_number_not_killed(self) -> None:
        """A record whose start time no longer matches that pid is stale."""
        from karajo.process import _boot_id, leftover_group

        self.assertIsNone(leftover_group(f"{os.getpid()} {_boot_id()} 1"))
