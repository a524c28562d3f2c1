"""
L{karajo.joblog} where the mutation run found no test: the order and form
of what lands in a log, the files it refuses to follow, the counter file
at its edges, and the events an operator reads.
"""

from __future__ import annotations

import os
import stat
import time

from twisted.internet import task
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from karajo import logfiles
from karajo.joblog import LogName, LogStore
from karajo.logfiles import read_floor, write_floor
from tests.unit.test_joblog import P0, StoreMixin, sync_thread

#: What every LogStore needs besides its directory and job (no default reaches
#: for the global reactor).
FAKES = {"clock": task.Clock(), "run_in_thread": sync_thread}


class MessageTests(StoreMixin, SynchronousTestCase):
    """Programming errors say what was wrong, word for word."""

    def test_messages(self) -> None:
        cases = [
            (lambda: LogName(0, "j", None), "log counter must be a positive int, not 0"),
            (lambda: LogName(1, "j", "done"),
             "log status must be one of ('success', 'failed', 'canceled') or None, not 'done'"),
            (lambda: LogStore(self.directory, "a/b", **FAKES), "job ID 'a/b' cannot name a file"),
            (lambda: LogStore(self.directory, "j", kind="cron", **FAKES),
             "kind must be one of ('job', 'job_http'), not 'cron'"),
            (lambda: self.store().path_of(LogName(1, "other", None)),
             "log other.1 is not of job my_id"),
        ]
        for make, message in cases:
            with self.assertRaises(ValueError) as caught:
                make()
            self.assertEqual(str(caught.exception), message)

    def test_begin_and_finish_messages(self) -> None:
        store = self.store()
        log = store.begin(2)
        with self.assertRaises(ValueError) as caught:
            store.begin(2)
        self.assertEqual(str(caught.exception), "counter 2 of job my_id was used already")
        with self.assertRaises(ValueError) as caught:
            log.finish("done")
        self.assertEqual(
            str(caught.exception),
            "status must be one of ('success', 'failed', 'canceled'), not 'done'",
        )
        self.finish(log)
        with self.assertRaises(RuntimeError) as caught:
            log.line("late")
        self.assertEqual(str(caught.exception), "log my_id.2.success is already finished")

    def test_dot_job_ids_refused(self) -> None:
        for job_id in (".", "..", "", "a\0b"):
            self.assertRaises(ValueError, LogStore, self.directory, job_id, **FAKES)

    def test_status_order(self) -> None:
        """With one counter, running sorts first, then statuses by name."""
        names = [LogName(1, "j", s) for s in ("success", None, "canceled", "failed")]
        self.assertEqual(
            [n.status for n in sorted(names)], [None, "canceled", "failed", "success"]
        )


class LineTests(StoreMixin, SynchronousTestCase):
    def lines(self, *calls) -> list[bytes]:
        store = self.store()
        log = store.begin(1)
        for method, arg in calls:
            getattr(log, method)(arg)
        return self.content(store, self.finish(log)).split(b"\n")

    def test_line_text_kept(self) -> None:
        """Only trailing newlines go; spaces, leading newlines and letters stay."""
        self.assertEqual(
            self.lines(("line", "=== x  \n\n"), ("line", "\nMAX"), ("line", "X")),
            [P0 + b"=== x  ", P0, P0 + b"MAX", P0 + b"X", b""],
        )

    def test_line_not_unicode(self) -> None:
        """A lone surrogate (undecodable bytes in a str) is written escaped."""
        self.assertEqual(self.lines(("line", "bad \udcff")), [P0 + b"bad \\udcff", b""])

    def test_long_line_text(self) -> None:
        """A marker line longer than 64 KiB is cut into lines, none lost."""
        self.assertEqual(
            self.lines(("line", "x" * 70000)), [P0 + b"x" * 65536, P0 + b"x" * 4464, b""]
        )

    def test_full_partial_then_newline_in_one_chunk(self) -> None:
        """A newline right after a full 64 KiB line, in the same chunk, ends just that line."""
        self.assertEqual(
            self.lines(("write", b"a" * 65536 + b"\nc\n")), [P0 + b"a" * 65536, P0 + b"c", b""]
        )

    def test_full_line_written_at_once(self) -> None:
        """
        A line without end is written as soon as it reaches 64 KiB, even
        when it arrives in pieces: the memory held for it stays bounded.
        """
        store = self.store()
        log = store.begin(1)
        log.write(b"a" * 10)
        log.write(b"b" * 65526)
        _, content = store.read(1)
        self.assertEqual(content, b"")
        log.write(b"c")
        _, content = store.read(1)
        self.assertEqual(content, P0 + b"a" * 10 + b"b" * 65526 + b"\n")
        log.write(b"d" * 65536 * 3)
        _, content = store.read(1)
        self.assertEqual(content.count(b"\n"), 4)
        self.finish(log)

    def test_head_closed_once_full(self) -> None:
        """
        Once a line went to the tail, later short lines go there too, even
        if they would fit the head: the file keeps the order of output.
        """
        store = self.store(max_bytes=300)  # 150 bytes of head, 150 of tail
        log = store.begin(1)
        log.write(b"x" * 23 + b"\n")  # 60 bytes in the head
        log.write(b"y" * 58 + b"\n")  # 95 bytes: does not fit the head
        log.write(b"z" * 3 + b"\n")  # 40 bytes: would fit, but comes later
        content = self.content(store, self.finish(log))
        self.assertEqual(
            content.split(b"\n"), [P0 + b"x" * 23, P0 + b"y" * 58, P0 + b"zzz", b""]
        )

    def test_prefix_is_utc(self) -> None:
        """Line times are UTC whatever the local time zone."""
        old = os.environ.get("TZ")

        def restore() -> None:
            if old is None:
                os.environ.pop("TZ", None)
            else:
                os.environ["TZ"] = old
            time.tzset()

        self.addCleanup(restore)
        os.environ["TZ"] = "Asia/Tokyo"
        time.tzset()
        self.assertEqual(self.lines(("line", "t")), [P0 + b"t", b""])


class FileSafetyTests(StoreMixin, SynchronousTestCase):
    def test_begin_over_symlink(self) -> None:
        """A symlink where a new log would go is not followed or written through."""
        store = self.store(state_path=None)
        outside = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        os.symlink(outside, os.path.join(self.directory, "my_id.1"))
        self.assertRaises(FileExistsError, store.begin, 1)
        self.assertFalse(os.path.exists(outside))

    def test_read_refuses_symlink(self) -> None:
        """read() does not follow a symlink named like a log."""
        secret = os.path.abspath(self.mktemp())
        with open(secret, "wb") as f:
            f.write(b"secret")
        os.makedirs(self.directory)
        os.symlink(secret, os.path.join(self.directory, "my_id.3.success"))
        self.assertIsNone(self.store().read(3))

    def test_read_skips_non_files(self) -> None:
        """A directory named like a log is skipped, and the real log found."""
        os.makedirs(os.path.join(self.directory, "my_id.4"))
        self.assertIsNone(self.store().read(4))
        self.touch("my_id.4.success", b"done\n")
        self.assertEqual(self.store().read(4), (LogName(4, "my_id", "success"), b"done\n"))


class LeftoverTests(StoreMixin, SynchronousTestCase):
    def finalised(self, data: bytes) -> bytes:
        self.touch("my_id.4", data)
        store = self.store()
        store.restore()
        return self.content(store, LogName(4, "my_id", "failed"))

    def test_one_byte_without_newline(self) -> None:
        crash = P0 + b"!!! karajo stopped during this run; marked failed at start-up\n"
        self.assertEqual(self.finalised(b"x"), b"x\n" + crash)

    def test_complete_last_line(self) -> None:
        """A log that ends with a newline gets no blank line before the note."""
        crash = P0 + b"!!! karajo stopped during this run; marked failed at start-up\n"
        self.assertEqual(self.finalised(P0 + b"=== BEGIN\n"), P0 + b"=== BEGIN\n" + crash)

    def test_final_exists_logged(self) -> None:
        """A leftover whose failed name is taken stays, with a warning naming both."""
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        running = self.touch("my_id.4", b"x")
        failed = self.touch("my_id.4.failed", b"y")
        self.assertEqual(self.store().restore().finalised, ())
        (event,) = [e for e in events if e.get("log_namespace") == "karajo.logfiles"]
        self.assertEqual(event["log_format"], "Not finalising {path}: {final} exists already")
        self.assertEqual((event["path"], event["final"]), (running, failed))
        self.assertEqual(event["log_level"].name, "warn")


class CounterFileTests(StoreMixin, SynchronousTestCase):
    def write_state(self, data: bytes) -> None:
        os.makedirs(os.path.dirname(self.state_path), exist_ok=True)
        with open(self.state_path, "wb") as f:
            f.write(data)

    def test_without_state_file_run_1(self) -> None:
        """No counter file at all (code-built stores): run 1 can begin."""
        self.assertEqual(self.store(state_path=None).begin(1).name.counter, 1)

    def test_zero_or_negative(self) -> None:
        for data in (b"0\n", b"-5\n"):
            self.write_state(data)
            store = self.store()
            self.assertEqual(store.restore().counter, 0)

    def test_garbage_then_run_1(self) -> None:
        """An unreadable counter file counts as 0 and says so in a warning."""
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.write_state(b"garbage")
        self.assertEqual(self.store().begin(1).name.counter, 1)
        (event,) = [e for e in events if e.get("log_namespace") == "karajo.logfiles"]
        self.assertEqual(event["log_format"], "Ignoring unreadable counter file {path}")
        self.assertEqual(event["path"], self.state_path)
        self.assertEqual(event["log_level"].name, "warn")

    def test_leftover_temporary_file(self) -> None:
        """A longer temporary file left by a crash does not garble the next counter."""
        os.makedirs(os.path.dirname(self.state_path), exist_ok=True)
        with open(self.state_path + ".tmp", "wb") as f:
            f.write(b"123456789\n")
        store = self.store()
        for counter in (1, 2, 3):
            self.run_job(store, counter)
        store.prune(1)
        with open(self.state_path, "rb") as f:
            self.assertEqual(f.read(), b"%20d\n" % 3)

    def counter_file(self) -> tuple[int, bytes]:
        """The counter file's inode and content."""
        with open(self.state_path, "rb") as f:
            return os.fstat(f.fileno()).st_ino, f.read()

    def test_rewritten_in_place(self) -> None:
        """
        Once made, the counter file is rewritten in place (the same inode:
        none made, none freed), each counter in the same width, and read
        back as written.
        """
        write_floor(self.state_path, 9)
        inode, content = self.counter_file()
        self.assertEqual(content, b"                   9\n")
        for counter in (10, 12345, 3):
            write_floor(self.state_path, counter)
            self.assertEqual(self.counter_file(), (inode, b"%20d\n" % counter))
            self.assertEqual(read_floor(self.state_path), counter)
        self.assertEqual(os.listdir(os.path.dirname(self.state_path)), ["my_id"])

    def test_older_file_replaced(self) -> None:
        """
        A counter file of an earlier karajo (no padding) is replaced whole,
        never grown in place (a power loss could keep the new size without
        the bytes); the rewrites after that are in place.
        """
        self.write_state(b"123456\n")
        os.chmod(self.state_path, 0o600)  # only its length differs from a file made here
        old = os.stat(self.state_path).st_ino
        write_floor(self.state_path, 7)
        inode, content = self.counter_file()
        self.assertEqual(content, b"%20d\n" % 7)
        write_floor(self.state_path, 8)
        self.assertEqual(self.counter_file(), (inode, b"%20d\n" % 8))
        self.assertNotEqual(inode, old)

    def test_synced_before_logs_deleted(self) -> None:
        """
        A prune's rewrite in place is synced, holding the highest counter
        of any log, while the logs it deletes are all still there.
        """
        store = self.store()
        for counter in (1, 2, 3):
            self.run_job(store, counter)
        store.prune(1)  # the first write makes the file
        for counter in (4, 5, 6):
            self.run_job(store, counter)
        synced = []

        def fdatasync(fd: int) -> None:
            synced.append((self.counter_file()[1], sorted(os.listdir(self.directory))))
            os.fsync(fd)

        self.patch(logfiles, "_fdatasync", fdatasync)
        store.prune(1)
        self.assertEqual(synced, [(b"%20d\n" % 6, ["my_id.3.success", "my_id.4.success",
                                                   "my_id.5.success", "my_id.6.success"])])
        self.assertEqual(self.store().restore().counter, 6)

    def test_not_written_through(self) -> None:
        """
        A link, a second name, a FIFO (with or without a reader), a file
        longer or shorter than a record, or one of another mode or owner at
        the counter file's name is replaced by a new file, never written
        through (nor waited on), and what the other name holds stays as it
        was.
        """
        # Another file that looks like one made here: only its other name
        # (or the link to it) tells it apart.
        outside = os.path.abspath(self.mktemp())
        kept = b"%20d\n" % 5
        with open(outside, "wb") as f:
            f.write(kept)
        os.chmod(outside, 0o600)
        os.makedirs(os.path.dirname(self.state_path), exist_ok=True)
        makers = [
            lambda: os.symlink(outside, self.state_path),
            lambda: os.link(outside, self.state_path),
            lambda: os.mkfifo(self.state_path, 0o600),
            lambda: (self.write_state(b"1" * 30 + b"\n"), os.chmod(self.state_path, 0o600)),
            lambda: (self.write_state(b"5\n"), os.chmod(self.state_path, 0o600)),
            lambda: (self.write_state(b"%20d\n" % 5), os.chmod(self.state_path, 0o644)),
            lambda: os.mkfifo(self.state_path, 0o600),  # with a reader: it opens
        ]
        if os.geteuid() == 0:  # a file of another owner (only root can give one away)
            makers.insert(0, lambda: (self.write_state(kept), os.chmod(self.state_path, 0o600),
                                      os.chown(self.state_path, 65534, 65534)))
        for number, make in enumerate(makers):
            if os.path.lexists(self.state_path):
                os.unlink(self.state_path)
            make()
            reader = None
            if number == len(makers) - 1:
                reader = os.open(self.state_path, os.O_RDONLY | os.O_NONBLOCK)
            try:
                write_floor(self.state_path, 42)
            finally:
                if reader is not None:
                    os.close(reader)
            st = os.lstat(self.state_path)
            self.assertTrue(stat.S_ISREG(st.st_mode))
            self.assertEqual((st.st_nlink, stat.S_IMODE(st.st_mode), st.st_uid),
                             (1, 0o600, os.geteuid()))
            self.assertEqual(self.counter_file()[1], b"%20d\n" % 42)
            with open(outside, "rb") as f:
                self.assertEqual(f.read(), kept)
