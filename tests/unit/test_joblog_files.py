"""
What L{karajo.joblog} leaves on disk, to the byte: the mode of every log
(not only the first, which takes another path), the cut note's exact
counts, and the modification time of a log recovered at start-up.
"""

from __future__ import annotations

import datetime
import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from karajo.joblog import LogName
from tests.unit.test_joblog import P0, T0, StoreMixin

NS = 1_000_000_000


class ModeTests(StoreMixin, SynchronousTestCase):
    """Every log file is created 0600, whatever the umask lets through."""

    def setUp(self) -> None:
        super().setUp()
        # With umask 0 the mode asked for is the mode the file gets.
        self.addCleanup(os.umask, os.umask(0))

    def mode(self, path: str) -> int:
        return stat.S_IMODE(os.stat(path).st_mode)

    def test_logs_after_the_first(self) -> None:
        """
        The first log of a job creates its directory; later ones are opened
        directly.  Both are 0600, running and once finished.
        """
        store = self.store()
        logs = [store.begin(counter) for counter in (1, 2, 3)]
        for log in logs:
            self.assertEqual(self.mode(log.path), 0o600, log.path)
        for log in logs:
            self.finish(log)
            self.assertEqual(self.mode(log.path), 0o600, log.path)

    def test_log_in_existing_directory(self) -> None:
        """A store whose directory exists already (a restart) creates 0600 logs."""
        os.makedirs(self.directory)
        log = self.store().begin(1)
        self.assertEqual(self.mode(log.path), 0o600)
        self.assertEqual(self.mode(self.directory), 0o777)  # not ours: left alone

    def test_directories_made_private(self) -> None:
        """Missing directories are made 0700 even with umask 0."""
        self.store().begin(1)
        self.assertEqual(self.mode(self.directory), 0o700)
        self.assertEqual(self.mode(os.path.dirname(self.directory)), 0o700)


class CutNoteTests(StoreMixin, SynchronousTestCase):
    """
    With max_bytes 200 the head and the tail each hold 100 bytes.  Each
    line below is 50 bytes: the 36-byte prefix, 13 characters, a newline.
    """

    LINE = b"x" * 13

    def test_counts(self) -> None:
        """
        Ten lines: two in the head, the last two in the tail, six (300 bytes)
        cut and counted in the note.
        """
        self.assertEqual(len(P0 + self.LINE + b"\n"), 50)
        store = self.store(max_bytes=200)
        log = store.begin(1)
        for i in range(10):
            log.write(b"%02d" % i + self.LINE[2:] + b"\n")
        name = self.finish(log)
        content = self.content(store, name)
        note = P0 + b"... 300 bytes (6 lines) cut from the middle of this log ...\n"
        self.assertEqual(
            content,
            P0 + b"00" + self.LINE[2:] + b"\n"
            + P0 + b"01" + self.LINE[2:] + b"\n"
            + note
            + P0 + b"08" + self.LINE[2:] + b"\n"
            + P0 + b"09" + self.LINE[2:] + b"\n",
        )
        self.assertEqual(log.bytes_written, len(content))
        self.assertEqual(os.path.getsize(store.path_of(name)), 200 + len(note))

    def test_one_cut_line(self) -> None:
        """Three lines over the head: one line of 50 bytes cut."""
        store = self.store(max_bytes=200)
        log = store.begin(1)
        for _ in range(5):
            log.write(self.LINE + b"\n")
        content = self.content(store, self.finish(log))
        self.assertIn(P0 + b"... 50 bytes (1 lines) cut from the middle of this log ...\n", content)

    def test_long_newest_line_kept(self) -> None:
        """
        A tail line longer than the whole tail is kept (the newest line is
        never dropped) until a later line pushes it out: then its 237 bytes
        are counted.
        """
        store = self.store(max_bytes=200)
        log = store.begin(1)
        log.write(self.LINE + b"\n" + self.LINE + b"\n")  # head full
        log.write(b"y" * 200 + b"\n")  # 237 bytes, alone in the tail
        log.line("=== DONE")
        content = self.content(store, self.finish(log))
        self.assertEqual(
            content.split(b"\n")[2:],
            [P0 + b"... 237 bytes (1 lines) cut from the middle of this log ...",
             P0 + b"=== DONE", b""],
        )
        log = store.begin(2)
        log.write(self.LINE + b"\n" + self.LINE + b"\n" + b"y" * 200 + b"\n")
        content = self.content(store, self.finish(log))
        self.assertTrue(content.endswith(P0 + b"y" * 200 + b"\n"))
        self.assertNotIn(b"cut from the middle", content)


class RecoveredMtimeTests(StoreMixin, SynchronousTestCase):
    """
    A log left running by a crash gets a line appended at start-up; its
    modification time stays the crash-time one, since that is the closest
    thing to when the run ended (and what last_run falls back to).
    """

    def leftover(self, data: bytes) -> str:
        path = self.touch("my_id.4", data)
        # atime and mtime differ, so a swapped pair shows.
        os.utime(path, ns=((T0 - 500) * NS, (T0 - 100) * NS + 123))
        self.clock.advance(3600)
        return path

    def test_mtime_kept(self) -> None:
        """The failed log keeps the leftover's mtime to the nanosecond."""
        self.leftover(P0 + b"=== BEGIN\n")
        store = self.store()
        state = store.restore()
        self.assertEqual(state.finalised, (LogName(4, "my_id", "failed"),))
        mtime = os.stat(store.path_of(LogName(4, "my_id", "failed"))).st_mtime_ns
        self.assertEqual(mtime, (T0 - 100) * NS + 123)

    def test_last_run_from_kept_mtime(self) -> None:
        """
        Without a readable first line, last_run is that kept mtime, not the
        time of the restart.
        """
        self.leftover(b"no timestamp here\n")
        state = self.store().restore()
        self.assertEqual(
            state.last_run,
            datetime.datetime(2026, 1, 2, 3, 2, 25, 0, tzinfo=datetime.UTC),
        )


class LineCutTests(StoreMixin, SynchronousTestCase):
    """An endless line is cut at 64 KiB (65536 bytes), written out here."""

    def test_cut_at_64_kib(self) -> None:
        store = self.store()
        log = store.begin(1)
        log.write(b"a" * 65537 + b"\n")
        log.write(b"b" * 65536)
        log.write(b"\nc\n")
        content = self.content(store, self.finish(log))
        self.assertEqual(
            content.split(b"\n"),
            [P0 + b"a" * 65536, P0 + b"a", P0 + b"b" * 65536, P0 + b"c", b""],
        )
