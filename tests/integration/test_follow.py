"""
Following a run over real sockets (docs/http-api.md, "Following a run"):
the answer names the run, the events stream carries exactly the final log,
resumes from an offset, ends with the run's status, waits for a queued run
and reports a queued run dropped by a pause.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time

import treq
from twisted.internet import defer, reactor, task
from twisted.logger import capturedLogs
from twisted.trial import unittest

from karajo.model import Environment, Job
from tests.integration.test_cli import SECRET, Daemon, client


def parse_events(raw: bytes) -> list[tuple[str, dict]]:
    """The events of an SSE body as (event, data); comments left out."""
    events = []
    for block in raw.decode("utf-8").split("\n\n"):
        name, data = "message", None
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
        if data is not None:
            events.append((name, data))
    return events


def log_text(events: list[tuple[str, dict]], start: int = 0) -> bytes:
    """The log bytes the events carry, checking that their offsets join up."""
    out = bytearray()
    at = start
    for name, data in events:
        if name == "log":
            assert data["offset"] == at, (data["offset"], at)
            piece = data["text"].encode("utf-8")
            out += piece
            at += len(piece)
    return bytes(out)


async def until(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await task.deferLater(reactor, 0.02, lambda: None)


class FollowTests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        self.daemon = Daemon(self, Environment(
            dir_base=self.base, secret=SECRET, listen_address="127.0.0.1:0",
            jobs={
                "chatty": Job(path="/chatty", commands=(
                    "i=0; while [ $i -lt 3000 ]; do echo \"line $i €\"; i=$((i+1)); done",
                )),
                "big": Job(path="/big", commands=(
                    "seq 1 40000 | sed 's/$/ padding padding padding padding padding padding/'",
                )),
                "flood": Job(path="/flood", commands=(
                    "sleep 0.5",
                    "seq 1 80000 | sed 's/$/ padding padding padding padding padding padding/'",
                    "sleep 30",
                )),
                "fails": Job(path="/fails", commands=("echo about to fail", "sleep 0.5", "exit 3")),
                "slow": Job(path="/slow", commands=("echo start", "sleep 30")),
            },
        ))
        self.http = client()

    async def hook(self, path: str) -> dict:
        body = json.dumps({"_karajo_epoch": int(time.time()), "n": time.monotonic()}).encode()
        sign = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        response = await self.http.post(
            f"{self.daemon.url}/karajo/api/job_exec/run{path}", data=body,
            headers={"X-Karajo-Sign": sign, "Content-Type": "application/json"})
        document = json.loads(await response.content())
        self.assertEqual(response.code, 200, document)
        return document

    async def manage(self, action: str, job_id: str) -> dict:
        body = f"_karajo_epoch={int(time.time())}&id={job_id}&n={time.monotonic()}".encode()
        sign = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        response = await self.http.post(
            f"{self.daemon.url}/karajo/api/job_exec/{action}", data=body,
            headers={"X-Karajo-Sign": sign,
                     "Content-Type": "application/x-www-form-urlencoded"})
        document = json.loads(await response.content())
        self.assertEqual(response.code, 200, document)
        return document

    async def stream(self, url: str) -> tuple[int, bytes, str]:
        response = await self.http.get(self.daemon.url + url)
        content_type = response.headers.getRawHeaders(b"content-type", [b""])[0].decode()
        return response.code, await treq.content(response), content_type

    async def test_chatty_run_streams_its_final_log(self) -> None:
        """Followed from the start, the stream is the final log file, byte for byte."""
        document = await self.hook("/chatty")
        run = document["data"]["run"]
        self.assertEqual((run["counter"], run["status"]), (1, "running"))
        self.assertEqual(run["events_url"], "/karajo/api/job_exec/events?id=chatty&counter=1")
        # Two followers at once share the one feed.
        (c1, raw1, ctype), (c2, raw2, _) = await defer.gatherResults([
            defer.ensureDeferred(self.stream(run["events_url"])),
            defer.ensureDeferred(self.stream(run["events_url"])),
        ])
        self.assertEqual((c1, c2), (200, 200))
        self.assertTrue(ctype.startswith("text/event-stream"), ctype)
        found = self.daemon.runner("chatty").store.read(1)
        assert found is not None
        name, content = found
        self.assertEqual(name.status, "success")
        self.assertIn("line 2999 €".encode(), content)
        for raw in (raw1, raw2):
            events = parse_events(raw)
            self.assertEqual(log_text(events), content)
            self.assertEqual(events[-1], ("end", {"status": "success"}))
        # A finished run replays from an offset and ends at once.
        code, raw, _ = await self.stream(run["events_url"] + "&offset=100")
        events = parse_events(raw)
        self.assertEqual(log_text(events, 100), content[100:])
        self.assertEqual(events[-1], ("end", {"status": "success"}))
        # And the log endpoint named in the answer is the same log.
        response = await self.http.get(self.daemon.url + run["log_url"])
        self.assertEqual(json.loads(await response.content())["data"]["size"], len(content))

    async def test_big_log_streams_whole_to_a_late_follower(self) -> None:
        """Over 2 MiB, more than a follower may have queued: read in chunks, not dropped."""
        run = (await self.hook("/big"))["data"]["run"]
        runner = self.daemon.runner("big")
        await runner.when_idle()
        code, raw, _ = await self.stream(run["events_url"])
        content = runner.store.read(1)[1]
        self.assertGreater(len(content), 2 * 1024 * 1024)
        events = parse_events(raw)
        self.assertEqual(log_text(events), content)
        self.assertEqual(events[-1], ("end", {"status": "success"}))

    async def test_failed_and_canceled_end_events(self) -> None:
        failed = (await self.hook("/fails"))["data"]["run"]
        code, raw, _ = await self.stream(failed["events_url"])
        events = parse_events(raw)
        self.assertEqual(events[-1], ("end", {"status": "failed"}))
        self.assertIn(b"about to fail", log_text(events))

        slow = (await self.hook("/slow"))["data"]["run"]
        following = defer.ensureDeferred(self.stream(slow["events_url"]))
        runner = self.daemon.runner("slow")
        await until(lambda: runner.executing)
        await self.manage("cancel", "slow")
        code, raw, _ = await following
        events = parse_events(raw)
        self.assertEqual(events[-1], ("end", {"status": "canceled"}))
        self.assertEqual(log_text(events), runner.store.read(slow["counter"])[1])

    async def test_queued_run_dropped_by_pause(self) -> None:
        """
        A queued run owns its counter in the answer; its stream waits, and a
        pause ends it canceled with the line saying why.
        """
        first = (await self.hook("/slow"))["data"]["run"]
        queued = (await self.manage("run_now", "slow"))["data"]["run"]
        self.assertEqual((first["counter"], queued["counter"], queued["status"]),
                         (1, 2, "queued"))
        following = defer.ensureDeferred(self.stream(queued["events_url"]))
        await task.deferLater(reactor, 0.3, lambda: None)
        self.assertFalse(following.called)  # waits for a run that has not started
        await self.manage("pause", "slow")
        code, raw, _ = await following
        events = parse_events(raw)
        self.assertEqual(events[-1], ("end", {"status": "canceled"}))
        self.assertIn(b"??? CANCELED: the job was paused before this run started\n",
                      log_text(events))
        runner = self.daemon.runner("slow")
        self.assertEqual(runner.store.read(2)[0].filename, "slow.2.canceled")
        await self.manage("cancel", "slow")
        await runner.when_idle()

    async def test_queued_run_streams_once_it_starts(self) -> None:
        """The stream of a queued run waits (pings aside), then carries its whole log."""
        first = (await self.hook("/fails"))["data"]["run"]
        queued = (await self.hook("/fails"))["data"]["run"]
        self.assertEqual(queued["counter"], first["counter"] + 1)
        self.assertEqual(queued["status"], "queued")
        code, raw, _ = await self.stream(queued["events_url"])
        events = parse_events(raw)
        self.assertEqual(events[-1], ("end", {"status": "failed"}))
        self.assertEqual(log_text(events),
                         self.daemon.runner("fails").store.read(queued["counter"])[1])

    async def test_follower_that_does_not_read_is_dropped(self) -> None:
        """
        A client that stops reading is not buffered for: once its connection
        pushes back and the cap fills, the daemon drops it, while the run and
        other followers go on.
        """
        import socket

        run = (await self.hook("/flood"))["data"]["run"]
        runner = self.daemon.runner("flood")
        feed = runner.store._feeds[run["counter"]]
        sock = socket.create_connection(("127.0.0.1", self.daemon.port.getHost().port))
        self.addCleanup(sock.close)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(f"GET {run['events_url']} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await until(lambda: feed.followers == 1)
        with capturedLogs() as logged:
            # ~5 MiB of head is published live; the client reads nothing.
            await until(lambda: feed.size > 4 * 1024 * 1024 and feed.followers == 0, timeout=20)
        self.assertIn("dropping a follower that fell too far behind",
                      [e.get("log_format") for e in logged])
        self.assertTrue(runner.executing)
        runner.cancel()
        await runner.when_idle()

    async def test_follower_that_goes_away(self) -> None:
        """
        A client whose connection is cut mid-run (a network drop: the run
        page then reopens the stream at its offset) is forgotten without an
        error, and the run goes on.
        """
        import gc
        import socket
        import struct

        run = (await self.hook("/slow"))["data"]["run"]
        runner = self.daemon.runner("slow")
        feed = runner.store._feeds[run["counter"]]
        sock = socket.create_connection(("127.0.0.1", self.daemon.port.getHost().port))
        sock.sendall(f"GET {run['events_url']} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await until(lambda: feed.followers == 1)
        # closed with a reset, as a dropped network shows it
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        await until(lambda: feed.followers == 0)
        gc.collect()  # an error left in a Deferred is logged (and fails the test) now
        self.assertTrue(runner.executing)
        runner.cancel()
        await runner.when_idle()

    async def test_unknown_counter_is_404(self) -> None:
        code, raw, _ = await self.stream("/karajo/api/job_exec/events?id=chatty&counter=9")
        self.assertEqual((code, json.loads(raw)["name"]), (404, "ERR_LOG_NOT_FOUND"))
        code, raw, _ = await self.stream("/karajo/api/job_http/events?id=nope&counter=1")
        self.assertEqual(code, 404)
