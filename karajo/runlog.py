"""
One run's log being written (L{RunLog}): output arrives in arbitrary chunks
and leaves as prefixed lines, bounded in memory (the head goes to the file
as it comes, the newest lines wait in a ring, the middle that did not fit
is one note at the end), handed to the run's live feed as written, and
finished with one off-thread step (fsync, record, rename, directory fsync).
The store that opens and names it is L{karajo.joblog.LogStore}.
"""

from __future__ import annotations

import collections
import io
import os
from typing import TYPE_CHECKING, BinaryIO

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from karajo.logfeed import LogFeed
from karajo.logfiles import fsync_dir
from karajo.runrecord import STATUSES, LogName, RunRecord
from karajo.status import RunStatus

if TYPE_CHECKING:
    from karajo.joblog import LogStore

__all__ = ["LINE_MAX", "RunLog"]

#: A line of output longer than this (without its newline) is cut into lines
#: of this size, so one endless line cannot hold unbounded memory.
LINE_MAX = 64 * 1024

_log = Logger()


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

    def __init__(
        self, store: LogStore, name: LogName, fd: int, feed: LogFeed | None = None
    ) -> None:
        self.name = name
        #: the run's followers hear every byte written to the file
        self.feed = feed
        #: lines written but not yet handed to the feed (see L{_publish})
        self._fresh: list[bytes] = []
        self.path = store.path_of(name)
        self.bytes_written = 0
        self._store = store
        # A buffer size given: Python then does not ask whether a log is a
        # terminal (one ioctl per run).
        self._file = os.fdopen(fd, "wb", io.DEFAULT_BUFFER_SIZE)
        self._partial = bytearray()
        self._head_limit = store.max_bytes // 2
        self._head_full = False
        self._tail: collections.deque[bytes] = collections.deque()
        self._tail_bytes = 0
        self._cut_bytes = 0
        self._cut_lines = 0
        self._finished = False

    @property
    def record(self) -> RunRecord | None:
        """
        This run's L{RunRecord}: what triggered it and which attempt it is,
        for the work (the one source; nothing else carries them).
        """
        return self._store.record(self.name.counter)

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
        self._publish()

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
        self._publish()

    def finish(self, status: str, retention: int | None = None) -> Deferred[LogName]:
        """
        End the run: its record gets the status and the end time at once
        and is written to the record file (a line appended); then write
        what is still held in memory (partial line, cut note, tail), fsync
        and close the file, rename the log to its final name and fsync the
        directory, all in one C{run_in_thread} step so the reactor never
        waits on the disk.

        @param retention: when given, the same thread step then prunes the
            job's logs to that many (L{karajo.joblog.LogStore.prune}) and
            the store forgets the pruned ones' records: a thread hop less
            per run than pruning on its own.  A failure to prune is logged
            and leaves the logs as they are.

        @return: fires with the final L{LogName} once the rename is durable.
        @raise RuntimeError: when called a second time.
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {tuple(map(str, STATUSES))}, not {status!r}")
        status = RunStatus(status)
        self._check_open()
        self._flush_partial()
        self._publish()
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
        if self.feed is not None:
            # Published now, written by the thread step below: a late
            # follower's file read is ordered after that write (_in_order).
            self.feed.publish(b"".join(rest))
        final = attrs.evolve(self.name, status=status)
        store = self._store
        store._ended(final, store.clock.seconds())
        store._write_for_finish()
        args = (self._file, rest, self.path, store.path_of(final), final)
        if retention is None:
            d = store._in_order(_close_and_rename, *args)
        else:
            d = store._in_order(
                _finish_and_prune, store, retention, store.kept(), store.spare_wanted(), *args
            )
            d.addCallback(self._forget_pruned)

        def renamed(name: LogName) -> LogName:
            self.name = name
            self.path = self._store.path_of(name)
            self._store.release(name.counter, status)
            return name

        def failed(failure: Failure) -> Failure:
            self._store.release(final.counter, status)
            if retention is not None:
                self._store.forget(())  # the prune never ran: nor was a spare made
            return failure

        return d.addCallbacks(renamed, failed)

    def _forget_pruned(self, result: tuple[LogName, list[LogName] | str]) -> LogName:
        final, pruned = result
        if isinstance(pruned, str):
            _log.warn("{job}: pruning old logs failed: {error}",
                      job=self._store.job_id, error=pruned)
            pruned = []
        self._store.forget(pruned)
        return final

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError(f"log {self.name.filename} is already finished")

    def _flush_partial(self) -> None:
        if self._partial:
            self._emit(bytes(self._partial))
            self._partial.clear()

    def _publish(self) -> None:
        """
        Hand the lines just written to the live feed as one piece: a chunk
        of output is thousands of lines, and each piece costs every
        follower a frame.
        """
        if self._fresh:
            assert self.feed is not None
            self.feed.publish(b"".join(self._fresh))
            self._fresh.clear()

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
                if self.feed is not None:
                    self._fresh.append(line)
                continue
            self._head_full = True
            self._tail.append(line)
            self._tail_bytes += len(line)
            while self._tail_bytes > self._head_limit and len(self._tail) > 1:
                dropped = self._tail.popleft()
                self._tail_bytes -= len(dropped)
                self._cut_bytes += len(dropped)
                self._cut_lines += 1


def _finish_and_prune(
    store: LogStore, retention: int, kept: list[LogName], spare: bool, *args: object
) -> tuple[LogName, list[LogName] | str]:
    """
    L{_close_and_rename}, then L{karajo.joblog.LogStore.prune} of the logs
    C{kept} (keeping a C{spare}): one thread step, with one directory fsync
    after both.  The pruned log's rename to the spare is durable before
    the spare's inode can get another run's bytes, so not even a power loss
    brings an old log's name back over a newer run's output.  Returns the
    final name and the pruned logs (or, when pruning failed, why: the
    finish itself succeeded).
    """
    final = _close_and_rename(*args, sync=False)  # type: ignore[arg-type, misc]
    pruned: list[LogName] | str
    try:
        pruned = store.prune(retention, kept, spare)
    except OSError as e:
        pruned = str(e)
    fsync_dir(store.directory)
    return final, pruned


def _close_and_rename(
    file: BinaryIO,
    rest: list[bytes],
    old_path: str,
    new_path: str,
    final: LogName,
    sync: bool = True,
) -> LogName:
    """
    The blocking end of L{RunLog.finish}, run off the reactor thread (the
    run's record was written before, on the reactor thread: a kill before
    the rename leaves a record that says the run ended and a log that
    says it did not, and the log wins).  Without C{sync} the caller
    fsyncs the directory.
    """
    with file:
        file.writelines(rest)
        file.flush()
        os.fsync(file.fileno())
    os.rename(old_path, new_path)
    if sync:
        fsync_dir(os.path.dirname(new_path))
    return final
