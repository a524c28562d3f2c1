"""
The run-log store: one file per run of a job.

A run writes C{$ID.$COUNTER} while it runs and renames it to
C{$ID.$COUNTER.$STATUS} when it ends, so the file name alone says whether a
run finished and how (SPEC section 3).  Every line carries a UTC timestamp and
the job it belongs to, so a log stays readable once it is mailed or copied
elsewhere.  The names are the only state the daemon keeps about past runs:
at start-up L{LogStore.restore} rebuilds the run counter, the last status and
the last run time from them, plus a small counter file so that numbers are
never reused after retention deleted every log.

Whatever a job prints, a log file and the memory behind it stay bounded: the
first half of C{max_bytes} goes to the file as it arrives, later lines wait in
a ring of the newest lines, and the middle that did not fit is replaced by one
note when the run finishes.
"""

from __future__ import annotations

import collections
import datetime
import os
import stat
from collections.abc import Callable
from typing import BinaryIO

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from karajo.paths import make_private_dirs

STATUSES = ("success", "failed", "canceled")
KINDS = ("job", "job_http")

#: A line of output longer than this (without its newline) is cut into lines
#: of this size, so one endless line cannot hold unbounded memory.
LINE_MAX = 64 * 1024

CRASH_LINE = "!!! karajo stopped during this run; marked failed at start-up"

_log = Logger()


def _status_order(status: str | None) -> tuple[bool, str]:
    """
    Sort key for L{LogName.status}: a running log (C{None}) sorts before a
    finished one with the same counter, and C{None} never meets C{<} with a
    C{str} (which would raise C{TypeError}).
    """
    return (status is not None, status or "")


def _check_counter(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if type(value) is not int or value < 1:
        raise ValueError(f"log counter must be a positive int, not {value!r}")


def _check_status(instance: object, attribute: attrs.Attribute, value: str | None) -> None:
    if value is not None and value not in STATUSES:
        raise ValueError(f"log status must be one of {STATUSES} or None, not {value!r}")


@attrs.frozen(order=True)
class LogName:
    """
    The name of one run's log file; ordered by counter first.

    C{status} is C{None} while the run is still writing its log.
    """

    counter: int = attrs.field(validator=_check_counter)
    job_id: str
    status: str | None = attrs.field(validator=_check_status, order=_status_order)

    @property
    def filename(self) -> str:
        """C{$ID.$N} while running, C{$ID.$N.$STATUS} once finished."""
        if self.status is None:
            return f"{self.job_id}.{self.counter}"
        return f"{self.job_id}.{self.counter}.{self.status}"


def parse_log_name(job_id: str, filename: str) -> LogName | None:
    """
    Read a log file name of job C{job_id}, or C{None} when it is not one.

    Only the exact forms that L{LogName.filename} produces are accepted: the
    counter is plain ASCII decimal without sign, spaces or leading zeros, so
    that parsing and formatting round-trip and C{x.7} and C{x.007} can never
    both claim run 7.  Never raises: the directory may hold anything.
    """
    if not isinstance(job_id, str) or not isinstance(filename, str) or not job_id:
        return None
    head = job_id + "."
    if not filename.startswith(head):
        return None
    number, dot, status = filename[len(head):].partition(".")
    if not (number.isascii() and number.isdigit()) or number[0] == "0":
        return None
    if dot and status not in STATUSES:
        return None
    try:
        counter = int(number)
    except ValueError:  # more digits than int() accepts from a str
        return None
    return LogName(counter, job_id, status if dot else None)


@attrs.frozen
class RestoredState:
    """What L{LogStore.restore} learnt from the log directory at start-up."""

    counter: int
    last_status: str | None
    last_run: datetime.datetime | None
    logs: tuple[LogName, ...]
    finalised: tuple[LogName, ...]


def _fsync_dir(path: str) -> None:
    """Make a rename or creation inside C{path} durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _started_at(path: str) -> datetime.datetime:
    """When the run of a log started: the time of its first line."""
    try:
        with open(path, "rb") as f:
            head = f.read(len("YYYY-MM-DD HH:MM:SS UTC "))
        started = datetime.datetime.strptime(head.decode("ascii"), "%Y-%m-%d %H:%M:%S UTC ")
        return started.replace(tzinfo=datetime.UTC)
    except (OSError, ValueError, UnicodeDecodeError):
        mtime = os.stat(path).st_mtime
        return datetime.datetime.fromtimestamp(mtime, datetime.UTC)


class RunLog:
    """
    One run's log being written.  Created by L{LogStore.begin}.

    Output arrives in arbitrary chunks; only complete lines are written, each
    with the prefix, so a line is never split by a chunk boundary.  Writes
    happen on the caller's thread (they go to the page cache); the slow part,
    fsync and rename, runs through the store's C{run_in_thread} in
    L{finish}.

    @ivar name: the current name (C{status} None until L{finish} completes).
    @ivar path: the current path of the file.
    @ivar bytes_written: bytes that went into the file so far (at the end
        of L{finish}: the final file size).
    """

    def __init__(self, store: LogStore, name: LogName, fd: int) -> None:
        self.name = name
        self.path = store.path_of(name)
        self.bytes_written = 0
        self._store = store
        self._file = os.fdopen(fd, "wb")
        self._partial = bytearray()
        self._head_limit = store.max_bytes // 2
        self._head_full = False
        self._tail: collections.deque[bytes] = collections.deque()
        self._tail_bytes = 0
        self._cut_bytes = 0
        self._cut_lines = 0
        self._finished = False

    def write(self, data: bytes) -> None:
        """
        Add command output.  Complete lines are written with the prefix; an
        incomplete last line waits for its newline, but never grows past
        L{LINE_MAX} bytes: then it is written as a line of its own.
        Bytes are kept as they are, valid UTF-8 or not.
        """
        self._check_open()
        pos, size = 0, len(data)
        partial = self._partial
        while pos < size:
            if len(partial) == LINE_MAX:
                # Full: emit it now, eating the newline if that is what follows.
                self._emit(bytes(partial))
                partial.clear()
                if data[pos] == 0x0A:
                    pos += 1
                continue
            room = LINE_MAX - len(partial)
            end = data.find(b"\n", pos, pos + room)
            if end < 0:
                piece = data[pos:pos + room]
                partial += piece
                pos += len(piece)
            elif partial:
                partial += data[pos:end]
                self._emit(bytes(partial))
                partial.clear()
                pos = end + 1
            else:
                self._emit(data[pos:end])
                pos = end + 1
        self._file.flush()

    def line(self, text: str) -> None:
        """
        Write one marker or information line such as C{=== BEGIN} or
        C{!!! exit status 1}.  Pending partial output is written first so
        the log keeps the order in which things happened; a text with
        newlines becomes several prefixed lines.
        """
        self._check_open()
        self._flush_partial()
        for piece in text.rstrip("\n").split("\n"):
            self._emit(piece.encode("utf-8", "backslashreplace"))
        self._file.flush()

    def finish(self, status: str) -> Deferred[LogName]:
        """
        End the run: write what is still held in memory (partial line, cut
        note, tail), then fsync, close and rename the file to its final name
        and fsync the directory, all in C{run_in_thread} so the reactor never
        waits on the disk.

        @return: fires with the final L{LogName} once the rename is durable.
        @raise RuntimeError: when called a second time.
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
        self._check_open()
        self._flush_partial()
        self._finished = True
        rest = list(self._tail)
        if self._cut_lines:
            note = (
                f"... {self._cut_bytes} bytes ({self._cut_lines} lines)"
                " cut from the middle of this log ..."
            )
            rest.insert(0, self._prefixed(note.encode("ascii")))
        self._tail.clear()
        self._tail_bytes = 0
        self.bytes_written += sum(map(len, rest))
        final = attrs.evolve(self.name, status=status)
        d = self._store.run_in_thread(
            _close_and_rename,
            self._file,
            rest,
            self.path,
            self._store.path_of(final),
            final,
        )

        def renamed(name: LogName) -> LogName:
            self.name = name
            self.path = self._store.path_of(name)
            return name

        return d.addCallback(renamed)

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError(f"log {self.name.filename} is already finished")

    def _flush_partial(self) -> None:
        if self._partial:
            self._emit(bytes(self._partial))
            self._partial.clear()

    def _prefixed(self, body: bytes) -> bytes:
        return self._store._line_prefix() + body + b"\n"

    def _emit(self, body: bytes) -> None:
        """
        Write one line to the head of the file while it has room; after
        that keep it in the tail ring, dropping the oldest lines (but never
        the newest one) to stay within C{max_bytes // 2}.
        """
        for start in range(0, max(len(body), 1), LINE_MAX):
            line = self._prefixed(body[start:start + LINE_MAX])
            if not self._head_full and self.bytes_written + len(line) <= self._head_limit:
                self._file.write(line)
                self.bytes_written += len(line)
                continue
            self._head_full = True
            self._tail.append(line)
            self._tail_bytes += len(line)
            while self._tail_bytes > self._head_limit and len(self._tail) > 1:
                dropped = self._tail.popleft()
                self._tail_bytes -= len(dropped)
                self._cut_bytes += len(dropped)
                self._cut_lines += 1


def _close_and_rename(
    file: BinaryIO, rest: list[bytes], old_path: str, new_path: str, final: LogName
) -> LogName:
    """
    The blocking end of L{RunLog.finish}, run off the reactor thread.
    """
    with file:
        file.writelines(rest)
        file.flush()
        os.fsync(file.fileno())
    os.rename(old_path, new_path)
    _fsync_dir(os.path.dirname(new_path))
    return final


class LogStore:
    """
    The log files of one job, in C{directory}.

    Only regular files whose names L{parse_log_name} accepts are ever read,
    renamed or deleted; anything else an operator keeps there is left alone.

    @param directory: C{$dir_base/var/log/karajo/job/$ID}; created (mode
        0700, parents too) when missing.
    @param kind: C{job} or C{job_http}, the word in every line's prefix.
    @param clock: the time source for line timestamps.
    @param max_bytes: the approximate cap on one log file.
    @param run_in_thread: C{f, *args -> Deferred} off the reactor thread
        (required: no default reaches for the global reactor).
    @param state_path: a file (C{$dir_base/var/run/karajo/job/$ID}) holding
        the highest counter ever begun, so numbers are not reused after
        retention removed every log.  Without it, only the logs count.
    """

    def __init__(
        self,
        directory: str,
        job_id: str,
        kind: str = "job",
        *,
        clock: IReactorTime,
        max_bytes: int = 10 * 1024 * 1024,
        run_in_thread: Callable[..., Deferred],
        state_path: str | None = None,
    ) -> None:
        if not job_id or "/" in job_id or "\0" in job_id or job_id in (".", ".."):
            raise ValueError(f"job ID {job_id!r} cannot name a file")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        self.directory = directory
        self.job_id = job_id
        self.kind = kind
        self.clock = clock
        self.max_bytes = max_bytes
        self.run_in_thread = run_in_thread
        self.state_path = state_path
        self._floor: int | None = None
        self._prefix_second: int | None = None
        self._prefix = b""
        # Directories are made on first use (begin, prune), not here: a
        # server with thousands of jobs must not start with a mkdir each.

    def _line_prefix(self) -> bytes:
        """
        C{YYYY-MM-DD HH:MM:SS UTC job: $ID: } for the current time; cached
        per second because every line of output needs it.
        """
        second = int(self.clock.seconds())
        if second != self._prefix_second:
            when = datetime.datetime.fromtimestamp(second, datetime.UTC)
            text = f"{when:%Y-%m-%d %H:%M:%S} UTC {self.kind}: {self.job_id}: "
            self._prefix = text.encode("utf-8")
            self._prefix_second = second
        return self._prefix

    def path_of(self, name: LogName) -> str:
        """The path of the log file called C{name}."""
        if name.job_id != self.job_id:
            raise ValueError(f"log {name.filename} is not of job {self.job_id}")
        return os.path.join(self.directory, name.filename)

    def scan(self) -> list[LogName]:
        """Every log in the directory, oldest counter first."""
        names: list[LogName] = []
        if not os.path.isdir(self.directory):
            return names
        with os.scandir(self.directory) as entries:
            for entry in entries:
                name = parse_log_name(self.job_id, entry.name)
                if name is not None and entry.is_file(follow_symlinks=False):
                    names.append(name)
        return sorted(names)

    def restore(self) -> RestoredState:
        """
        Rebuild the job's state at start-up, before the reactor runs (so the
        blocking I/O here is fine).

        A log still named C{$ID.$N} belongs to a run the daemon did not see
        end: it gets an explanation line and becomes C{$ID.$N.failed}.

        C{last_run} is when the newest finished run started, as its log's
        first line says (to the second), as it was before the restart; the
        file's modification time (the run's end) only when that line cannot
        be read.
        """
        finalised = []
        for name in self.scan():
            if name.status is None:
                done = self._finalise_leftover(name)
                if done is not None:
                    finalised.append(done)
        logs = tuple(self.scan())
        self._floor = max([self._read_floor()] + [n.counter for n in logs])
        last_status = last_run = None
        finished = [n for n in logs if n.status is not None]
        if finished:
            newest = finished[-1]
            last_status = newest.status
            last_run = _started_at(self.path_of(newest))
        return RestoredState(self._floor, last_status, last_run, logs, tuple(finalised))

    def begin(self, counter: int) -> RunLog:
        """
        Start the log of run C{counter} by creating C{$ID.$N} exclusively,
        mode 0600.  That file is what persists the counter: a crash at any
        point after this leaves it behind for L{restore}, and L{prune}
        writes the state file before it deletes any log.  Nothing here
        waits on the disk (no fsync), because it runs on the reactor thread
        for every run.

        @raise FileExistsError: a log of that counter exists already.
        @raise ValueError: C{counter} is not above a counter already used.
        """
        running = LogName(counter, self.job_id, None)
        # The floor covers every log this store has seen (restore scans the
        # directory), so no per-status existence check is needed here: this
        # runs on the reactor thread for every run.
        if self._floor is None:
            self._floor = max([self._read_floor()] + [n.counter for n in self.scan()])
        if counter <= self._floor:
            raise ValueError(f"counter {counter} of job {self.job_id} was used already")
        self._floor = counter
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            fd = os.open(self.path_of(running), flags, 0o600)
        except FileNotFoundError:
            make_private_dirs(self.directory)
            fd = os.open(self.path_of(running), flags, 0o600)
        return RunLog(self, running, fd)

    def prune(self, retention: int) -> list[LogName]:
        """
        Keep the newest C{retention} finished logs (at least one) and delete
        the older finished ones.  A running log is never counted or touched.

        @return: the logs deleted.
        """
        names = self.scan()
        finished = [n for n in names if n.status is not None]
        doomed = finished[: -max(retention, 1)]
        if doomed:
            # The counters of deleted logs must never come back, even if an
            # operator later deletes the rest: record the highest one first.
            self._write_floor(max(n.counter for n in names))
        for name in doomed:
            try:
                os.unlink(self.path_of(name))
            except FileNotFoundError:
                pass
        return doomed

    def read(self, counter: int) -> tuple[LogName, bytes] | None:
        """
        The log of run C{counter}, running or finished, and what its file
        holds now; C{None} when there is none.  A running log's file lacks
        the lines still held in memory (the partial line and the tail).
        """
        if type(counter) is not int or counter < 1:
            return None
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        # Two passes: a running log may be renamed between looking and opening.
        for _ in range(2):
            for status in (None,) + STATUSES:
                name = LogName(counter, self.job_id, status)
                try:
                    fd = os.open(self.path_of(name), flags)
                except OSError:  # absent, or a symlink
                    continue
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    os.close(fd)
                    continue
                with os.fdopen(fd, "rb") as f:
                    return name, f.read()
        return None

    def _finalise_leftover(self, name: LogName) -> LogName | None:
        """Mark a crashed run's log failed; see L{restore}."""
        path = self.path_of(name)
        final = attrs.evolve(name, status="failed")
        final_path = self.path_of(final)
        if os.path.lexists(final_path):
            _log.warn(
                "Not finalising {path}: {final} exists already", path=path, final=final_path
            )
            return None
        before = os.stat(path)
        with open(path, "r+b") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")  # the crash may have cut the last line short
            f.write(self._line_prefix() + CRASH_LINE.encode("ascii") + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        os.rename(path, final_path)
        _fsync_dir(self.directory)
        return final

    def _read_floor(self) -> int:
        """The counter in the state file; 0 when there is none or it is unreadable."""
        if self.state_path is None:
            return 0
        try:
            with open(self.state_path, "rb") as f:
                text = f.read(64)
        except FileNotFoundError:
            return 0
        try:
            return max(int(text.strip()), 0)
        except ValueError:
            _log.warn("Ignoring unreadable counter file {path}", path=self.state_path)
            return 0

    def _write_floor(self, counter: int) -> None:
        """Replace the state file atomically and durably (before logs are deleted)."""
        if self.state_path is None:
            return
        make_private_dirs(os.path.dirname(os.path.abspath(self.state_path)))
        tmp = self.state_path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"%d\n" % counter)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.state_path)
        _fsync_dir(os.path.dirname(os.path.abspath(self.state_path)))
