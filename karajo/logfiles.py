"""
The blocking file work on a job's log directory and counter file that is
not one run's log being written (L{karajo.runlog}): the spare file a pruned
log leaves for the next run, the counter file, and the finalising of a log
a crash left running.  Plain functions on paths, without the store's
state: L{karajo.joblog.LogStore} decides when, these do it, on whichever
thread the store runs them.
"""

from __future__ import annotations

import errno
import os
import stat

from twisted.logger import Logger

from karajo.paths import is_sole_file, open_making_dirs
from karajo.runrecord import STATUSES, LogName

__all__ = [
    "SPARE_NAME",
    "finalise_leftover",
    "fsync_dir",
    "is_regular_file",
    "make_spare",
    "read_log",
    "read_floor",
    "remove_spare",
    "take_spare",
    "write_floor",
]

#: The emptied file of a pruned log, kept in the job's log directory for the
#: next run's log.  No log is called that: a log name starts with the job ID.
SPARE_NAME = ".spare"

_log = Logger()


def fsync_dir(path: str) -> None:
    """Make a rename or creation inside C{path} durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_regular_file(path: str) -> bool:
    """Whether C{path} is a regular file itself (not a symlink to one)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def make_spare(directory: str, path: str) -> bool:
    """
    Rename the pruned log at C{path} to the spare file of C{directory} and
    empty it; whether that worked.  Emptied through a descriptor opened
    without following a link and checked to be a regular file with one
    name, so a log replaced by a link, or given a second name, never
    empties what the other name holds (then only the log's own name goes).  A
    kill in between leaves a spare with content: L{remove_spare} at the
    next start removes it, and a spare is only ever taken by the daemon
    that made it.
    """
    spare = os.path.join(directory, SPARE_NAME)
    try:
        os.rename(path, spare)
    except OSError:
        return False
    try:
        fd = os.open(spare, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        remove_spare(directory)
        return False
    try:
        st = os.fstat(fd)
        if not is_sole_file(st):
            remove_spare(directory)
            return False
        os.ftruncate(fd, 0)
    except OSError:
        return False  # it stays, unused, until the next start
    finally:
        os.close(fd)
    return True


def take_spare(directory: str, path: str) -> int | None:
    """
    The spare file of C{directory} renamed to the new log C{path} and open
    for writing; C{None} when it cannot be had (the caller makes a new
    file).  No inode is allocated or freed, which on ext4 without a journal
    is the dearest file work of a run (bench/PROFILE.md).  A log already
    at C{path} raises L{FileExistsError}, as an exclusive create does: the
    daemon's reactor thread is the only one that makes logs, so nothing can
    come between the look and the rename.  The spare is empty (L{make_spare}
    emptied it before it was offered), which is checked rather than made
    so by C{O_TRUNC} (that would write the inode again).
    """
    if os.path.lexists(path):
        raise FileExistsError(errno.EEXIST, "a log of this counter exists", path)
    try:
        os.rename(os.path.join(directory, SPARE_NAME), path)
    except OSError:
        return None
    # O_NONBLOCK: whatever were put there, the open does not wait; and
    # only the empty file with one name that make_spare left is written
    # (a second name would have the run's output written into another file).
    fd = None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        st = os.fstat(fd)
        if is_sole_file(st) and st.st_size == 0:
            return fd
    except OSError:
        pass
    if fd is not None:
        os.close(fd)
    os.unlink(path)  # not the spare it was: the caller makes a new file
    return None


def remove_spare(directory: str) -> None:
    """At start-up: a spare left by the previous daemon is never taken."""
    try:
        os.unlink(os.path.join(directory, SPARE_NAME))
    except FileNotFoundError:
        pass


def read_floor(path: str) -> int:
    """The counter in the counter file; 0 when there is none or it is unreadable."""
    try:
        with open(path, "rb") as f:
            text = f.read(64)
    except FileNotFoundError:
        return 0
    try:
        return max(int(text.strip()), 0)
    except ValueError:
        _log.warn("Ignoring unreadable counter file {path}", path=path)
        return 0


#: A counter in the counter file: right-aligned in a fixed width, so each
#: rewrite in place covers the bytes of the one before, within one sector.
_FLOOR_WIDTH = 20


def write_floor(path: str, counter: int) -> None:
    """
    Make the counter file hold C{counter}, durably, before logs are deleted
    (L{karajo.joblog.LogStore.prune}).  The file is made once, by a new
    file and a rename (atomic), then rewritten in place: one C{pwrite} of
    the same length over the same bytes and one C{fdatasync}, no inode made
    or freed, no directory synced.  Made anew every retention + 1 runs, it
    cost about 7 % of a webhook-triggered run's CPU (bench/PROFILE.md).

    A rewrite in place torn by a power loss loses no counter either: the
    value written is the highest counter of any log there is, and no log
    is deleted until this returns, so at the next start those logs' names
    give the counter back whatever a garbled file reads as
    (L{karajo.joblog.LogStore.restore} takes the highest of both), and the
    next prune writes the file again before it deletes one.  Anything but
    the file this makes (a link, a FIFO, a second name, another owner or
    mode, another length: L{_made_here}) is replaced, never written
    through.
    """
    record = b"%*d\n" % (_FLOOR_WIDTH, counter)
    flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError:
        fd = None
    if fd is not None:
        try:
            if _made_here(os.fstat(fd), len(record)):
                os.pwrite(fd, record, 0)
                _fdatasync(fd)
                return
        finally:
            os.close(fd)
    tmp = path + ".tmp"
    fd = open_making_dirs(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC)
    try:
        os.write(fd, record)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


#: The file's data without its times (its size never changes in place).
_fdatasync = getattr(os, "fdatasync", os.fsync)


def _made_here(st: os.stat_result, size: int) -> bool:
    """
    Whether an open counter file is one L{write_floor} made: a plain file
    with one name, the daemon's own, 0600, and exactly one record long.
    Anything else is replaced whole, never grown in place: a file of an
    earlier karajo (C{"12\\n"}) grown by a write could lose its size or its
    bytes to a power loss and read as 0 while an operator might delete
    the logs that would have given the counter back.
    """
    return (
        is_sole_file(st)
        and st.st_size == size
        and st.st_uid == os.geteuid()
        and stat.S_IMODE(st.st_mode) == 0o600
    )


def finalise_leftover(path: str, final_path: str, line: bytes) -> bool:
    """
    End the log a crash left running at C{path} with C{line} and rename it
    to C{final_path}, durably; its modification time stays that of its
    last output.  C{False} (nothing done) when C{final_path} exists.
    """
    if os.path.lexists(final_path):
        _log.warn("Not finalising {path}: {final} exists already", path=path, final=final_path)
        return False
    before = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")  # the crash may have cut the last line short
        f.write(line)
        f.flush()
        os.fsync(f.fileno())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.rename(path, final_path)
    fsync_dir(os.path.dirname(final_path))
    return True


def read_log(
    directory: str, job_id: str, counter: int, start: int = 0, end: int | None = None
) -> tuple[LogName, bytes] | None:
    """
    Bytes C{[start, end)} of run C{counter}'s log in C{directory}, running
    or finished, with its name; C{None} when there is none.  Only a regular
    file is read, never through a link.  Two passes: a running log may be
    renamed between looking and opening.  And a pruned log's file becomes
    the next run's (L{make_spare}, L{take_spare}): what was read counts
    only if the file still has a name of this run afterwards, so a reader
    never gets another run's bytes, nor a log cut short by its emptying.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    names = [LogName(counter, job_id, status) for status in (None,) + STATUSES]
    for _ in range(2):
        for name in names:
            try:
                fd = os.open(os.path.join(directory, name.filename), flags)
            except OSError:  # absent, or a symlink
                continue
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                os.close(fd)
                continue
            with os.fdopen(fd, "rb") as f:
                f.seek(start)
                data = f.read() if end is None else f.read(max(end - start, 0))
            if not any(_is_inode(directory, other, st) for other in names):
                return None
            return name, data
    return None


def _is_inode(directory: str, name: LogName, st: os.stat_result) -> bool:
    try:
        now = os.lstat(os.path.join(directory, name.filename))
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)
