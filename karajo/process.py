"""
One shell command in its own process group, streamed into a run log.

Each command leads a fresh process group: cancel, timeout and
shutdown then stop everything the command started (TERM to the group, KILL
after a grace period), not just the shell.  When the shell itself exits,
whatever it left running in its group is stopped too, so a job never leaves
orphans behind (like systemd's C{KillMode=control-group}).

A command also leads a new session when the daemon has a controlling
terminal (C{twistd -n} in a shell), so a job cannot reach that terminal.
A daemon without one (daemonized, under systemd) only starts a group: the
session would detach from nothing, and Linux gives each new session its
own scheduler autogroup, which costs an allocation per command and, under
load, can leave the new command unscheduled for seconds (seen here on a
pinned core: runs stalled 6 s at their exec, bench/PROFILE.md).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import os
import shutil
import signal
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall, IReactorProcess, IReactorTime
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.internet.process import ProcessReader
from twisted.logger import Logger

from karajo.twisted_private import SpawnHookProcess, spawn_hook_usable

log = Logger()

SANE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SHELL = "/bin/sh"
KILL_GRACE = 2.0
#: Bytes of a command's output read at a time: a full pipe (64 KiB on
#: Linux) in one read, not Twisted's 8 KiB.
READ_SIZE = 64 * 1024


@functools.cache
def setsid_path() -> str:
    """
    C{setsid(1)} from util-linux, present on every Linux distribution: the
    fallback way to a command's own group (in a new session) when
    L{LeaderProcess} cannot be used.
    """
    found = shutil.which("setsid", path=SANE_PATH)
    if found is None:
        raise RuntimeError("karajo needs setsid(1) (util-linux) to run commands")
    return found


def signal_group(pgid: int, sig: int) -> bool:
    """Signal a whole process group; False when nothing is left in it."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        log.warn("not allowed to signal process group {pgid}", pgid=pgid)
        return False
    return True


class CommandResult(Exception):
    """A command ended other than with exit status 0."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _CommandProtocol(protocol.ProcessProtocol):
    def __init__(
        self, clock: IReactorTime, sink: Callable[[bytes], Any],
        note: Callable[[str], Any], ended: defer.Deferred,
    ) -> None:
        self._clock = clock
        self._sink = sink
        self._note = note
        self._ended = ended
        self._release: IDelayedCall | None = None
        self.pgid: int | None = None

    def connectionMade(self) -> None:
        # The child leads its own group: pgid == pid.
        # Kept here because the transport forgets its pid once it exits
        # (which may be before spawnProcess even returns).
        if self.transport is not None:
            self.pgid = self.transport.pid

    def outReceived(self, data: bytes) -> None:
        self._sink(data)

    def processExited(self, reason) -> None:
        # The shell is gone; anything it left in its group keeps the output
        # pipe open.  Stop it so the run can end, and do not wait for ever:
        # a process that left the group (setsid, a daemon) may hold the
        # pipe too, and no signal to the group reaches it.
        if self.pgid is not None:
            signal_group(self.pgid, signal.SIGTERM)
        self._release = self._clock.callLater(KILL_GRACE, self._release_output)

    def _release_output(self) -> None:
        self._release = None
        if self.pgid is not None:
            signal_group(self.pgid, signal.SIGKILL)
        self._note(
            f"--- stopped reading output {KILL_GRACE:g}s after the command ended:"
            " a process it started still held it"
        )
        if self.transport is not None:
            self.transport.loseConnection()

    def processEnded(self, reason) -> None:
        if self._release is not None and self._release.active():
            self._release.cancel()
        self._ended.callback(reason)


class RunningCommand:
    """A started command: its process group and how it ended."""

    def __init__(self, clock: IReactorTime, pgid: int, ended: defer.Deferred) -> None:
        self.pgid = pgid
        self._clock = clock
        self._kill: IDelayedCall | None = None
        self.ended: defer.Deferred[None] = ended.addBoth(self._done)
        self.stopping = False

    def _done(self, reason):
        if self._kill is not None and self._kill.active():
            self._kill.cancel()
        if reason.check(ProcessDone):
            return None
        if reason.check(ProcessTerminated):
            value = reason.value
            if value.signal is not None:
                raise CommandResult(f"killed by signal {value.signal}")
            raise CommandResult(f"exit status {value.exitCode}")
        return reason

    def stop(self, grace: float = KILL_GRACE) -> None:
        """TERM the whole group now, KILL whatever is left after C{grace}."""
        if self.stopping:
            return
        self.stopping = True
        signal_group(self.pgid, signal.SIGTERM)
        self._kill = self._clock.callLater(grace, signal_group, self.pgid, signal.SIGKILL)


# Every signal a child may have reset to its default action: those the
# daemon ignores (Python ignores SIGPIPE) must not stay ignored in a job.
_DEFAULT_SIGNALS = frozenset(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}


@functools.cache
def _has_terminal() -> bool:
    """
    Whether the daemon has a controlling terminal; asked once (a daemon
    gives its terminal up before it starts any command, if ever).
    """
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def _close_on_exec(fd: int) -> bool:
    try:
        return bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
    except OSError:
        return True  # closed meanwhile (the listing's own descriptor)


#: close_range(2)'s flag: mark the range close-on-exec instead of closing it.
_CLOSE_RANGE_CLOEXEC = 4


@functools.cache
def _close_range() -> Callable[[int, int, int], int] | None:
    """glibc's C{close_range} (2.34 and newer), or C{None}."""
    try:
        function = ctypes.CDLL(None, use_errno=True).close_range
    except (AttributeError, OSError):
        return None
    function.argtypes = (ctypes.c_uint, ctypes.c_uint, ctypes.c_int)
    function.restype = ctypes.c_int
    return function


def _closing_the_rest(fdmap: Mapping[int, int]) -> list[tuple]:
    """
    What keeps the daemon's descriptors out of a job.  Python opens its
    own close-on-exec; one the daemon inherited without the flag would leak
    into every job.  Where the kernel has C{close_range} (Linux 5.11), one
    call flags every descriptor above 2 close-on-exec (the flag only matters
    to an exec, and the daemon never execs itself); elsewhere each
    descriptor is listed and asked (a C{fcntl} each, dozens per spawn) and
    the unflagged ones are closed in the child.
    """
    close_range = _close_range()
    if close_range is not None and close_range(3, 0xFFFFFFFF, _CLOSE_RANGE_CLOEXEC) == 0:
        return []
    return [
        (os.POSIX_SPAWN_CLOSE, fd)
        for fd in map(int, os.listdir("/proc/self/fd"))
        if fd not in fdmap and not _close_on_exec(fd)
    ]


def spawn_leader(
    executable: str, args: list[str], env: Mapping[str, str], fdmap: Mapping[int, int]
) -> int:
    """
    C{posix_spawn} C{executable} as the leader of a new process group (and
    of a new session, when the daemon has a terminal: L{_has_terminal}), with the
    daemon's descriptors C{fdmap[n]} as its descriptors C{n} and no other
    descriptor inherited; returns its pid.

    This is what C{setsid(1)} would do, minus one exec: half a millisecond
    of every run's start (minus the session, too, without a terminal).
    """
    moved: list[int] = []
    try:
        sources = {}
        for child, parent in fdmap.items():
            if parent in fdmap:
                # A source that is also a target could be overwritten by an
                # earlier dup2 in the child: give it a number out of the way.
                parent = fcntl.fcntl(parent, fcntl.F_DUPFD_CLOEXEC, max(fdmap) + 1)
                moved.append(parent)
            sources[child] = parent
        actions: list[tuple] = [
            (os.POSIX_SPAWN_DUP2, parent, child) for child, parent in sorted(sources.items())
        ]
        actions += _closing_the_rest(fdmap)
        leader: dict[str, Any] = {"setsid": True} if _has_terminal() else {"setpgroup": 0}
        pid = os.posix_spawn(
            executable, args, env,
            file_actions=actions, **leader,
            setsigdef=_DEFAULT_SIGNALS, setsigmask=(),
        )
        # The command first: where it shares the daemon's core (a pinned
        # daemon, a one-CPU container), it would otherwise wait for the
        # daemon to finish the run's bookkeeping and the trigger's answer
        # before its exec goes on (0.3-0.5 ms of a webhook's trigger ->
        # start, bench/PROFILE.md).  With a free core, this returns at once.
        os.sched_yield()
        return pid
    finally:
        for fd in moved:
            os.close(fd)


class OutputReader(ProcessReader):
    """
    The reader of a command's output pipe, L{READ_SIZE} bytes at a time.
    Twisted reads 8 KiB per turn of the reactor; a chatty command then costs
    eight turns per pipeful, and everything downstream (the log writer, every
    follower of the run's live feed) works per read: fewer, bigger reads
    make all of it cheaper.
    """

    def doRead(self) -> object:
        # twisted.internet.fdesc.readFromFD with a bigger read.
        try:
            output = os.read(self.fd, READ_SIZE)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EINTR):
                return None
            return CONNECTION_LOST
        if not output:
            return CONNECTION_DONE
        self.dataReceived(output)
        return None


class LeaderProcess(SpawnHookProcess):
    """
    A Twisted process started by L{spawn_leader} (through the spawn
    hook of L{karajo.twisted_private}; L{leader_spawn_usable} checks that
    the hook still has the shape it was written for, and karajo falls back
    to C{setsid(1)} when it has changed).  Its output is read by
    L{OutputReader}.
    """

    spawn = staticmethod(spawn_leader)
    processReaderFactory = OutputReader


def leader_spawn_usable(reactor: object) -> bool:
    """Whether L{LeaderProcess} can start commands on C{reactor}."""
    return spawn_hook_usable(reactor)


def spawn_command(
    reactor: IReactorProcess,
    clock: IReactorTime,
    command: str,
    cwd: str,
    env: Mapping[str, str],
    sink: Callable[[bytes], Any],
    note: Callable[[str], Any] = lambda text: None,
) -> RunningCommand:
    """
    Start C{/bin/sh -c command} in C{cwd} with exactly C{env}, in a new
    process group; its stdout and stderr, one stream in the order written, go to
    C{sink(bytes)} as they arrive.  C{note(text)} gets what karajo has to
    say about the command's output (a line for the run log).

    The directory change happens in the child's shell, not through a
    working directory for the spawn: with one Twisted forks the whole
    daemon, and C{posix_spawn} has no portable way to set it.
    """
    ended: defer.Deferred = defer.Deferred()
    proto = _CommandProtocol(clock, sink, note, ended)
    # The shell is intended: a job's command is a shell command line written
    # by the operator in the config (docs/configuration.md, "[job] sections"), never request data.
    argv = [SHELL, "-c", _IN_DIR, "sh", cwd, command]
    # A job gets no input: stdin is /dev/null (no pipe to create and close).
    # One pipe takes stdout and stderr (the wrapper points 2 at 1 first),
    # so the log keeps the order in which lines were written.
    child_fds: dict[int, int | str] = {0: _dev_null(), 1: "r", 2: _dev_null()}
    if leader_spawn_usable(reactor):
        LeaderProcess(reactor, SHELL, argv, dict(env), None, proto, childFDs=child_fds)  # nosec
    else:
        setsid = setsid_path()
        reactor.spawnProcess(  # nosec: shell by design, see above
            proto, setsid, [setsid] + argv, env=dict(env), childFDs=child_fds
        )
    assert proto.pgid is not None
    return RunningCommand(clock, proto.pgid, ended)


@functools.cache
def _dev_null() -> int:
    """One descriptor of /dev/null, opened once, given to every command as stdin."""
    return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


# $1 = the working directory, $2 = the command.  stderr goes where stdout
# goes (one stream, in order); the command is run by this same shell with
# eval (one exec less than a second sh -c: half a millisecond of every
# trigger's latency), with $0 = "sh" and no positional parameters, as
# /bin/sh -c would give it, and no OLDPWD (cd sets it to the daemon's
# directory, which is none of the job's business).
_IN_DIR = (
    'exec 2>&1; cd -- "$1" || exit 126; unset OLDPWD; '
    'karajo_command=$2; set --; eval "$karajo_command"'
)


@functools.cache
def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return "-"


def _start_time(pid: int) -> str | None:
    """A process's start time (clock ticks since boot), or C{None} when gone."""
    fields = _stat_of(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


def _stat_of(pid: int | str) -> list[str] | None:
    """
    The fields of a process's C{/proc/PID/stat} after C{pid (comm)}, its
    state first, or C{None} when it is gone.  The command name may hold
    spaces and parentheses, so the line is cut at its last C{)}.  Read
    with C{os.open} and one C{read}: a text file object costs five more
    system calls, and this runs at every command's start.
    """
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        stat = os.read(fd, 4096).decode("ascii", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        return stat[stat.rindex(")") + 2 :].split()
    except ValueError:
        return None


def processes() -> dict[int, tuple[str, int, int]]:
    """Every process now, from /proc: pid -> (state, parent pid, process group)."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = _stat_of(name)
        try:
            if fields is not None:
                found[int(name)] = (fields[0], int(fields[1]), int(fields[2]))
        except (ValueError, IndexError):
            continue  # a line cut short
    return found


def group_record(pgid: int) -> str | None:
    """
    What a running command's pid file holds: its process group, and what
    proves that group's identity after a crash (boot id and the leader's
    start time), so a restart never kills an unrelated group that reuses
    the number.  C{None} when the leader is already gone (not even a
    zombie): nothing could be proven later, and nothing needs recording.

    Call it right after the spawn, on the reactor thread: the child is not
    reaped before the reactor's next turn, so its C{/proc/PID/stat} is
    still there even when the command has ended (a zombie keeps its start
    time).  Read later, from a thread, a fast command was already reaped
    and its record lost the start time.  The read is of procfs, a few
    microseconds, never disk.
    """
    started = _start_time(pgid)
    boot = _boot_id()
    if started is None or boot == "-":
        return None
    return f"{pgid} {boot} {started}\n"


def _group_members(pgid: int) -> list[int]:
    """The processes whose process group is C{pgid} (read from /proc)."""
    return [pid for pid, (_state, _ppid, group) in processes().items() if group == pgid]


def _carries_job(pid: int, job_id: str) -> bool:
    """Whether process C{pid} was started as a command of job C{job_id}."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read().split(b"\0")
    except OSError:
        return False
    return b"KARAJO_JOB_ID=" + job_id.encode("utf-8", "surrogateescape") in environ


def leftover_group(record: str, job_id: str | None = None) -> int | None:
    """
    The process group of a L{group_record} whose identity is proven, or
    C{None}.  Proven means the same boot and a recorded start time, and
    either the leader alive with that start time, or -- the leader gone,
    its children left (a shell killed with its daemon) -- every process
    still in the group started as a command of C{job_id}
    (C{KARAJO_JOB_ID} in its environment).  A short or malformed record,
    another boot, a leader started at another time, or a group with a
    member of unknown origin is never signalled: a reused number may now
    lead an unrelated group.
    """
    parts = record.split()
    if len(parts) != 3:
        return None
    try:
        pgid = int(parts[0])
    except ValueError:
        return None
    if pgid <= 1:
        return None
    boot, started = parts[1], parts[2]
    if boot == "-" or boot != _boot_id():
        return None
    if started == "-":
        return None
    now = _start_time(pgid)
    if now is not None:
        return pgid if now == started else None
    if job_id is None:
        return None
    members = _group_members(pgid)
    if members and all(_carries_job(pid, job_id) for pid in members):
        return pgid
    return None


def command_env(
    counter: int,
    *,
    job_id: str = "",
    attempt: int = 1,
    trigger: str = "manual",
    env: Iterable[tuple[str, str]] = (),
    payload_vars: Iterable[tuple[str, str]] = (),
    payload_file: str | None = None,
    payload_type: str = "",
) -> dict[str, str]:
    """
    A command sees only this: a sane C{PATH}, the job's own C{env} (which
    may set its own C{PATH}), the values its C{payload_env} took from the
    webhook request (names never also in C{env}: a config error), then
    what karajo says about the run (C{KARAJO_*}, reserved: a job cannot
    set them, so they always hold), with C{KARAJO_PAYLOAD_FILE} and
    C{KARAJO_PAYLOAD_TYPE} for a run that has a request.
    Nothing of the daemon's own environment (which may hold secrets)
    leaks into jobs.
    """
    out = {"PATH": SANE_PATH}
    out.update(env)
    out.update((name, env_safe(value)) for name, value in payload_vars)
    out.update({
        "KARAJO_JOB_ID": job_id,
        "KARAJO_JOB_COUNTER": str(counter),
        "KARAJO_RUN_ATTEMPT": str(attempt),
        "KARAJO_TRIGGER": trigger,
    })
    if payload_file is not None:
        out["KARAJO_PAYLOAD_FILE"] = payload_file
        out["KARAJO_PAYLOAD_TYPE"] = env_safe(payload_type)
    return out


#: The most one environment variable may hold, its name and C{=} included
#: (Linux's C{MAX_ARG_STRLEN}: a longer one fails the exec with E2BIG).
MAX_ENV_STRING = 32 * 4096


def env_safe(text: str) -> str:
    """
    Untrusted text as an environment variable can hold it: no NUL (the
    variable would end there; spawning refuses it), and valid UTF-8 (a
    JSON escape can make a lone surrogate, which cannot be encoded): each
    character that cannot be is replaced by C{?}.
    """
    return text.replace("\0", "").encode("utf-8", "replace").decode("utf-8")
