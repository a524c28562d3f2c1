"""
What a run does: a job's commands, or its Python callable.

A L{Work} runs once per run into a L{RunLog}, and can be stopped (cancel,
timeout, shutdown) at any moment; its Deferred then fails.  The runner
(L{karajo.run}) does not care which kind of work it drives, which is how
command jobs, code jobs and JobHttp jobs share counters, logs, queueing
and concurrency.
"""

from __future__ import annotations

import inspect
import os
import stat
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.logger import Logger

from karajo.deferreds import as_deferred
from karajo.errors import RunFailed
from karajo.model import Job, TriggerRequest
from karajo.paths import is_sole_file, make_private_dirs, open_making_dirs
from karajo.process import (
    MAX_ENV_STRING,
    CommandResult,
    RunningCommand,
    command_env,
    group_record,
    spawn_command,
)
from karajo.runlog import RunLog
from karajo.selectors import Request, Selector
from karajo.status import Trigger

log = Logger()

#: A payload up to this size is written and emptied on the reactor thread:
#: a small file created without fsync waits on no disk (so is the run's log,
#: L{karajo.joblog.LogStore.begin}), and the two thread hops it replaces cost
#: more, one of them before the command can start.  A larger one, whose
#: copy and block allocation take time, goes through C{run_in_thread}.
PAYLOAD_INLINE_MAX = 64 * 1024


class Work(Protocol):
    def run(self, log: RunLog, counter: int, request: Any) -> defer.Deferred[None]:
        """Do the work; succeed for C{success}, fail (L{RunFailed}) otherwise."""

    def stop(self) -> None:
        """Stop as soon as possible; the Deferred of L{run} then fails."""


class Stopped(Exception):
    """The work was stopped from outside (the runner knows why)."""


class CommandWork:
    """
    Run a job's commands in order with C{/bin/sh -c}; the first failing
    command fails the run and the rest are skipped.

    While a command runs, its process group is written to C{pid_path} so a
    restarted daemon can stop what a crashed one left behind.  The record
    (with the leader's start time, which proves the group's identity) is
    made on the reactor thread right after the spawn, before the child can
    be reaped: read later from a thread, a fast command was gone and its
    record lost the start time.  The file is written there too (L{_record}),
    and emptied when the command ends: one file per job, kept (L{PidFile}).

    A run triggered by a webhook (its request a L{TriggerRequest}; a retry
    gets the first attempt's request again) has its body in
    C{payload_path} (mode 0600, written before the first command, emptied
    when the run ends; a crash's leftover is removed at the next start by
    L{karajo.service.JobService.load}), named by C{KARAJO_PAYLOAD_FILE},
    and the values its C{payload_vars} select in the environment.  A
    payload value reaches a command only so, never in its text.
    """

    def __init__(
        self,
        reactor: IReactorProcess,
        clock: IReactorTime,
        commands: tuple[str, ...],
        cwd: str,
        pid_path: str | None = None,
        run_in_thread: Callable[..., defer.Deferred] = defer.maybeDeferred,
        *,
        job_id: str = "",
        env: tuple[tuple[str, str], ...] = (),
        payload_path: str | None = None,
        payload_vars: tuple[tuple[str, Selector], ...] = (),
    ) -> None:
        self._payload_path = payload_path
        self._payload_vars = payload_vars
        self._reactor = reactor
        self._job_id = job_id
        self._env = env
        self._run_in_thread = run_in_thread
        self._clock = clock
        self._commands = commands
        self._cwd = cwd
        self._pid_file = PidFile(pid_path) if pid_path is not None else None
        self._current: RunningCommand | None = None
        self._stopped = False

    def run(self, log: RunLog, counter: int, request: Any) -> defer.Deferred[None]:
        self._stopped = False
        return defer.ensureDeferred(self._run(log, counter, request))

    def _payload_env(self, request: Any) -> dict[str, Any]:
        """
        The payload part of the environment: for a webhook's request its
        file, Content-Type and C{payload_env} values; without one (timer,
        run now, chain) every C{payload_env} name empty, as an absent
        value is, and no C{KARAJO_PAYLOAD_*}.
        """
        if not isinstance(request, TriggerRequest) or self._payload_path is None:
            return {"payload_vars": [(name, "") for name, _ in self._payload_vars]}
        selected = Request(request.headers, request.body)
        values = [(name, selector.value(selected)) for name, selector in self._payload_vars]
        for name, value in values:
            size = len(name) + 1 + len(value.encode("utf-8", "replace"))
            if size > MAX_ENV_STRING:
                raise RunFailed(
                    f"payload_env {name}: {size} bytes, more than the {MAX_ENV_STRING} an "
                    "environment variable may hold; read it from $KARAJO_PAYLOAD_FILE"
                )
        return {
            "payload_vars": values,
            "payload_file": self._payload_path,
            "payload_type": selected.header("Content-Type") or "",
        }

    async def _run(self, log: RunLog, counter: int, request: Any = None) -> None:
        # Trigger and attempt are what the runner gave LogStore.begin; a
        # log without a record (a bare RunLog in a test) counts as a
        # first, manual run.
        record = log.record
        payload = self._payload_env(request)
        env = command_env(
            counter,
            job_id=self._job_id,
            attempt=record.attempt if record is not None else 1,
            trigger=(record.trigger if record is not None else None) or Trigger.MANUAL,
            env=self._env,
            **payload,
        )
        # Made on first use, then one stat a run (the pid and payload files'
        # directory is made when opening them finds it missing).
        make_private_dirs(self._cwd)
        body = request.body if "payload_file" in payload else None
        # A small payload is written and emptied right here: see PAYLOAD_INLINE_MAX.
        inline = body is not None and len(body) <= PAYLOAD_INLINE_MAX
        payload_fd: int | None = None
        try:
            if body is not None:
                try:
                    if inline:
                        payload_fd = write_payload(payload["payload_file"], body)
                    else:
                        payload_fd = await self._run_in_thread(
                            write_payload, payload["payload_file"], body
                        )
                except OSError as e:
                    raise RunFailed(f"cannot write the payload file: {e.strerror or e}") from None
            await self._commands_in_order(log, env)
        finally:
            if self._pid_file is not None:
                self._pid_file.close()
            if payload_fd is not None:
                try:
                    if inline:
                        clear_payload(payload_fd)
                    else:
                        await self._run_in_thread(clear_payload, payload_fd)
                except OSError:
                    _payload_not_emptied(payload["payload_file"])

    async def _commands_in_order(self, log: RunLog, env: dict[str, str]) -> None:
        for number, command in enumerate(self._commands, 1):
            if self._stopped:
                raise Stopped()
            log.line(f"--- Execute {number:2d}: {command}")
            self._current = spawn_command(
                self._reactor, self._clock, command, self._cwd, env, log.write, log.line
            )
            self._record(self._current.pgid)
            try:
                await self._current.ended
            except CommandResult as e:
                if self._stopped:
                    raise Stopped() from None
                raise RunFailed(e.message) from None
            finally:
                # The pid file is empty before the run counts as over.
                self._record(None)
                self._current = None
        if self._stopped:
            raise Stopped()

    def _record(self, pgid: int | None) -> None:
        """
        Write (or, with C{None}, empty) the pid file here, on the reactor
        thread: a file of a few dozen bytes, no fsync, like the run's log
        (L{karajo.joblog.LogStore.begin}), so no disk wait; a thread hop
        each would cost more than the write (two per command).
        """
        if self._pid_file is None:
            return
        # The record is made now, right after the spawn, while the child
        # is at worst an unreaped zombie: its start time is what proves the
        # group's identity after a crash (see group_record).
        record = group_record(pgid) if pgid is not None else None
        if pgid is not None and record is None:
            return  # already gone: nothing to recover after a crash
        try:
            self._pid_file.write(record)
        except OSError:
            log.failure("writing {path} failed", path=self._pid_file.path)

    def stop(self) -> None:
        self._stopped = True
        if self._current is not None:
            self._current.stop()


class PidFile:
    """
    A job's pid file, open while a run of the job goes: each command's
    record is written into it and emptied again when the command ends.  It
    is made once and then rewritten in place, never created and removed
    per command, because creating a file on ext4 without a journal searches
    past every recently deleted inode, which cost more than the rest of a
    run's file work (bench/PROFILE.md).  The descriptor, not the name, is
    what is written and emptied, and a link or FIFO put at the name is
    replaced, never followed.

    What a restart reads is still whole or nothing: a record is one
    C{pwrite} of a few dozen bytes into the emptied file, which a C{kill -9}
    of the daemon cannot split, so the restart finds either the whole
    record or an empty file (killed before the write: nothing recorded,
    as before), and an empty file records no group
    (L{karajo.process.leftover_group}).  No fsync: a power loss ends the
    group and changes the boot id the record carries.  Blocking, but on
    the page cache only: called on the reactor thread (see
    L{CommandWork._record}).
    """

    _FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def write(self, record: str | None) -> None:
        """Hold C{record}; with C{None}, nothing (the file emptied)."""
        if self._fd is None:
            if record is None:
                return
            # Emptied as it is opened (O_TRUNC); O_NONBLOCK: a FIFO put there
            # fails at once instead of blocking the reactor.  Whatever else
            # is at the name (a link, a FIFO) is replaced by a new file.
            try:
                self._fd = open_making_dirs(self.path, self._FLAGS)
            except OSError:
                os.unlink(self.path)
                self._fd = os.open(self.path, self._FLAGS | os.O_EXCL, 0o600)
        if record is None:
            os.ftruncate(self._fd, 0)
        else:
            os.pwrite(self._fd, record.encode("ascii"), 0)

    def close(self) -> None:
        """Close the descriptor at the end of a run; the (empty) file stays."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def write_payload(path: str, body: bytes) -> int:
    """
    Write a request's body to C{path}, mode 0600 whatever the umask, and
    return the open descriptor, which L{clear_payload} empties and closes
    when the run ends.  The job's file is made once and rewritten in place
    (a file created per run costs more than the rest of its file work on
    ext4 without a journal: see L{PidFile}); anything but the plain file a
    run left there (a link, a FIFO, a second name) is removed first, never
    followed nor written through.  Blocking: a large body in a thread.
    """
    flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd: int | None
    try:
        # O_NONBLOCK: a FIFO put there fails at once instead of blocking.
        fd = open_making_dirs(path, flags | os.O_CREAT | os.O_NONBLOCK)
    except OSError:
        fd = None
    if fd is not None:
        st = os.fstat(fd)
        if not is_sole_file(st) or st.st_uid != os.geteuid():
            os.close(fd)
            fd = None
    if fd is None:
        remove_payload(path)
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
        st = os.fstat(fd)
    try:
        if st.st_size:
            os.ftruncate(fd, 0)
        if stat.S_IMODE(st.st_mode) != 0o600:
            os.fchmod(fd, 0o600)
        view = memoryview(body)
        while view:
            view = view[os.pwrite(fd, view, len(body) - len(view)):]
    except BaseException:
        os.close(fd)
        raise
    return fd


def clear_payload(fd: int) -> None:
    """Empty the payload file a run wrote (its descriptor) and close it.  Blocking."""
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def _payload_not_emptied(path: str) -> None:
    # Called in an except block: the failure is the current exception.
    log.failure("emptying the payload file {path} failed", path=path)


def remove_payload(path: str) -> bool:
    """
    Remove a payload file; whether it held a payload (the empty file a
    finished run leaves does not).  Blocking.
    """
    try:
        size = os.lstat(path).st_size
        os.unlink(path)
    except FileNotFoundError:
        return False
    return size > 0


class _TextLog:
    """The writable log handed to a job's callable: takes str or bytes."""

    def __init__(self, log: RunLog) -> None:
        self._log = log

    def write(self, data: str | bytes) -> int:
        raw = data.encode("utf-8", "backslashreplace") if isinstance(data, str) else bytes(data)
        self._log.write(raw)
        return len(data)

    def flush(self) -> None:
        pass


class CallableWork:
    """
    Call a code-defined job: C{call(log, request)}, which may return a
    value, a Deferred or any other awaitable, or be a coroutine function.  Stopping cancels the
    Deferred; an exception fails the run with its message.
    """

    def __init__(self, job: Job) -> None:
        assert job.call is not None
        self._call = job.call
        self._pending: defer.Deferred | None = None

    def run(self, log: RunLog, counter: int, request: Any) -> defer.Deferred[None]:
        log.line("--- Execute  1: call")

        def call() -> Any:
            result = self._call(_TextLog(log), request)
            if inspect.isawaitable(result):
                return as_deferred(result)
            return result

        self._pending = defer.maybeDeferred(call)

        def failed(failure):
            if failure.check(defer.CancelledError):
                raise Stopped()
            if failure.check(RunFailed):
                raise failure.value
            raise RunFailed(f"{failure.type.__name__}: {failure.getErrorMessage()}")

        def done(result):
            self._pending = None
            return result

        return self._pending.addCallbacks(lambda _: None, failed).addBoth(done)

    def stop(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
