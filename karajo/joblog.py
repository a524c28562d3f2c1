"""
The run-log store: one file per run of a job, and one record per run.

A run writes C{$ID.$COUNTER} while it runs and renames it to
C{$ID.$COUNTER.$STATUS} when it ends, so the file name alone says whether a
run finished and how (docs/behaviour.md, "Log files").  Every line carries a UTC timestamp and
the job it belongs to, so a log stays readable once it is mailed or copied
elsewhere.  A small counter file keeps numbers from being reused after
retention deleted every log.

The run record (L{karajo.runrecord}) keeps what the runner knows of each
run; the store holds them in memory and persists them.

Whatever a job prints, a log file and the memory behind it stay bounded: the
first half of C{max_bytes} goes to the file as it arrives, later lines wait in
a ring of the newest lines, and the middle that did not fit is replaced by one
note when the run finishes.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Sequence

import attrs
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from karajo.logfeed import LogFeed
from karajo.logfiles import (
    SPARE_NAME,
    finalise_leftover,
    is_regular_file,
    make_spare,
    read_floor,
    read_log,
    remove_spare,
    take_spare,
    write_floor,
)
from karajo.paths import open_making_dirs
from karajo.runlog import LINE_MAX, RunLog
from karajo.runrecord import (
    RECORDS_SUFFIX,
    STATUSES,
    LogName,
    RecordFile,
    RunRecord,
    last_run_of,
    load_records,
    parse_log_name,
    read_records,
    record_from_disk,
    scan_logs,
)
from karajo.status import RunStatus

# What the callers of the store use of the run record, importable from here.
__all__ = [
    "CRASH_LINE",
    "KINDS",
    "LINE_MAX",
    "RECORDS_SUFFIX",
    "STATUSES",
    "LogName",
    "LogStore",
    "RestoredState",
    "RunLog",
    "RunRecord",
    "SPARE_NAME",
    "last_run_of",
    "load_records",
    "parse_log_name",
]

KINDS = ("job", "job_http")


CRASH_LINE = "!!! karajo stopped during this run; marked failed at start-up"

#: Seconds after a run began that its record is written, if it has not
#: ended by then (L{LogStore._save_records_soon}).
RECORD_DELAY = 1.0


_log = Logger()



@attrs.frozen
class RestoredState:
    """What L{LogStore.restore} learnt from the log directory at start-up."""

    counter: int
    last_status: str | None
    last_run: datetime.datetime | None
    logs: tuple[LogName, ...]
    finalised: tuple[LogName, ...]
    records: tuple[RunRecord, ...] = ()


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
        The run records live next to it, in C{state_path + ".runs"};
        without a state path they are kept in memory only.
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
        self.clock: IReactorTime = clock
        self.max_bytes = max_bytes
        self.run_in_thread: Callable[..., Deferred] = run_in_thread
        self.state_path = state_path
        #: the run record file (see the module docstring), or None
        self.records_path = state_path + RECORDS_SUFFIX if state_path is not None else None
        self._floor: int | None = None
        # The counter the state file is known to hold (None: not read yet).
        # Touched only by prune, which never overlaps itself for one job.
        self._floor_on_disk: int | None = None
        # The spare file (SPARE_NAME): made empty by prune (off the reactor
        # thread, when asked: spare_wanted), taken by begin.  _spare_made is
        # prune's word, read on the reactor thread once the prune is over
        # (forget); _spare says the file is there for begin to take.
        self._spare = False
        self._spare_asked = False
        self._spare_made = False
        # The records of the kept logs by counter, oldest first; touched only
        # on the reactor thread (the thread steps get immutable snapshots).
        self._records: dict[int, RunRecord] = {}
        # _records as a tuple, made again only after it changed (snapshot()).
        self._tuple: tuple[RunRecord, ...] | None = None
        # The record file, told of each record that changed.
        self._record_file = RecordFile(self.records_path)
        # Log finishes of this job, one after the other (_in_order).
        self._io: Deferred[None] = Deferred()
        self._io.callback(None)
        # The delayed write of the records after a run began (_save_records_soon).
        self._save_call: IDelayedCall | None = None
        self._prefix_second: int | None = None
        self._prefix = b""
        # The feeds of the runs accepted and not final yet, by counter
        # (karajo.logfeed): what their followers subscribe to.
        self._feeds: dict[int, LogFeed] = {}
        #: the cluster node whose runs these are (L{karajo.cluster}), put
        #: in each new record; None on a single server
        self.node: str | None = None
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
        return scan_logs(self.directory, self.job_id)

    # --- followers -----------------------------------------------------------

    def reserve(self, counter: int) -> LogFeed:
        """
        The feed of run C{counter}, accepted now and begun later (queued, or
        waiting for a slot): its followers wait for the run to start.
        """
        feed = self._feeds.get(counter)
        if feed is None:
            feed = self._feeds[counter] = LogFeed(
                self.clock, lambda start, end: self._read_range(counter, start, end)
            )
        return feed

    def release(self, counter: int, status: str) -> None:
        """Run C{counter}'s log is final (or will never exist): its followers get the end."""
        feed = self._feeds.pop(counter, None)
        if feed is not None:
            feed.end(status)

    def follow(self, counter: int) -> Deferred[LogFeed | None]:
        """
        A feed to follow run C{counter} by: the live one of a run accepted
        and not final yet, else one replaying the final log (read off the
        reactor thread); C{None} when there is no such run.
        """
        feed = self._feeds.get(counter)
        if feed is not None:
            return maybeDeferred(lambda: feed)

        def done(found: tuple[LogName, bytes] | None) -> LogFeed | None:
            live = self._feeds.get(counter)
            if live is not None:  # accepted meanwhile (cannot be final yet)
                return live
            if found is None:
                return None
            name, content = found
            feed = LogFeed(
                self.clock, lambda start, end: maybeDeferred(lambda: content[start:end]),
                size=len(content),
            )
            feed.end(name.status or RunStatus.FAILED)
            return feed

        return self.read_in_thread(counter).addCallback(done)

    def _read_range(self, counter: int, start: int, end: int) -> Deferred[bytes]:
        """
        Bytes C{[start, end)} of run C{counter}'s log, off the reactor thread
        and after the writes queued before (a finish's tail), but not after
        one another: the followers joining a run read at once, in parallel,
        instead of each waiting for every read queued before its own.
        """
        barrier: Deferred[None] = Deferred()

        def release(result: object) -> object:
            barrier.callback(None)
            return result  # the queue goes on at once, not after this read

        self._io.addBoth(release)
        return barrier.addCallback(
            lambda _: maybeDeferred(self.run_in_thread, self._read_bytes, counter, start, end))

    def _read_bytes(self, counter: int, start: int, end: int) -> bytes:
        found = read_log(self.directory, self.job_id, counter, start, end)
        return found[1] if found is not None else b""

    # --- run records ---------------------------------------------------------

    def records(self) -> list[RunRecord]:
        """
        The record of every kept log of this job, oldest first, from memory
        (no disk access: fine on the reactor thread, for every request).
        """
        return list(self._records.values())

    def record(self, counter: int) -> RunRecord | None:
        """The record of run C{counter}, if its log is kept."""
        return self._records.get(counter)

    def forget(self, names: Sequence[LogName]) -> None:
        """Drop the records of logs L{prune} deleted (on the reactor thread)."""
        for name in names:
            self._records.pop(name.counter, None)
        self._tuple = None
        if self._spare_asked:
            self._spare_asked = False
            self._spare = self._spare_made

    def spare_wanted(self) -> bool:
        """
        Whether the next prune (asked now, on the reactor thread) should
        keep the oldest log it deletes as the spare file: when there is
        none and none is being made.
        """
        if self._spare or self._spare_asked:
            return False
        self._spare_asked = True
        self._spare_made = False
        return True

    def snapshot(self) -> tuple[RunRecord, ...]:
        """
        L{records} as a tuple, the same object until a record changes: the
        API compares it to know whether a job's cached JSON is still good
        (for every job of the environment, on every dashboard poll).
        """
        if self._tuple is None:
            self._tuple = tuple(self._records.values())
        return self._tuple

    def _ended(self, final: LogName, ended: float) -> None:
        assert final.status is not None
        record = self._records.get(final.counter)
        if record is None:
            record = RunRecord(self.job_id, final.counter, RunStatus.RUNNING)
        self._records[final.counter] = attrs.evolve(
            record, status=RunStatus(final.status), ended=ended
        )
        self._record_file.changed(final.counter)
        self._tuple = None

    def _in_order(self, f: Callable[..., object], *args: object) -> Deferred:
        """
        C{run_in_thread(f, *args)}, started only once the previous call
        through here is over: one job's finishes (and the prunes and spare
        they make) never overtake one another in the thread pool.
        """
        done: Deferred = Deferred()

        def relay(result: object) -> None:
            if isinstance(result, Failure):
                done.errback(result)
            else:
                done.callback(result)

        def start(_: object) -> Deferred:
            return maybeDeferred(self.run_in_thread, f, *args).addBoth(relay)

        self._io.addCallback(start)
        return done

    def _save_records_soon(self) -> None:
        """
        A run began: its record reaches the file L{RECORD_DELAY} seconds
        later, unless the run ends first (most runs of a busy daemon do):
        its finish writes the file anyway (L{_write_for_finish}).
        """
        if self.records_path is None or self._save_call is not None:
            return
        self._save_call = self.clock.callLater(RECORD_DELAY, self._save_records)

    def _write_for_finish(self) -> None:
        """A finish writes the records; a pending write of them is no longer needed."""
        if self._save_call is not None:
            self._save_call.cancel()
            self._save_call = None
        self._write_records()

    def _write_records(self) -> None:
        """The changed records to the file, here on the reactor thread (L{RecordFile})."""
        self._record_file.write(self._records, self.snapshot)

    def _save_records(self) -> None:
        """Write the record file now (a run began a while ago)."""
        self._save_call = None
        self._write_records()

    def restore(self) -> RestoredState:
        """
        L{load} and L{adopt} in one step, for callers that may block (a
        test, a tool); the server loads off the reactor thread instead.
        """
        return self.adopt(self.load())

    def adopt(self, state: RestoredState) -> RestoredState:
        """Take what L{load} found as this store's state (reactor thread)."""
        self._floor = state.counter
        self._records = {r.counter: r for r in state.records}
        self._tuple = None
        self._record_file.reset()
        return state

    def load(self) -> RestoredState:
        """
        Read the job's state at start-up, before any run: one directory
        scan and one read of the record file per job.  Blocking I/O that
        changes nothing in this object, so the server runs it off the
        reactor thread (see L{karajo.service.KarajoService}) and then
        L{adopt}s the result.

        A log still named C{$ID.$N} belongs to a run the daemon did not see
        end: it gets an explanation line and becomes C{$ID.$N.failed}.

        Every kept log gets its L{RunRecord} (see the module docstring);
        C{last_run} is L{last_run_of} them: when the newest run started, as
        it was before the restart.
        """
        remove_spare(self.directory)
        finalised = []
        for name in self.scan():
            if name.status is None:
                done = self._finalise_leftover(name)
                if done is not None:
                    finalised.append(done)
        logs = tuple(self.scan())
        floor = max([self._read_floor()] + [n.counter for n in logs])
        # A job that never ran (or whose logs are all gone) costs no open.
        saved = (
            read_records(self.records_path, self.job_id)
            if self.records_path is not None and logs else {}
        )
        records = tuple(record_from_disk(self.directory, n, saved.get(n.counter)) for n in logs)
        last_status = None
        finished = [r for r in records if r.status is not RunStatus.RUNNING]
        if finished:
            last_status = finished[-1].status
        last = last_run_of(finished)
        last_run = datetime.datetime.fromtimestamp(last, datetime.UTC) if last is not None else None
        return RestoredState(floor, last_status, last_run, logs, tuple(finalised), records)

    def begin(
        self,
        counter: int,
        *,
        trigger: str | None = None,
        attempt: int = 1,
        node: str | None = None,
        reserved: bool = False,
    ) -> RunLog:
        """
        Start the log of run C{counter} by creating C{$ID.$N} exclusively,
        mode 0600.  That file is what persists the counter: a crash at any
        point after this leaves it behind for L{restore}, and L{prune}
        writes the state file before it deletes any log.  Nothing here
        waits on the disk (no fsync), because it runs on the reactor thread
        for every run.  The run's L{RunRecord} (C{running}, started now)
        is kept at once; it reaches the record file off this thread, with
        the finish or L{RECORD_DELAY} seconds from now, whichever is first.

        @raise FileExistsError: a log of that counter exists already.
        @raise ValueError: C{counter} is not above a counter already used
            (unless C{reserved}: a counter L{reserve}d and never begun).
        """
        running = LogName(counter, self.job_id, None)
        # The floor covers every log this store has seen (restore scans the
        # directory), so no per-status existence check is needed here: this
        # runs on the reactor thread for every run.
        if self._floor is None:
            self._floor = max([self._read_floor()] + [n.counter for n in self.scan()])
        if counter <= self._floor and not (reserved and counter in self._feeds):
            raise ValueError(f"counter {counter} of job {self.job_id} was used already")
        # A run dropped before it started (C{reserved}: its counter was
        # handed out, never begun) may end after a later counter began;
        # the exclusive create below still keeps its file unique.
        self._floor = max(self._floor, counter)
        fd = None
        if self._spare:
            self._spare = False
            fd = take_spare(self.directory, self.path_of(running))
        if fd is None:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
            fd = open_making_dirs(self.path_of(running), flags)
        self._records[counter] = RunRecord(
            self.job_id, counter, RunStatus.RUNNING, self.clock.seconds(),
            None, trigger, attempt, node if node is not None else self.node,
        )
        if reserved:  # it may come after a later counter's record: keep them in order
            self._records = dict(sorted(self._records.items()))
        self._record_file.changed(counter)
        self._tuple = None
        self._save_records_soon()
        return RunLog(self, running, fd, self.reserve(counter))

    def end_unstarted(self, counter: int, trigger: str | None, why: str) -> Deferred[None] | None:
        """
        The log of a run that owned C{counter} and was dropped before it
        started: that one line C{why}, status C{canceled} (its followers
        hear so).  Fires once the log is final, never with an error (a
        failure is logged: the run it names never ran); C{None} when not
        even the log could be made.
        """
        try:
            runlog = self.begin(counter, trigger=trigger, reserved=True)
        except (OSError, ValueError) as e:
            _log.warn("{job}: the log of dropped run #{counter} could not be made: {error}",
                     job=self.job_id, counter=counter, error=str(e))
            self.release(counter, RunStatus.CANCELED)
            return None
        runlog.line(why)
        d = runlog.finish(RunStatus.CANCELED)
        d.addErrback(lambda f: _log.failure(
            "{job}: finishing the log of dropped run #{counter} failed", f,
            job=self.job_id, counter=counter))
        return d.addCallback(lambda _: None)

    def kept(self) -> list[LogName]:
        """
        The logs this store keeps, as its records name them (oldest first):
        what a finish prunes, without listing the directory per run.
        """
        return [
            LogName(c, self.job_id, None if r.status is RunStatus.RUNNING else r.status)
            for c, r in self._records.items()
        ]

    def prune(
        self, retention: int, names: Sequence[LogName] | None = None, spare: bool = False
    ) -> list[LogName]:
        """
        Keep the newest C{retention} finished logs (at least one) and delete
        the older finished ones.  A running log is never counted or touched.

        Blocking: the runner has it run in the finish's thread step
        (C{RunLog.finish(status, retention)}), which then L{forget}s what it
        returns on the reactor thread.

        @param names: the logs there are, oldest first (L{kept}); without
            them the directory is listed.
        @param spare: keep the oldest deleted log's file, emptied, as the
            spare file for a later L{begin} (L{spare_wanted} said so).
        @return: the logs deleted.
        """
        if names is None:
            names = self.scan()
        finished = [n for n in names if n.status is not None]
        doomed = finished[: -max(retention, 1)]
        if doomed:
            # The counters of deleted logs must never come back, even if an
            # operator later deletes the rest: record the highest one first.
            # The file is written ahead (the highest counter of any log, not
            # just of the doomed ones), so with a retention of N it needs
            # rewriting (one fdatasync) about once every N + 1 runs, not per run.
            if self._floor_on_disk is None:
                self._floor_on_disk = self._read_floor()
            if max(n.counter for n in doomed) > self._floor_on_disk:
                self._write_floor(max(n.counter for n in names))
        for name in doomed:
            path = self.path_of(name)
            if not is_regular_file(path):
                continue  # not karajo's log any more (a link put there): left alone
            if spare:
                spare = False
                self._spare_made = make_spare(self.directory, path)
                if self._spare_made:
                    continue
            try:
                os.unlink(path)
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
        return read_log(self.directory, self.job_id, counter)

    def read_in_thread(self, counter: int) -> Deferred[tuple[LogName, bytes] | None]:
        """
        L{read} off the reactor thread: the one way the API, the dashboard
        and the mailer read a log (a file may be C{max_bytes}, 10 MiB by
        default).  Fires with C{None} at once for a counter that cannot
        exist, without a thread hop.
        """
        if type(counter) is not int or counter < 1:
            return maybeDeferred(lambda: None)
        return maybeDeferred(self.run_in_thread, self.read, counter)

    def _finalise_leftover(self, name: LogName) -> LogName | None:
        """Mark a crashed run's log failed; see L{restore}."""
        final = attrs.evolve(name, status=RunStatus.FAILED)
        line = self._line_prefix() + CRASH_LINE.encode("ascii") + b"\n"
        if not finalise_leftover(self.path_of(name), self.path_of(final), line):
            return None
        return final

    def _read_floor(self) -> int:
        """The counter in the state file; 0 when there is none or it is unreadable."""
        return read_floor(self.state_path) if self.state_path is not None else 0

    def _write_floor(self, counter: int) -> None:
        """Write the state file durably, before logs are deleted (L{karajo.logfiles.write_floor})."""
        if self.state_path is None:
            return
        write_floor(self.state_path, counter)
        self._floor_on_disk = counter
