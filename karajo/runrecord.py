"""
What names and describes one run: the name of its log file (L{LogName})
and its record (L{RunRecord}), and the file that keeps a job's records.

The run record
==============

What the runner knows exactly about a run (counter, status, when it
started and ended, what triggered it, which attempt, on which node) is one
frozen L{RunRecord}, kept in memory by the job's L{LogStore} (the API,
dashboard, metrics and notifications read it from there, never from log
text) and persisted in one file per job, C{var/run/karajo/$KIND/$ID.runs}
(the run-time state directory of docs/configuration.md), as JSON holding the records of the
logs the store keeps.

  - Crash-safe: the file is a whole document (written to C{$ID.runs.tmp},
    then C{rename}d over) followed by the records appended since, a line
    each, each append one C{write}: a kill -9 at any point leaves the old
    or the new file, never a torn record.  A line that does not parse (a
    power loss before the page cache reached the disk) is skipped.
  - Cheap: no fsync of its own, and no file created per run.  A run's
    record is appended on the reactor thread (one C{write} to the page
    cache, like the log's own lines): at L{karajo.runlog.RunLog.finish},
    before the thread step that fsyncs and renames the log; a run still
    going L{karajo.joblog.RECORD_DELAY} (1 s) after
    L{karajo.joblog.LogStore.begin} is appended once more then
    (C{running}, with its start time), so a crash during a long run keeps
    its start and trigger.  Once twice what the store keeps (plus 16) was
    appended, the file is written whole again; the first write after a
    start-up is whole.  A run killed with
    the daemon in its first second has no record: restored C{failed}, its
    C{ended} is its log's modification time and its start unknown, as for a
    log of an older karajo.  The log file and its name stay the truth
    about which runs exist and how they ended; the record adds the times.
  - Pruned with the logs: L{karajo.joblog.LogStore.forget} drops the records of pruned
    logs, and each whole write holds only the records the store still keeps;
    L{karajo.joblog.LogStore.restore} ignores a record whose log is gone.
  - Rebuilt at start-up by L{karajo.joblog.LogStore.restore}, in the existing restore
    step, with one read of that file per job (it replaces the read of the
    newest log's first line): status from the log names (a leftover
    running log becomes C{failed}), C{started}, C{ended}, C{trigger},
    C{attempt}, C{node} from the record.  A log without a usable record
    (written by an older karajo, or a record lost with the page cache) gets
    C{started=None} and its file's modification time as C{ended}; the last
    run then counts from that end (L{last_run_of}).
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Callable, Mapping, Sequence

import attrs
from twisted.logger import Logger

from karajo.paths import open_making_dirs
from karajo.status import FINAL_STATUSES, RunStatus

__all__ = [
    "RECORDS_SUFFIX",
    "STATUSES",
    "LogName",
    "RecordFile",
    "RunRecord",
    "append_records",
    "last_run_of",
    "load_records",
    "parse_log_name",
    "read_records",
    "record_from_disk",
    "scan_logs",
    "write_records",
]

#: The statuses a log file name can end in (L{FINAL_STATUSES}).
STATUSES = FINAL_STATUSES
#: The same, as the words they are (for messages).
_STATUS_WORDS = tuple(map(str, STATUSES))

#: The run record file of a job is its state file plus this suffix.
RECORDS_SUFFIX = ".runs"
#: A record file larger than this is not read (it holds a few hundred bytes
#: per kept log).
RECORDS_MAX_BYTES = 16 * 1024 * 1024

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
        raise ValueError(f"log status must be one of {_STATUS_WORDS} or None, not {value!r}")


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
    return LogName(counter, job_id, RunStatus(status) if dot else None)


def _optional_time(
    instance: object, attribute: attrs.Attribute, value: float | None
) -> None:
    if value is not None and (type(value) not in (int, float) or value != value):
        raise ValueError(f"{attribute.name} must be a Unix time or None, not {value!r}")


@attrs.frozen(cache_hash=True)
class RunRecord:
    """
    One run as the runner knows it; see the module docstring.

    @ivar started: Unix time the run started (its log was created); C{None}
        when unknown (a log from before run records existed).
    @ivar ended: Unix time its work ended; C{None} while it runs.
    @ivar trigger: what started it (a L{karajo.status.Trigger} value), or
        C{None} when unknown.
    @ivar attempt: 1 for a first run; a retry counts up.
    @ivar node: the cluster node that ran it; C{None} on a single server.
    """

    job_id: str
    counter: int = attrs.field(validator=_check_counter)
    status: RunStatus = attrs.field(converter=RunStatus)
    started: float | None = attrs.field(default=None, validator=_optional_time)
    ended: float | None = attrs.field(default=None, validator=_optional_time)
    trigger: str | None = None
    attempt: int = 1
    node: str | None = None
    #: The name of this run's log file; made once (the dashboard asks for
    #: the names of every job's logs on every page).
    name: LogName = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        final = None if self.status is RunStatus.RUNNING else self.status
        object.__setattr__(self, "name", LogName(self.counter, self.job_id, final))

    @property
    def filename(self) -> str:
        return self.name.filename

    def to_json(self) -> dict[str, object]:
        return {
            "counter": self.counter,
            "status": str(self.status),
            "started": self.started,
            "ended": self.ended,
            "trigger": self.trigger,
            "attempt": self.attempt,
            "node": self.node,
        }

    @classmethod
    def from_json(cls, job_id: str, value: object) -> RunRecord | None:
        """A record read back from the file; C{None} for anything malformed."""
        if not isinstance(value, dict):
            return None
        try:
            trigger, node, attempt = value.get("trigger"), value.get("node"), value.get("attempt", 1)
            if not (trigger is None or isinstance(trigger, str)):
                return None
            if not (node is None or isinstance(node, str)):
                return None
            if type(attempt) is not int or attempt < 1:
                return None
            return cls(
                job_id, value["counter"], value["status"],
                value.get("started"), value.get("ended"), trigger, attempt, node,
            )
        except (KeyError, TypeError, ValueError):
            return None


def last_run_of(records: Sequence[RunRecord]) -> float | None:
    """
    When the job last ran, as the daemon and C{karajo check} both count an
    interval from it: the start of the newest run (by counter), or its end
    when its start is unknown.
    """
    if not records:
        return None
    newest = max(records, key=lambda r: r.counter)
    return newest.started if newest.started is not None else newest.ended


def read_records(path: str, job_id: str) -> dict[int, RunRecord]:
    """
    The records in the file at C{path}, by counter; empty when unreadable.
    The file is a whole document (L{write_records}) followed by the records
    appended since (L{append_records}), one JSON value per line; a later
    line wins.  A line that does not parse (a power loss before the page
    cache reached the disk) is skipped, the rest still count.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(RECORDS_MAX_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as e:
        _log.warn("Ignoring unreadable run records {path}: {error}", path=path, error=str(e))
        return {}
    if len(data) > RECORDS_MAX_BYTES:
        _log.warn("Ignoring run records {path}: over {limit} bytes",
                  path=path, limit=RECORDS_MAX_BYTES)
        return {}
    found = {}
    skipped = 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except (ValueError, UnicodeDecodeError, RecursionError):
            skipped += 1
            continue
        runs = value.get("runs") if isinstance(value, dict) and "counter" not in value else [value]
        if not isinstance(runs, list):
            skipped += 1
            continue
        for run in runs:
            record = RunRecord.from_json(job_id, run)
            if record is None:
                skipped += 1
            else:
                found[record.counter] = record
    if skipped:
        _log.warn("Ignoring {count} malformed run records in {path}", count=skipped, path=path)
    return found


def _encode(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("ascii") + b"\n"


def _write_to(path: str, flags: int, data: bytes) -> None:
    """
    Write C{data} to the regular file at C{path} in one C{write}, on the
    reactor thread: opened without following a link and without waiting
    (C{O_NONBLOCK}: a FIFO put there by a job fails here, it does not
    hang the daemon), checked to be a regular file; a short write (a full
    disk) raises, so the next write is whole.
    """
    flags |= os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    fd = open_making_dirs(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        if os.write(fd, data) != len(data):
            raise OSError(errno.ENOSPC, "short write", path)
    finally:
        os.close(fd)


def write_records(path: str, records: tuple[RunRecord, ...]) -> None:
    """
    Replace the record file whole (tmp file, then rename): a kill at any
    point leaves the old or the new one.  No fsync: see the module
    docstring.
    """
    data = _encode({"version": 1, "runs": [r.to_json() for r in records]})
    tmp = path + ".tmp"
    _write_to(tmp, os.O_CREAT | os.O_TRUNC, data)
    os.replace(tmp, path)


def append_records(path: str, records: tuple[RunRecord, ...]) -> None:
    """
    Add C{records} at the end of the record file, a line each, in one
    C{write}: a kill -9 leaves all of them or none (a process's death
    cannot split a write to the page cache).  No file is created or
    replaced, which is what makes it cheaper than L{write_records} (see
    bench/PROFILE.md).
    """
    _write_to(path, os.O_APPEND | os.O_CREAT, b"".join(_encode(r.to_json()) for r in records))


class RecordFile:
    """
    A job's record file as its store writes it, on the reactor thread: the
    records that changed since the last write appended (one C{write} to the
    page cache, like a log's own lines: no file created or replaced), and
    the whole file written instead once as many records were appended as
    the store holds twice over (plus 16; at most 20,016), and at the first
    write after a start-up.  Written to without following a link or
    waiting on a FIFO, and only to a regular file.  A failed write is logged and makes the next one whole.
    Without a path (a store without a state file) nothing is written.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        # The counters whose record changed since the last write, and how
        # many records were appended since the file was last written whole
        # (None: unknown, the next write is whole).
        self._dirty: set[int] = set()
        self._appended: int | None = None

    def changed(self, counter: int) -> None:
        self._dirty.add(counter)

    def reset(self) -> None:
        """The file is as the store found it at start-up: the next write is whole."""
        self._dirty.clear()
        self._appended = None

    def write(
        self, records: Mapping[int, RunRecord], snapshot: Callable[[], tuple[RunRecord, ...]]
    ) -> None:
        """Write what changed of C{records} (C{snapshot()}: all of them, in order)."""
        if self.path is None or not self._dirty and self._appended is not None:
            return
        # Bounded too, so a huge retention keeps the file well under
        # RECORDS_MAX_BYTES (about 130 bytes a line).
        limit = min(2 * len(records), 20_000) + 16
        try:
            if self._appended is None or self._appended + len(self._dirty) > limit:
                self._appended = None
                write_records(self.path, snapshot())
                self._appended = 0
            else:
                changed = tuple(records[c] for c in sorted(self._dirty) if c in records)
                append_records(self.path, changed)
                self._appended += len(changed)
        except OSError as e:
            self._appended = None
            _log.warn("Writing run records {path} failed: {error}", path=self.path, error=str(e))
        self._dirty.clear()


def record_from_disk(
    directory: str, name: LogName, saved: RunRecord | None
) -> RunRecord:
    """
    A log's record at start-up: status from the log's name, the rest from
    its saved record; without one, C{ended} is the file's modification
    time (never anything read from the log's text).
    """
    status = RunStatus.RUNNING if name.status is None else RunStatus(name.status)
    started = saved.started if saved is not None else None
    ended = saved.ended if saved is not None else None
    if ended is None and name.status is not None:
        try:
            ended = os.stat(os.path.join(directory, name.filename)).st_mtime
        except OSError:
            ended = None
    if saved is None:
        return RunRecord(name.job_id, name.counter, status, started, ended)
    return attrs.evolve(saved, status=status, started=started, ended=ended)


def load_records(directory: str, job_id: str, records_path: str | None) -> list[RunRecord]:
    """
    The record of every log of job C{job_id} in C{directory}, oldest
    first, without changing anything (C{karajo check} reads a live
    daemon's directory with it).  A running log stays C{running}.
    """
    names = scan_logs(directory, job_id)
    saved = read_records(records_path, job_id) if records_path is not None else {}
    return [record_from_disk(directory, n, saved.get(n.counter)) for n in names]


def scan_logs(directory: str, job_id: str) -> list[LogName]:
    """Every log of C{job_id} in C{directory}, oldest counter first."""
    names: list[LogName] = []
    if not os.path.isdir(directory):
        return names
    with os.scandir(directory) as entries:
        for entry in entries:
            name = parse_log_name(job_id, entry.name)
            if name is not None and entry.is_file(follow_symlinks=False):
                names.append(name)
    return sorted(names)
