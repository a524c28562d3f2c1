"""
Tests for L{karajo.joblog}: log names, the streaming writer, finishing,
retention and the start-up restore.
"""

from __future__ import annotations

import calendar
import datetime
import os
import stat
import tracemalloc
from typing import Any

import attrs
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer, task
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from karajo.joblog import (
    LINE_MAX,
    RECORD_DELAY,
    SPARE_NAME,
    STATUSES,
    LogName,
    LogStore,
    RestoredState,
    RunLog,
    RunRecord,
    last_run_of,
    load_records,
    parse_log_name,
)
from karajo.runlog import _close_and_rename
from karajo.runrecord import read_records

# 2026-01-02 03:04:05 UTC
T0 = calendar.timegm((2026, 1, 2, 3, 4, 5))
P0 = b"2026-01-02 03:04:05 UTC job: my_id: "


def sync_thread(f, *args):
    """Run the 'thread' function at once, as the brief's tests do."""
    return defer.maybeDeferred(f, *args)


class FakeThreads:
    """
    A C{run_in_thread} that only records the call, so a test can look at the
    world before and after the thread function runs.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[object, tuple, defer.Deferred]] = []

    def __call__(self, f, *args):
        d: defer.Deferred = defer.Deferred()
        self.calls.append((f, args, d))
        return d

    def run(self) -> None:
        """Run every recorded call now and fire its Deferred."""
        calls, self.calls = self.calls, []
        for f, args, d in calls:
            d.callback(f(*args))


class StoreMixin:
    """Build stores in a fresh directory driven by a L{task.Clock}."""

    def setUp(self) -> None:
        self.base = self.mktemp()
        self.directory = os.path.join(self.base, "var", "log", "karajo", "job", "my_id")
        self.state_path = os.path.join(self.base, "var", "run", "karajo", "job", "my_id")
        self.clock = task.Clock()
        self.clock.advance(T0)

    def store(self, **kw) -> LogStore:
        kw.setdefault("clock", self.clock)
        kw.setdefault("run_in_thread", sync_thread)
        kw.setdefault("state_path", self.state_path)
        return LogStore(self.directory, kw.pop("job_id", "my_id"), **kw)

    def finish(self, log: RunLog, status: str = "success") -> LogName:
        return self.successResultOf(log.finish(status))

    def run_job(
        self, store: LogStore, counter: int, status: str = "success", *lines: str
    ) -> LogName:
        log = store.begin(counter)
        for text in lines:
            log.line(text)
        return self.finish(log, status)

    def content(self, store: LogStore, name: LogName) -> bytes:
        with open(store.path_of(name), "rb") as f:
            return f.read()

    def touch(self, filename: str, data: bytes = b"") -> str:
        path = os.path.join(self.directory, filename)
        os.makedirs(self.directory, exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return path


class ParseLogNameTests(SynchronousTestCase):
    """L{parse_log_name} accepts exactly the names L{LogName.filename} makes."""

    def test_valid(self) -> None:
        """Running and finished names of every status parse to their parts."""
        table = [
            ("j", "j.1", LogName(1, "j", None)),
            ("j", "j.27.success", LogName(27, "j", "success")),
            ("j", "j.3.failed", LogName(3, "j", "failed")),
            ("j", "j.10.canceled", LogName(10, "j", "canceled")),
            ("interval-1m", "interval-1m.9", LogName(9, "interval-1m", None)),
            ("_1st_job", "_1st_job.123456789012345678901234567890.success",
             LogName(123456789012345678901234567890, "_1st_job", "success")),
            ("a.b", "a.b.2.failed", LogName(2, "a.b", "failed")),
        ]
        for job_id, filename, expected in table:
            self.assertEqual(parse_log_name(job_id, filename), expected, filename)
            self.assertEqual(expected.filename, filename)

    def test_invalid(self) -> None:
        """Anything not exactly C{ID.N} or C{ID.N.STATUS} is C{None}."""
        table = [
            "j",
            "j.",
            "j..success",
            "j.0",
            "j.0.success",
            "j.01",
            "j.007.failed",
            "j.-1",
            "j.+1",
            "j. 1",
            "j.1 ",
            "j.1.",
            "j.1.running",
            "j.1.Success",
            "j.1.success.",
            "j.1.success.gz",
            "j.1.success~",
            "j.1x",
            "j.0x1",
            "j.1_000",
            "j.\u0661",  # ARABIC-INDIC DIGIT ONE: int() would accept it
            "j.\u00b2",  # SUPERSCRIPT TWO: str.isdigit() would accept it
            "J.1",
            "jj.1",
            "k.1.success",
            ".j.1",
            "j.1\n",
            "",
            "j." + "9" * 5000,  # beyond int()'s digit limit
        ]
        for filename in table:
            self.assertIsNone(parse_log_name("j", filename), repr(filename))
        self.assertIsNone(parse_log_name("", ".1"))
        self.assertIsNone(parse_log_name("j", None))  # type: ignore[arg-type]

    @given(st.text(), st.text())
    def test_never_raises(self, job_id: str, filename: str) -> None:
        """Arbitrary text never makes it raise; a result round-trips."""
        name = parse_log_name(job_id, filename)
        if name is not None:
            self.assertEqual(name.filename, filename)

    @given(
        st.text(min_size=1),
        st.text(alphabet="0123456789+-. \n", max_size=12),
        st.sampled_from(("",) + tuple("." + s for s in STATUSES) + (".x", ".")),
    )
    def test_near_misses(self, job_id: str, number: str, suffix: str) -> None:
        """Names built from digits and signs parse only in canonical form."""
        filename = f"{job_id}.{number}{suffix}"
        name = parse_log_name(job_id, filename)
        if name is not None:
            self.assertEqual(name.filename, filename)
            self.assertEqual(str(name.counter), number)

    @given(
        st.integers(min_value=1, max_value=10**30),
        st.from_regex(r"\A[a-z_][a-z0-9_-]*\Z"),
        st.sampled_from((None,) + STATUSES),
    )
    def test_round_trip(self, counter: int, job_id: str, status: str | None) -> None:
        """Every name the store can make parses back to itself."""
        name = LogName(counter, job_id, status)
        self.assertEqual(parse_log_name(job_id, name.filename), name)

    def test_order(self) -> None:
        """Names sort by counter; a running name sorts before a finished twin."""
        names = [
            LogName(10, "j", "success"),
            LogName(2, "j", "failed"),
            LogName(2, "j", None),
            LogName(9, "j", None),
        ]
        self.assertEqual(
            sorted(names),
            [names[2], names[1], names[3], names[0]],
        )

    def test_invalid_values(self) -> None:
        """A L{LogName} cannot hold a counter or status no file could carry."""
        self.assertRaises(ValueError, LogName, 0, "j", None)
        self.assertRaises(ValueError, LogName, 1, "j", "running")


class RunLogTests(StoreMixin, SynchronousTestCase):
    """L{RunLog} writes prefixed lines and ends with a rename."""

    def test_prefix_format(self) -> None:
        """A line starts with the UTC time, the kind and the job ID."""
        store = self.store()
        log = store.begin(1)
        log.line("hello")
        name = self.finish(log)
        self.assertEqual(
            self.content(store, name), b"2026-01-02 03:04:05 UTC job: my_id: hello\n"
        )

    def test_prefix_job_http(self) -> None:
        """A JobHttp log says C{job_http:}."""
        store = self.store(kind="job_http")
        log = store.begin(1)
        log.write(b"x\n")
        name = self.finish(log)
        self.assertEqual(
            self.content(store, name), b"2026-01-02 03:04:05 UTC job_http: my_id: x\n"
        )

    def test_bad_kind(self) -> None:
        """An unknown kind is a programming error, refused at once."""
        self.assertRaises(ValueError, self.store, kind="jobhttp")

    def test_bad_job_id(self) -> None:
        """A job ID that cannot be a file name prefix is refused."""
        for job_id in ("", "a/b", "..", "a\0"):
            self.assertRaises(ValueError, self.store, job_id=job_id)

    def test_timestamp_is_time_of_writing(self) -> None:
        """Each line carries the clock's time when it was written."""
        store = self.store()
        log = store.begin(1)
        log.line("=== BEGIN")
        self.clock.advance(61)
        log.write(b"out\n")
        name = self.finish(log)
        self.assertEqual(
            self.content(store, name),
            P0 + b"=== BEGIN\n" + b"2026-01-02 03:05:06 UTC job: my_id: out\n",
        )

    def test_partial_line_across_chunks(self) -> None:
        """
        A line split over several chunks is written once, whole, when its
        newline arrives, stamped with that time.
        """
        store = self.store()
        log = store.begin(1)
        log.write(b"he")
        log.write(b"llo\nwor")
        self.assertEqual(store.read(1)[1], P0 + b"hello\n")
        self.clock.advance(1)
        log.write(b"ld\n\nend")
        name = self.finish(log)
        p1 = b"2026-01-02 03:04:06 UTC job: my_id: "
        self.assertEqual(
            self.content(store, name),
            P0 + b"hello\n" + p1 + b"world\n" + p1 + b"\n" + p1 + b"end\n",
        )

    def test_long_partial_line_flushed(self) -> None:
        """
        A line without newline is cut at L{LINE_MAX} bytes, so memory stays
        bounded; a newline right after the cut does not add an empty line.
        """
        store = self.store()
        log = store.begin(1)
        for _ in range(3):
            log.write(b"a" * (LINE_MAX // 2))
        log.write(b"\n")  # ends the second piece, which is half full
        log.write(b"b" * LINE_MAX)
        log.write(b"\nc" * 2 + b"d" * (LINE_MAX * 2) + b"\n")
        self.assertLessEqual(len(log._partial), LINE_MAX)
        name = self.finish(log)
        body = [line[len(P0):] for line in self.content(store, name).split(b"\n")[:-1]]
        self.assertEqual(
            body,
            [
                b"a" * LINE_MAX,
                b"a" * (LINE_MAX // 2),
                b"b" * LINE_MAX,
                b"c",
                (b"c" + b"d" * (LINE_MAX - 1)),
                b"d" * LINE_MAX,
                b"d",
            ],
        )

    def test_bytes_not_utf8_preserved(self) -> None:
        """Invalid UTF-8 and control bytes in output reach the file unchanged."""
        store = self.store()
        log = store.begin(1)
        raw = b"\xff\xfe caf\xe9 \xc3\x28 \r\x00\x1b[31m"
        log.write(raw[:3])
        log.write(raw[3:] + b"\n")
        name = self.finish(log)
        self.assertEqual(self.content(store, name), P0 + raw + b"\n")

    def test_line_flushes_partial_and_splits(self) -> None:
        """
        A marker line comes after output written before it, even output
        without a final newline; a multi-line text gets a prefix per line.
        """
        store = self.store()
        log = store.begin(1)
        log.write(b"no newline")
        log.line("!!! exit status 1\nsecond")
        log.line("caf\u00e9")
        name = self.finish(log, "failed")
        self.assertEqual(
            self.content(store, name),
            P0 + b"no newline\n" + P0 + b"!!! exit status 1\n" + P0 + b"second\n"
            + P0 + "caf\u00e9".encode() + b"\n",
        )

    def test_finish_renames(self) -> None:
        """
        finish() writes the buffered partial line, renames the file to its
        final status and the running name disappears.
        """
        store = self.store()
        log = store.begin(4)
        running = log.path
        self.assertEqual(os.path.basename(running), "my_id.4")
        self.assertTrue(os.path.exists(running))
        log.line("=== BEGIN")
        log.write(b"tail without newline")
        name = self.finish(log, "canceled")
        self.assertEqual(name, LogName(4, "my_id", "canceled"))
        self.assertEqual(log.name, name)
        self.assertEqual(log.path, os.path.join(self.directory, "my_id.4.canceled"))
        self.assertFalse(os.path.exists(running))
        self.assertEqual(sorted(os.listdir(self.directory)), ["my_id.4.canceled"])
        content = self.content(store, name)
        self.assertEqual(content, P0 + b"=== BEGIN\n" + P0 + b"tail without newline\n")
        self.assertEqual(log.bytes_written, len(content))

    def test_second_finish_raises(self) -> None:
        """Finishing twice, or writing after finishing, is a RuntimeError."""
        store = self.store()
        log = store.begin(1)
        self.finish(log)
        self.assertRaises(RuntimeError, log.finish, "failed")
        self.assertRaises(RuntimeError, log.write, b"x\n")
        self.assertRaises(RuntimeError, log.line, "x")
        self.assertEqual(store.scan(), [LogName(1, "my_id", "success")])

    def test_finish_bad_status(self) -> None:
        """An unknown status is refused and the log stays open."""
        store = self.store()
        log = store.begin(1)
        self.assertRaises(ValueError, log.finish, "done")
        self.assertEqual(self.finish(log, "failed").status, "failed")

    def test_finish_runs_in_thread(self) -> None:
        """
        The fsync and rename happen inside the function handed to
        C{run_in_thread}: before it runs, the file keeps its running name and
        the Deferred has not fired.
        """
        threads = FakeThreads()
        store = self.store(run_in_thread=threads)
        log = store.begin(1)
        self.assertEqual(len(threads.calls), 0)  # the run record waits (RECORD_DELAY)
        log.line("=== DONE")
        d = log.finish("success")
        self.assertEqual(len(threads.calls), 1)
        self.assertNoResult(d)
        self.assertEqual(os.listdir(self.directory), ["my_id.1"])
        threads.run()
        self.assertEqual(self.successResultOf(d), LogName(1, "my_id", "success"))
        self.assertEqual(os.listdir(self.directory), ["my_id.1.success"])
        self.assertEqual(self.content(store, log.name), P0 + b"=== DONE\n")

    def test_modes(self) -> None:
        """Log files are 0600 and created directories 0700: logs may hold secrets."""
        store = self.store()
        log = store.begin(1)
        self.assertEqual(stat.S_IMODE(os.stat(log.path).st_mode), 0o600)
        for path in (self.directory, os.path.dirname(self.directory), self.base):
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o700, path)
        for counter in (2, 3):
            self.successResultOf(store.begin(counter).finish("success"))
        self.successResultOf(log.finish("success"))
        store.prune(1)
        self.assertEqual(stat.S_IMODE(os.stat(self.state_path).st_mode), 0o600)

    def test_begin_existing(self) -> None:
        """begin() never reuses a counter that already has a log, running or finished."""
        self.touch("my_id.2.failed")
        store = self.store(state_path=None)
        self.assertRaises(ValueError, store.begin, 1)
        self.assertRaises(ValueError, store.begin, 2)
        store.begin(3)
        self.assertRaises(ValueError, store.begin, 3)

    def test_begin_persists_counter_first(self) -> None:
        """
        The running log begin() creates is what persists the counter: no
        lower or equal counter can begin again, in this store or a fresh one.
        """
        store = self.store()
        store.begin(7)
        self.assertTrue(os.path.exists(os.path.join(self.directory, "my_id.7")))
        self.assertRaises(ValueError, store.begin, 7)
        self.assertRaises(ValueError, store.begin, 3)
        # A fresh store knows the floor even before restore() ran.
        self.assertRaises(ValueError, self.store().begin, 5)
        self.assertEqual(self.store().restore().counter, 7)
        self.assertEqual(self.store().begin(8).name.counter, 8)


class SizeCapTests(StoreMixin, SynchronousTestCase):
    """A log file and the memory behind it stay bounded whatever a job prints."""

    def test_size_cap(self) -> None:
        """
        50 MiB of output with a 64 KiB cap gives a file of about 64 KiB with
        the first lines, a cut note, then the last lines and the markers;
        memory stays near max_bytes / 2 all along.  Memory is traced over the
        first 8 MiB only (tracing all 50 MiB takes seconds): the ring is full
        after 64 KiB, so any growth with output size shows long before that.
        """
        max_bytes = 64 * 1024
        store = self.store(max_bytes=max_bytes)
        log = store.begin(1)
        log.line("=== BEGIN")
        log.write(b"first line\n")
        # 100-byte lines; a chunk of 655 lines and one byte ends inside a line,
        # after the "l" that then begins the next chunk's first line.
        pattern = b"".join(b"line %05d %s\n" % (i, b"." * 88) for i in range(1000))
        chunk = pattern[:65501]
        self.assertEqual(chunk.count(b"\n") * 100 + 1, len(chunk))
        total = chunks = 0
        tracemalloc.start()
        try:
            while total < 8 * 1024 * 1024:
                log.write(chunk)
                total += len(chunk)
                chunks += 1
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # The ring, one partial line, and slack for the interpreter's own bits.
        self.assertLess(peak, max_bytes // 2 + LINE_MAX + 64 * 1024)
        while total < 50 * 1024 * 1024:
            log.write(chunk)
            total += len(chunk)
            chunks += 1
            self.assertLessEqual(log._tail_bytes, max_bytes // 2)
            self.assertLessEqual(len(log._partial), LINE_MAX)
        log.write(b"\nlast line\n")
        log.line("=== DONE")
        name = self.finish(log)
        content = self.content(store, name)
        self.assertLessEqual(len(content), max_bytes + 200)
        self.assertEqual(log.bytes_written, len(content))
        lines = content.split(b"\n")
        self.assertEqual(
            lines[:3], [P0 + b"=== BEGIN", P0 + b"first line", P0 + pattern[:99]]
        )
        self.assertEqual(lines[-4:], [P0 + b"l", P0 + b"last line", P0 + b"=== DONE", b""])
        notes = [line for line in lines if b"cut from the middle of this log" in line]
        self.assertEqual(len(notes), 1)
        self.assertRegex(
            notes[0].decode(),
            r"^2026-01-02 03:04:05 UTC job: my_id: "
            r"\.\.\. \d+ bytes \(\d+ lines\) cut from the middle of this log \.\.\.$",
        )
        # Nothing but the cut is lost: head + cut + tail accounts for every line
        # (BEGIN, first, the chunks' lines, "l", last, DONE).
        cut_lines = int(notes[0].split(b"(")[1].split(b" ")[0])
        in_file = len(lines) - 2  # less the note and the "" after the last newline
        self.assertEqual(in_file + cut_lines, 2 + chunks * chunk.count(b"\n") + 3)

    def test_no_note_when_nothing_cut(self) -> None:
        """Output between half and all of max_bytes is kept whole, without a note."""
        store = self.store(max_bytes=1000)
        log = store.begin(1)
        for i in range(10):
            log.write(b"%d\n" % i)
        name = self.finish(log)
        content = self.content(store, name)
        self.assertEqual(content, b"".join(P0 + b"%d\n" % i for i in range(10)))
        self.assertNotIn(b"cut from the middle", content)


class StoreTests(StoreMixin, SynchronousTestCase):
    """L{LogStore}: scanning, retention, reading and the start-up restore."""

    def test_scan(self) -> None:
        """
        scan() lists parseable regular files by counter; other files,
        directories and symlinks with log-like names are ignored.
        """
        store = self.store()
        self.run_job(store, 2)
        self.run_job(store, 10, "failed")
        store.begin(11)
        self.touch("notes.txt")
        self.touch("my_id.3.success.bak")
        os.mkdir(os.path.join(self.directory, "my_id.4.success"))
        os.symlink("my_id.2.success", os.path.join(self.directory, "my_id.5.success"))
        self.assertEqual(
            [n.filename for n in store.scan()],
            ["my_id.2.success", "my_id.10.failed", "my_id.11"],
        )

    def test_prune(self) -> None:
        """
        prune() keeps the newest N finished logs; the running log and files
        whose names do not parse are left alone.
        """
        store = self.store()
        for counter in range(1, 7):
            self.run_job(store, counter, STATUSES[counter % 3])
        running = store.begin(7)
        others = ["README", "my_id.1.success.gz", "other.1.success", "my_id.01.failed"]
        for filename in others:
            self.touch(filename)
        deleted = store.prune(2)
        self.assertEqual([n.counter for n in deleted], [1, 2, 3, 4])
        self.assertEqual(
            sorted(os.listdir(self.directory)),
            sorted(others + ["my_id.5.canceled", "my_id.6.success", "my_id.7"]),
        )
        running.line("still writing")
        self.finish(running)
        self.assertEqual([n.counter for n in store.prune(2)], [5])

    def finish_pruning(self, store: LogStore, log: RunLog, retention: int) -> LogName:
        return self.successResultOf(log.finish("success", retention=retention))

    def test_pruned_file_becomes_the_next_log(self) -> None:
        """
        A finish that prunes keeps the oldest pruned log's file, emptied, as
        the spare; the next run's log is that file (same inode: none made,
        none freed), the others are deleted, and the spare is made again.
        """
        store = self.store()
        for counter in (1, 2):
            self.finish_pruning(store, store.begin(counter), 2)
        self.assertFalse(os.path.exists(os.path.join(self.directory, SPARE_NAME)))
        self.finish_pruning(store, store.begin(3), 2)
        spare = os.path.join(self.directory, SPARE_NAME)
        inode = os.stat(spare).st_ino
        self.assertEqual(os.path.getsize(spare), 0)
        log = store.begin(4)
        self.assertFalse(os.path.exists(spare))
        self.assertEqual(os.stat(log.path).st_ino, inode)
        self.assertEqual(stat.S_IMODE(os.stat(log.path).st_mode), 0o600)
        log.line("fresh")
        self.finish_pruning(store, log, 2)
        self.assertEqual(self.content(store, LogName(4, "my_id", "success")).count(b"\n"), 1)
        self.assertIn(b"fresh", self.content(store, LogName(4, "my_id", "success")))
        self.assertEqual(sorted(os.listdir(self.directory)),
                         [SPARE_NAME, "my_id.3.success", "my_id.4.success"])
        self.assertEqual([r.counter for r in store.records()], [3, 4])

    def test_links_are_never_emptied_by_the_spare(self) -> None:
        """
        A pruned log replaced by a symlink, or given a second name, is never
        emptied through it: the symlink is left alone, the second name
        keeps its content; only a plain log becomes the spare.
        """
        victim = os.path.join(self.mktemp())
        with open(victim, "wb") as f:
            f.write(b"precious")
        store = self.store()
        for counter in (1, 2, 3):
            self.run_job(store, counter, "success", "output")
        os.unlink(store.path_of(LogName(1, "my_id", "success")))
        os.symlink(victim, store.path_of(LogName(1, "my_id", "success")))
        kept = os.path.join(self.directory, "kept-by-hand")
        os.link(store.path_of(LogName(2, "my_id", "success")), kept)
        self.finish_pruning(store, store.begin(4), 1)
        with open(victim, "rb") as f:
            self.assertEqual(f.read(), b"precious")
        self.assertTrue(os.path.islink(store.path_of(LogName(1, "my_id", "success"))))
        self.assertGreater(os.path.getsize(kept), 0)
        self.assertFalse(os.path.exists(store.path_of(LogName(2, "my_id", "success"))))
        self.assertFalse(os.path.exists(store.path_of(LogName(3, "my_id", "success"))))
        spare = os.path.join(self.directory, SPARE_NAME)
        self.assertFalse(os.path.exists(spare))  # one try a prune: the linked log
        self.finish_pruning(store, store.begin(5), 1)
        self.assertEqual(os.path.getsize(spare), 0)  # log 4 became the spare

    def test_a_reader_never_gets_another_runs_bytes(self) -> None:
        """
        A read of a log whose file is made the spare (and then the next
        run's log) while it reads counts as no log, not as another run's
        output or a log cut short.
        """
        store = self.store()
        for counter in (1, 2):
            self.finish_pruning(store, store.begin(counter), 5)
        opened = []
        real_fdopen = os.fdopen

        def recycle_meanwhile(fd: int, mode: str = "r", *rest: Any) -> object:
            # The read's open is done; before its read, run 3 prunes log 1
            # into the spare and run 4 takes it and writes.
            if not opened:
                opened.append(fd)
                self.finish_pruning(store, store.begin(3), 1)
                log = store.begin(4)
                log.line("SECRET of run 4")
            return real_fdopen(fd, mode, *rest)

        self.patch(os, "fdopen", recycle_meanwhile)
        self.assertIsNone(store.read(1))
        self.patch(os, "fdopen", real_fdopen)
        self.assertIn(b"SECRET of run 4", store.read(4)[1])

    def test_only_an_empty_spare_with_one_name_is_taken(self) -> None:
        """
        A spare that is not what prune left (a second name of another
        file, or not empty) is not written into: its name goes, the file it
        names is untouched, and the run gets a new file.
        """
        victim = os.path.abspath(self.mktemp())
        with open(victim, "wb") as f:
            f.write(b"precious\n")
        store = self.store()
        for counter in (1, 2):
            self.finish_pruning(store, store.begin(counter), 1)
        spare = os.path.join(self.directory, SPARE_NAME)
        os.unlink(spare)
        os.link(victim, spare)
        log = store.begin(3)
        log.line("output of run 3")
        self.finish_pruning(store, log, 1)
        with open(victim, "rb") as f:
            self.assertEqual(f.read(), b"precious\n")
        self.assertNotEqual(os.stat(victim).st_ino,
                            os.stat(store.path_of(LogName(3, "my_id", "success"))).st_ino)

    def test_a_fifo_as_the_record_file_does_not_hang(self) -> None:
        """
        A FIFO put at the record file's path (a job runs as karajo's user)
        fails the record write at once, logged; the runs go on.
        """
        store = self.store()
        self.run_job(store, 1)
        os.unlink(store.records_path)
        os.mkfifo(store.records_path)
        with capturedLogs() as events:
            self.assertEqual(self.run_job(store, 2), LogName(2, "my_id", "success"))
        self.assertEqual([e["path"] for e in events if "path" in e], [store.records_path])

    def test_spare_never_replaces_a_log(self) -> None:
        """A log of the new counter already there: begin raises, as with a new file."""
        store = self.store()
        for counter in (1, 2):
            self.finish_pruning(store, store.begin(counter), 1)
        self.touch("my_id.3")
        store._floor = 2  # a file the store does not know of
        self.assertRaises(FileExistsError, store.begin, 3)
        self.assertEqual(os.path.getsize(os.path.join(self.directory, "my_id.3")), 0)

    def test_spare_left_by_a_kill_is_removed(self) -> None:
        """
        A spare left by a kill (full, or a second name of a run's log) is
        never taken by the next daemon: restore removes it; the logs stay.
        """
        store = self.store()
        self.run_job(store, 1, "success", "old output")
        with open(os.path.join(self.directory, SPARE_NAME), "wb") as f:
            f.write(b"old output of a pruned log\n")
        fresh = self.store()
        state = fresh.restore()
        self.assertEqual([n.filename for n in state.logs], ["my_id.1.success"])
        self.assertFalse(os.path.exists(os.path.join(self.directory, SPARE_NAME)))
        new = fresh.begin(2)
        new.line("new")
        self.assertNotIn(b"old output of a pruned log", self.content(fresh, new.name))

    def test_spare_that_is_a_second_name_of_a_log(self) -> None:
        """
        A spare that is another name of a run's log (put there by hand, or
        by a karajo that linked): restore removes the spare's name only; the
        run's log is finalised as any run cut by a kill.
        """
        store = self.store()
        for counter in (1, 2):
            self.finish_pruning(store, store.begin(counter), 1)
        log = store.begin(3)
        log.line("=== BEGIN")
        os.link(log.path, os.path.join(self.directory, SPARE_NAME))  # as if not yet unlinked
        state = self.store().restore()
        self.assertEqual([n.filename for n in state.logs], ["my_id.2.success", "my_id.3.failed"])
        self.assertEqual(sorted(os.listdir(self.directory)), ["my_id.2.success", "my_id.3.failed"])
        self.assertIn(b"=== BEGIN", self.content(store, LogName(3, "my_id", "failed")))

    def test_prune_keeps_at_least_one(self) -> None:
        """A retention below one keeps the newest finished log."""
        store = self.store()
        for counter in (1, 2, 3):
            self.run_job(store, counter)
        self.assertEqual(len(store.prune(0)), 2)
        self.assertEqual(len(store.prune(-5)), 0)
        self.assertEqual([n.counter for n in store.scan()], [3])

    def test_counter_continues(self) -> None:
        """A new store on the same directory continues the counter."""
        store = self.store()
        for counter in (1, 2, 3):
            self.run_job(store, counter)
        again = self.store()
        state = again.restore()
        self.assertEqual(state.counter, 3)
        self.assertEqual(self.run_job(again, state.counter + 1).counter, 4)

    def test_counter_floor_after_everything_removed(self) -> None:
        """
        With every log gone (retention, or an operator's rm), the state file
        still stops a restart from reusing a counter.
        """
        store = self.store()
        for counter in (1, 2, 3):
            self.run_job(store, counter)
        store.prune(1)
        os.unlink(store.path_of(LogName(3, "my_id", "success")))
        state = self.store().restore()
        self.assertEqual(state, RestoredState(3, None, None, (), ()))

    def test_counter_floor_written_ahead(self) -> None:
        """
        prune() writes the state file only when a log it deletes has a
        counter above the one the file holds, and then the highest counter
        of any log: with a retention of 2, once every 3 runs.
        """
        store = self.store()
        written = []
        real = store._write_floor
        store._write_floor = lambda counter: (written.append(counter), real(counter))[1]
        for counter in range(1, 11):
            self.run_job(store, counter)
            store.prune(2)
        self.assertEqual(written, [3, 6, 9])
        self.assertEqual(sorted(n.counter for n in store.scan()), [9, 10])
        for name in store.scan():  # an operator removes every log
            os.unlink(store.path_of(name))
        self.assertEqual(self.store().restore().counter, 9)

    def test_counter_from_logs_above_floor(self) -> None:
        """The counter is the highest of the state file and the log names."""
        store = self.store()
        self.run_job(store, 2)
        self.touch("my_id.9.failed")
        self.assertEqual(self.store().restore().counter, 9)

    def test_unreadable_state_file(self) -> None:
        """A garbled state file is ignored: the logs still give the counter."""
        store = self.store()
        self.run_job(store, 5)
        os.makedirs(os.path.dirname(self.state_path), exist_ok=True)
        with open(self.state_path, "wb") as f:
            f.write(b"garbage")
        self.assertEqual(self.store().restore().counter, 5)

    def test_restore_empty(self) -> None:
        """A job that never ran restores to counter 0 and no last run."""
        self.assertEqual(self.store().restore(), RestoredState(0, None, None, (), ()))

    def test_restore_finalises_crash_leftover(self) -> None:
        """
        A running log left by a crash gets an explanation line (after ending
        a cut-short last line) and is renamed failed; without a run record
        (a log of an older karajo) the last run time is its modification
        time, never a time read from its text.
        """
        path = self.touch("my_id.4", P0 + b"=== BEGIN\n" + P0 + b"half a li")
        os.utime(path, (T0 - 100, T0 - 100))
        done = self.touch("my_id.3.success", P0 + b"=== DONE\n")
        os.utime(done, (T0 - 200, T0 - 200))
        self.clock.advance(3600)
        store = self.store()
        state = store.restore()
        failed = LogName(4, "my_id", "failed")
        self.assertEqual(state.finalised, (failed,))
        self.assertEqual(state.logs, (LogName(3, "my_id", "success"), failed))
        self.assertEqual(state.counter, 4)
        self.assertEqual(state.last_status, "failed")
        self.assertEqual(
            state.last_run, datetime.datetime.fromtimestamp(T0 - 100, datetime.UTC)
        )
        self.assertEqual(
            state.records,
            (RunRecord("my_id", 3, "success", None, T0 - 200),
             RunRecord("my_id", 4, "failed", None, T0 - 100)),
        )
        self.assertFalse(os.path.exists(path))
        self.assertEqual(
            self.content(store, failed),
            P0 + b"=== BEGIN\n" + P0 + b"half a li\n"
            + b"2026-01-02 04:04:05 UTC job: my_id: "
            + b"!!! karajo stopped during this run; marked failed at start-up\n",
        )
        self.assertEqual(self.store().restore().finalised, ())

    def test_restore_last_status_and_run(self) -> None:
        """
        The last status comes from the newest finished log, by counter; the
        last run is when that run started, from its record (not the file
        times), as an aware UTC datetime.
        """
        store = self.store()
        self.run_job(store, 8, "failed")
        self.clock.advance(10)
        self.run_job(store, 9, "canceled")
        self.clock.advance(20)
        self.run_job(store, 10, "success")
        os.utime(store.path_of(LogName(10, "my_id", "success")), (T0 + 90, T0 + 90))
        self.touch("my_id.11.success.bak")
        state = self.store().restore()
        self.assertEqual(state.last_status, "success")
        self.assertEqual(
            state.last_run,
            datetime.datetime(2026, 1, 2, 3, 4, 35, tzinfo=datetime.UTC),
        )
        self.assertEqual(state.last_run.utcoffset(), datetime.timedelta(0))
        self.assertEqual(state.counter, 10)

    def test_restore_last_run_is_the_run_start(self) -> None:
        """
        last_run is when the newest run started, from its record, whatever
        its text says; without the record file it is when the file was
        last written (its end).
        """
        store = self.store()
        log = store.begin(1)
        log.line("=== BEGIN")
        self.clock.advance(50)
        log.line("=== DONE")
        name = self.finish(log, "success")
        with open(store.path_of(name), "r+b") as f:
            f.write(b"garbage")
        os.utime(store.path_of(name), (T0 + 70, T0 + 70))
        state = self.store().restore()
        self.assertEqual(state.last_run, datetime.datetime.fromtimestamp(T0, datetime.UTC))
        self.assertEqual(state.records, (RunRecord("my_id", 1, "success", T0, T0 + 50),))
        os.unlink(store.records_path)
        state = self.store().restore()
        self.assertEqual(state.last_run,
                         datetime.datetime.fromtimestamp(T0 + 70, datetime.UTC))
        self.assertEqual(state.records, (RunRecord("my_id", 1, "success", None, T0 + 70),))

    def test_read(self) -> None:
        """read() finds a log by counter, running or finished; None when absent."""
        store = self.store()
        self.run_job(store, 1, "failed", "=== BEGIN", "!!! exit status 1")
        log = store.begin(2)
        log.write(b"so far\npartial")
        self.assertEqual(
            store.read(1),
            (
                LogName(1, "my_id", "failed"),
                P0 + b"=== BEGIN\n" + P0 + b"!!! exit status 1\n",
            ),
        )
        self.assertEqual(store.read(2), (LogName(2, "my_id", None), P0 + b"so far\n"))
        self.finish(log)
        self.assertEqual(
            store.read(2),
            (LogName(2, "my_id", "success"), P0 + b"so far\n" + P0 + b"partial\n"),
        )
        self.assertIsNone(store.read(3))
        self.assertIsNone(store.read(0))

    def test_path_of_other_job(self) -> None:
        """A store never computes a path for another job's log."""
        store = self.store()
        self.assertEqual(
            store.path_of(LogName(1, "my_id", None)), os.path.join(self.directory, "my_id.1")
        )
        self.assertRaises(ValueError, store.path_of, LogName(1, "other", None))

    def test_evolve_keeps_validation(self) -> None:
        """attrs.evolve() of a name re-runs the validators."""
        self.assertRaises(ValueError, attrs.evolve, LogName(1, "j", None), status="ok")


class RunRecordTests(StoreMixin, SynchronousTestCase):
    """The run record: kept, appended, compacted, pruned, rebuilt; never read from log text."""

    def saved(self) -> dict:
        """The file's records as a reader sees them (a later line wins), by counter."""
        found = read_records(self.state_path + ".runs", "my_id")
        return {"runs": [found[c].to_json() for c in sorted(found)]}

    def lines(self) -> list[bytes]:
        with open(self.state_path + ".runs", "rb") as f:
            return f.read().splitlines()

    def test_begin_and_finish(self) -> None:
        """
        begin() records a running run with its start, written to the file
        RECORD_DELAY later; finish() its status and end.
        """
        store = self.store()
        log = store.begin(1, trigger="webhook")
        record = RunRecord("my_id", 1, "running", T0, None, "webhook", 1, None)
        self.assertEqual(store.records(), [record])
        self.assertEqual(store.record(1), record)
        self.assertFalse(os.path.exists(store.records_path))
        self.clock.advance(RECORD_DELAY)
        self.assertEqual(self.saved()["runs"], [record.to_json()])
        self.clock.advance(2.5 - RECORD_DELAY)
        self.finish(log, "failed")
        done = RunRecord("my_id", 1, "failed", T0, T0 + 2.5, "webhook")
        self.assertEqual(store.records(), [done])
        self.assertEqual(self.saved()["runs"], [{
            "counter": 1, "status": "failed", "started": T0, "ended": T0 + 2.5,
            "trigger": "webhook", "attempt": 1, "node": None,
        }])
        self.assertEqual(self.store().restore().records, (done,))
        self.assertEqual(done.name, LogName(1, "my_id", "failed"))
        self.assertEqual(record.name, LogName(1, "my_id", None))

    def test_crash_keeps_the_start(self) -> None:
        """
        A run killed with the daemon keeps its start from the record; it
        ends C{failed} at its log's last write (the file's mtime).
        """
        store = self.store()
        log = store.begin(1, trigger="schedule")
        log.line("=== BEGIN")
        os.utime(log.path, (T0 + 7, T0 + 7))
        self.clock.advance(3600)
        state = self.store().restore()
        self.assertEqual(state.finalised, (LogName(1, "my_id", "failed"),))
        self.assertEqual(state.records, (RunRecord("my_id", 1, "failed", T0, T0 + 7, "schedule"),))
        self.assertEqual(state.last_run, datetime.datetime.fromtimestamp(T0, datetime.UTC))

    def test_crash_in_the_first_second(self) -> None:
        """
        A run killed before its record was written (within RECORD_DELAY of
        its start) is still finalised C{failed}, its counter kept; its
        start is unknown and its end (and last run) is its log's last write.
        """
        store = self.store()
        self.run_job(store, 1)
        log = store.begin(2, trigger="webhook")
        log.line("=== BEGIN")
        os.utime(log.path, (T0 + 0.5, T0 + 0.5))
        self.clock.advance(RECORD_DELAY / 2)
        state = self.store().restore()  # the kill: nothing more reaches the disk
        self.assertEqual(state.counter, 2)
        self.assertEqual(state.finalised, (LogName(2, "my_id", "failed"),))
        self.assertEqual(state.records[1], RunRecord("my_id", 2, "failed", None, T0 + 0.5))
        self.assertEqual(state.last_run, datetime.datetime.fromtimestamp(T0 + 0.5, datetime.UTC))

    def test_snapshot_changes_with_the_records(self) -> None:
        """snapshot() is the same tuple until a record is added, ended or forgotten."""
        store = self.store()
        empty = store.snapshot()
        self.assertIs(store.snapshot(), empty)
        log = store.begin(1)
        running = store.snapshot()
        self.assertEqual([r.status for r in running], ["running"])
        self.assertIs(store.snapshot(), running)
        self.finish(log)
        ended = store.snapshot()
        self.assertEqual([r.status for r in ended], ["success"])
        self.assertIs(store.snapshot(), ended)
        store.forget([LogName(1, "my_id", "success")])
        self.assertEqual(store.snapshot(), ())
        store.adopt(self.store().load())
        self.assertEqual([r.counter for r in store.snapshot()], [1])

    def test_finish_prunes_in_the_same_step(self) -> None:
        """
        finish(status, retention) prunes in its own thread step and the
        store forgets the pruned records; a failed prune is logged, the
        finish still succeeds and the logs stay.
        """
        threads = FakeThreads()
        store = self.store(run_in_thread=threads)
        for counter in (1, 2):
            d = store.begin(counter).finish("success")
            threads.run()
            self.successResultOf(d)
        d = store.begin(3).finish("success", retention=2)
        self.assertEqual(len(threads.calls), 1)
        threads.run()
        self.assertEqual(self.successResultOf(d), LogName(3, "my_id", "success"))
        self.assertEqual([n.counter for n in store.scan()], [2, 3])
        self.assertEqual([r.counter for r in store.records()], [2, 3])

        def broken(retention: int, names: object, spare: bool) -> list:
            raise PermissionError("no")

        store.prune = broken  # type: ignore[method-assign]
        with capturedLogs() as events:
            d = store.begin(4).finish("failed", retention=1)
            threads.run()
        self.assertEqual(self.successResultOf(d), LogName(4, "my_id", "failed"))
        self.assertEqual([n.counter for n in store.scan()], [2, 3, 4])
        self.assertEqual([e["error"] for e in events if "error" in e], ["no"])

    def test_one_write_per_short_run(self) -> None:
        """
        A run that ends within RECORD_DELAY writes the record file once, at
        its finish; the delayed write is cancelled (none fires later).
        """
        threads = FakeThreads()
        store = self.store(run_in_thread=threads)
        log = store.begin(1)
        self.clock.advance(RECORD_DELAY / 2)
        log.finish("success")
        self.assertEqual([f for f, _args, _d in threads.calls], [_close_and_rename])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_the_log_name_wins(self) -> None:
        """
        A kill after the record's write, before the log's rename: the record
        says success, the log is still running: the log wins (C{failed}).
        """
        threads = FakeThreads()
        store = self.store(run_in_thread=threads)
        log = store.begin(1)
        threads.run()
        log.finish("success")  # the record is written; the thread step never runs: the kill
        self.assertEqual(len(threads.calls), 1)
        self.assertEqual(self.saved()["runs"][0]["status"], "success")
        state = self.store().restore()
        self.assertEqual([r.status for r in state.records], ["failed"])
        self.assertEqual(state.records[0].started, T0)

    def test_unreadable_file_ignored(self) -> None:
        """A torn or foreign record file costs the times, never the logs."""
        store = self.store()
        self.run_job(store, 1)
        for garbage in (b"", b'{"runs": [{"counter": 1,', b"[]", b'{"runs": 5}',
                        b'{"runs": [{"counter": 0, "status": "success"}, 7]}',
                        b"[" * 100_000):
            with open(store.records_path, "wb") as f:
                f.write(garbage)
            state = self.store().restore()
            self.assertEqual([(r.counter, r.status, r.started) for r in state.records],
                             [(1, "success", None)], garbage)

    def test_written_whole(self) -> None:
        """
        The file is replaced by a rename: a tmp file left by a kill in the
        middle of a write is never read.
        """
        store = self.store()
        self.run_job(store, 1)
        with open(store.records_path + ".tmp", "wb") as f:
            f.write(b'{"runs": [')
        self.assertEqual(self.store().restore().records[0].started, T0)
        self.assertEqual(sorted(os.listdir(os.path.dirname(self.state_path))),
                         ["my_id.runs", "my_id.runs.tmp"])

    def test_pruned_with_the_logs(self) -> None:
        """
        forget() drops pruned runs; restore ignores the records of logs
        that are gone; the next whole write leaves them out.
        """
        store = self.store()
        for counter in (1, 2, 3):
            self.run_job(store, counter)
        store.forget(store.prune(2))
        self.assertEqual([r.counter for r in store.records()], [2, 3])
        store.begin(4)
        self.clock.advance(RECORD_DELAY)
        self.assertEqual([r["counter"] for r in self.saved()["runs"]], [1, 2, 3, 4])
        os.unlink(store.path_of(LogName(2, "my_id", "success")))
        restored = self.store()
        self.assertEqual([r.counter for r in restored.restore().records], [3, 4])
        log = restored.begin(5)  # the first write after a restart is whole
        self.finish(log)
        self.assertEqual([r["counter"] for r in self.saved()["runs"]], [3, 4, 5])

    def test_appended_then_compacted(self) -> None:
        """
        Each finish appends its record (one line, no file replaced); once
        twice what the store keeps (plus 16) was appended, the file is
        written whole again, so it stays bounded however many runs there
        are, and every restore in between sees the newest records.
        """
        store = self.store()
        self.run_job(store, 1)
        self.assertEqual(len(self.lines()), 1)  # the first write is whole
        inode = os.stat(store.records_path).st_ino
        self.run_job(store, 2)
        self.assertEqual(len(self.lines()), 2)
        self.assertEqual(os.stat(store.records_path).st_ino, inode)
        sizes = []
        for counter in range(3, 200):
            self.clock.advance(1)
            self.run_job(store, counter, "failed" if counter % 7 == 0 else "success")
            store.forget(store.prune(5))
            sizes.append(len(self.lines()))
            if counter % 50 == 0:
                restored = self.store().restore().records
                self.assertEqual(restored, tuple(store.records()))
        # The store holds the 5 kept and the one finishing; the whole write is a line.
        self.assertLessEqual(max(sizes), 2 * 6 + 16 + 1)
        self.assertLess(min(sizes[20:]), 5)  # compacted again and again
        self.assertEqual([r.counter for r in self.store().restore().records],
                         list(range(195, 200)))

    def test_a_torn_last_line_costs_only_itself(self) -> None:
        """
        A line cut short (a power loss) or foreign is skipped; the whole
        document before it and the lines after it still count.
        """
        store = self.store()
        self.run_job(store, 1)
        self.clock.advance(5)
        self.run_job(store, 2)
        with open(store.records_path, "ab") as f:
            f.write(b'7\n{"counter": 3, "status": "succ\n{"counter": 2, "status":')
        with capturedLogs() as events:
            state = self.store().restore()
        self.assertEqual([(r.counter, r.started) for r in state.records], [(1, T0), (2, T0 + 5)])
        self.assertEqual([e.get("count") for e in events if "count" in e], [3])

    def test_load_records_changes_nothing(self) -> None:
        """load_records (karajo check) leaves a running log running and the files alone."""
        store = self.store()
        self.run_job(store, 1)
        store.begin(2)
        self.clock.advance(RECORD_DELAY)
        before = sorted(os.listdir(self.directory))
        records = load_records(self.directory, "my_id", store.records_path)
        self.assertEqual([(r.counter, r.status) for r in records],
                         [(1, "success"), (2, "running")])
        self.assertEqual(sorted(os.listdir(self.directory)), before)
        self.assertEqual(last_run_of(records), T0)

    def test_record_writes_take_no_thread(self) -> None:
        """
        The record file is written on the reactor thread, before the
        finish's thread step: the delayed write of a running run takes no
        thread, and a finish one (the log's fsync and rename).
        """
        threads = FakeThreads()
        store = self.store(run_in_thread=threads)
        log = store.begin(1)
        self.clock.advance(RECORD_DELAY)
        self.assertEqual(threads.calls, [])
        self.assertEqual(self.saved()["runs"][0]["status"], "running")
        d = log.finish("success")
        self.assertEqual(self.saved()["runs"][0]["status"], "success")
        self.assertEqual(len(threads.calls), 1)
        self.assertNoResult(d)
        threads.run()
        self.successResultOf(d)

    def test_a_failed_write_makes_the_next_one_whole(self) -> None:
        """A record write that fails is logged; the next write replaces the file whole."""
        store = self.store()
        self.run_job(store, 1)
        os.unlink(store.records_path)
        os.mkdir(store.records_path)  # no write can go through, not even root's
        with capturedLogs() as events:
            self.assertEqual(self.run_job(store, 2), LogName(2, "my_id", "success"))
        self.assertEqual([e["path"] for e in events if "path" in e], [store.records_path])
        os.rmdir(store.records_path)
        self.run_job(store, 3)
        self.assertEqual(len(self.lines()), 1)
        self.assertEqual([r["counter"] for r in self.saved()["runs"]], [1, 2, 3])

    def test_follower_reads_after_the_writes_not_after_each_other(self) -> None:
        """
        The file reads of the followers of a run wait for the writes queued
        before them (a finish's tail), not for one another: 200 followers
        joining a run read at once instead of one after the other.
        """
        threads = FakeThreads()
        store = self.store(run_in_thread=threads)
        log = store.begin(1)
        log.write(b"hello\n")
        first = store._read_range(1, 0, 4)
        second = store._read_range(1, 2, 6)
        # Nothing queued before them (the run's record is written RECORD_DELAY
        # after its begin): both reads together, at once.
        self.assertEqual(len(threads.calls), 2)
        threads.run()
        self.assertEqual(self.successResultOf(first), log._store._line_prefix()[:4])
        self.assertEqual(len(self.successResultOf(second)), 4)
        finished = log.finish("success")
        third = store._read_range(1, 0, log.bytes_written)
        self.assertEqual(len(threads.calls), 1)  # the finish, then the read
        threads.run()
        self.assertNoResult(third)
        threads.run()
        self.successResultOf(finished)
        with open(store.path_of(log.name), "rb") as f:
            self.assertEqual(self.successResultOf(third), f.read())

    def test_last_run_of(self) -> None:
        """The newest run by counter: its start, else its end; None without runs."""
        self.assertIsNone(last_run_of([]))
        self.assertEqual(last_run_of([RunRecord("j", 2, "success", 5.0, 9.0),
                                      RunRecord("j", 10, "failed", None, 7.0),
                                      RunRecord("j", 3, "success", 20.0, 30.0)]), 7.0)
        self.assertEqual(last_run_of([RunRecord("j", 1, "running", 4.0)]), 4.0)

    def test_record_validation(self) -> None:
        self.assertRaises(ValueError, RunRecord, "j", 1, "done")
        self.assertRaises(ValueError, RunRecord, "j", 0, "success")
        self.assertRaises(ValueError, RunRecord, "j", 1, "success", "yesterday")
        self.assertIsNone(RunRecord.from_json("j", {"counter": 1, "status": "success",
                                                   "attempt": 0}))
        self.assertIsNone(RunRecord.from_json("j", {"counter": 1, "status": "success",
                                                   "node": 5}))
        r = RunRecord("j", 3, "canceled", 1.5, 2.5, "manual", 2, "n1")
        self.assertEqual(RunRecord.from_json("j", r.to_json()), r)
