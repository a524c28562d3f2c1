"""
L{karajo.logfeed}: one feed per run fanned out to its followers, on a
L{task.Clock}: a late follower reads the file's head then goes on live
without gap or duplicate (reading on from the file, not dropped, if its
reading is slow), a slow live one is dropped past the cap, heartbeats
come while nothing happens, pieces end on UTF-8 boundaries.
"""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from karajo.logfeed import CHUNK, LogFeed, utf8_cut


class Recorder:
    """A follower that remembers what it was told."""

    def __init__(self) -> None:
        self.pieces: list[tuple[int, str]] = []
        self.ends: list[str] = []
        self.pings = 0
        self.drops = 0

    def piece(self, offset: int, text: str) -> None:
        self.pieces.append((offset, text))

    def ended(self, status: str) -> None:
        self.ends.append(status)

    def ping(self) -> None:
        self.pings += 1

    def dropped(self) -> None:
        self.drops += 1

    def text(self) -> str:
        return "".join(t for _, t in self.pieces)

    def contiguous(self, start: int = 0) -> bool:
        at = start
        for offset, text in self.pieces:
            if offset != at:
                return False
            at += len(text.encode("utf-8"))
        return True


class FeedTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.file = bytearray()  # what the log file holds
        self.reads: list[tuple[defer.Deferred[bytes], int, int]] = []

    def feed(self, **kw: object) -> LogFeed:
        def read_range(start: int, end: int) -> defer.Deferred[bytes]:
            d: defer.Deferred[bytes] = defer.Deferred()
            self.reads.append((d, start, end))
            return d

        return LogFeed(self.clock, read_range, **kw)  # type: ignore[arg-type]

    def write(self, feed: LogFeed, data: bytes) -> None:
        self.file += data
        feed.publish(data)

    def finish_reads(self) -> None:
        while self.reads:
            d, start, end = self.reads.pop(0)
            d.callback(bytes(self.file[start:end]))

    def test_live_follower_gets_every_byte(self) -> None:
        feed = self.feed()
        rec = Recorder()
        feed.subscribe(rec)
        self.assertEqual(self.reads, [])  # nothing to read: all of it comes live
        for i in range(100):
            self.write(feed, b"line %d\n" % i)
        feed.end("success")
        self.assertEqual(rec.text().encode(), bytes(self.file))
        self.assertTrue(rec.contiguous())
        self.assertEqual(rec.ends, ["success"])
        self.assertEqual(feed.followers, 0)

    def test_late_follower_reads_the_head_then_goes_live(self) -> None:
        """
        Bytes published while the file read is in flight are held and
        follow the head: no gap, no duplicate.
        """
        feed = self.feed()
        for i in range(10):
            self.write(feed, b"before %d\n" % i)
        rec = Recorder()
        feed.subscribe(rec)
        self.assertEqual([(s, e) for _, s, e in self.reads], [(0, len(self.file))])
        self.write(feed, b"during 1\n")
        self.write(feed, b"during 2\n")
        self.assertEqual(rec.pieces, [])  # held until the head is read
        self.finish_reads()
        self.write(feed, b"after\n")
        feed.end("failed")
        self.assertEqual(rec.text().encode(), bytes(self.file))
        self.assertTrue(rec.contiguous())
        self.assertEqual(rec.ends, ["failed"])

    def test_offset_resumes_without_duplicate(self) -> None:
        feed = self.feed()
        self.write(feed, b"0123456789\n")
        rec = Recorder()
        feed.subscribe(rec, 4)
        self.finish_reads()
        self.write(feed, b"more\n")
        feed.end("success")
        self.assertEqual(rec.text().encode(), bytes(self.file[4:]))
        self.assertTrue(rec.contiguous(4))

    def test_offset_beyond_what_exists_yet(self) -> None:
        feed = self.feed()
        self.write(feed, b"abc\n")
        rec = Recorder()
        feed.subscribe(rec, 6)
        self.assertEqual(self.reads, [])
        self.write(feed, b"defgh\n")
        feed.end("success")
        self.assertEqual(rec.pieces, [(6, "fgh\n")])  # "abc\nde" came before

    def test_finished_feed_replays_and_ends_at_once(self) -> None:
        content = b"all of it\n"
        feed = LogFeed(self.clock, lambda s, e: defer.succeed(content[s:e]), size=len(content))
        feed.end("canceled")
        rec = Recorder()
        feed.subscribe(rec, 4)
        self.assertEqual((rec.pieces, rec.ends), ([(4, "of it\n")], ["canceled"]))

    def test_slow_follower_dropped_past_the_cap(self) -> None:
        """A paused follower holds at most the cap; a fast one is not affected."""
        feed = self.feed(cap=100)
        slow, fast = Recorder(), Recorder()
        slow_sub = feed.subscribe(slow)
        feed.subscribe(fast)
        slow_sub.pauseProducing()
        self.write(feed, b"x" * 60 + b"\n")
        self.assertEqual((slow.pieces, slow.drops), ([], 0))
        slow_sub.resumeProducing()  # drains what it held
        self.assertEqual(slow.text(), "x" * 60 + "\n")
        slow_sub.pauseProducing()
        self.write(feed, b"y" * 60 + b"\n")
        self.write(feed, b"z" * 60 + b"\n")
        self.assertEqual(slow.drops, 1)
        self.assertTrue(slow_sub.done)
        self.assertEqual(feed.followers, 1)
        feed.end("success")
        self.assertEqual(fast.text().encode(), bytes(self.file))
        self.assertEqual(slow.ends, [])

    def test_big_head_read_a_chunk_at_a_time_while_not_paused(self) -> None:
        """
        A late follower of a log larger than the cap is not dropped: the
        file is read a chunk at a time, the next read only once the
        follower's connection takes more.
        """
        feed = self.feed(cap=100)
        line = b"0123456789abcdef" * 64 + b"\n"
        for _ in range(1000):  # about 1 MiB
            self.write(feed, line)
        rec = Recorder()
        sub = feed.subscribe(rec)
        self.assertEqual([(s, e) for _, s, e in self.reads], [(0, CHUNK)])
        d, start, end = self.reads.pop()
        sub.pauseProducing()
        d.callback(bytes(self.file[start:end]))
        self.assertEqual(self.reads, [])  # paused: no further read
        self.write(feed, b"live\n")  # held meanwhile, within the cap
        sub.resumeProducing()
        self.assertEqual([(s, e) for _, s, e in self.reads], [(CHUNK, 2 * CHUNK)])
        self.finish_reads()
        feed.end("success")
        self.assertEqual(rec.drops, 0)
        self.assertEqual(rec.text().encode(), bytes(self.file))
        self.assertTrue(rec.contiguous())

    def test_slow_catch_up_reads_on_instead_of_being_dropped(self) -> None:
        """
        A late follower whose file reading is slower than the run's output
        is not dropped, however much is published meanwhile (many times the
        cap): past the cap, the pieces it held are let go and read from the
        file as well; it never holds more than the cap, then goes live.
        """
        feed = self.feed(cap=100)
        self.write(feed, b"a" * 50 + b"\n")
        rec = Recorder()
        sub = feed.subscribe(rec)
        for i in range(20):
            self.write(feed, b"%02d" % i + b"b" * 60 + b"\n")
            self.assertLessEqual(sub._held_bytes, 100)
        rounds = 0
        while self.reads:
            self.write(feed, b"c" * 60 + b"\n")  # more while each read is in flight
            self.assertLessEqual(sub._held_bytes, 100)
            d, start, end = self.reads.pop(0)
            d.callback(bytes(self.file[start:end]))
            rounds += 1
        self.assertGreater(rounds, 1)  # read on past the size it joined at
        self.assertFalse(sub._catching_up)
        self.write(feed, b"live\n")
        feed.end("success")
        self.assertEqual(rec.drops, 0)
        self.assertEqual(rec.text().encode(), bytes(self.file))
        self.assertTrue(rec.contiguous())
        self.assertEqual(rec.pieces[-1], (len(self.file) - 5, "live\n"))

    def test_heartbeat_while_nothing_happens(self) -> None:
        """A waiting follower (a queued run) hears a ping every 10 s; none after the end."""
        feed = self.feed()
        rec = Recorder()
        sub = feed.subscribe(rec)
        self.clock.advance(9.9)
        self.assertEqual(rec.pings, 0)
        self.clock.advance(0.1)
        self.assertEqual(rec.pings, 1)
        self.clock.advance(10)
        self.assertEqual(rec.pings, 2)
        sub.cancel()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        feed.subscribe(rec)
        feed.end("success")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_pieces_end_on_character_boundaries(self) -> None:
        """A character split across writes reaches the follower whole; offsets stay bytes."""
        feed = self.feed()
        rec = Recorder()
        feed.subscribe(rec)
        euro = "€".encode()
        self.write(feed, b"a" + euro[:1])
        self.write(feed, euro[1:] + b"b\n")
        feed.end("success")
        self.assertEqual(rec.pieces, [(0, "a"), (1, "€b\n")])

    def test_invalid_utf8_is_replaced_not_held(self) -> None:
        feed = self.feed()
        rec = Recorder()
        feed.subscribe(rec)
        self.write(feed, b"\xff\xfe\n")
        self.write(feed, b"ok\n")
        self.assertEqual(rec.pieces, [(0, "\ufffd\ufffd\n"), (3, "ok\n")])

    def test_utf8_cut(self) -> None:
        euro = "€".encode()  # 3 bytes
        emoji = "😀".encode()  # 4 bytes
        self.assertEqual(utf8_cut(b""), 0)
        self.assertEqual(utf8_cut(b"abc"), 3)
        self.assertEqual(utf8_cut(b"a" + euro), 4)
        self.assertEqual(utf8_cut(b"a" + euro[:2]), 1)
        self.assertEqual(utf8_cut(b"a" + euro[:1]), 1)
        self.assertEqual(utf8_cut(emoji[:3]), 0)
        self.assertEqual(utf8_cut(emoji), 4)
        self.assertEqual(utf8_cut(b"\x80\x80"), 2)


class RunLogFeedTests(SynchronousTestCase):
    """The store's feed is fed by the run's own writes, the cut of a long log included."""

    def test_follower_sees_the_final_file(self) -> None:
        import os

        from karajo.joblog import LogStore

        clock = task.Clock()
        store = LogStore(
            os.path.abspath(self.mktemp()), "j", clock=clock, max_bytes=4000,
            run_in_thread=lambda f, *a: defer.maybeDeferred(f, *a),
        )
        runlog = store.begin(1)
        early = Recorder()
        feed = self.successResultOf(store.follow(1))
        assert feed is not None
        feed.subscribe(early)
        for i in range(30):
            runlog.write(b"line %d \xe2\x82\xac\n" % i)
        late = Recorder()
        feed.subscribe(late, 10)
        for i in range(300):  # past the head: the middle is cut at finish
            runlog.write(b"more %d\n" % i)
        self.successResultOf(runlog.finish("success"))
        found = store.read(1)
        assert found is not None
        name, content = found
        self.assertEqual(name.status, "success")
        self.assertIn(b"cut from the middle", content)
        self.assertEqual(early.text().encode(), content)
        self.assertEqual(late.text().encode(), content[10:])
        self.assertTrue(early.contiguous() and late.contiguous(10))
        self.assertEqual(early.ends, ["success"])
        # After the end a follower gets the final file from its offset.
        replay = self.successResultOf(store.follow(1))
        assert replay is not None and replay is not feed
        again = Recorder()
        replay.subscribe(again)
        self.assertEqual((again.text().encode(), again.ends), (content, ["success"]))
