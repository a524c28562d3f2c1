"""End to end: the installed twistd plugin as a real process."""

from __future__ import annotations

import os
import socket

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from karajo.process import KILL_GRACE

from ..helpers import config_tree
from ..integration.test_run import group_members
from .daemon import free_port, start_twistd, wait_listening

BROKEN = {
    "syntax": ('[job "x"\ncommand = a\n', 3),
    "duration": ('[job "x"]\ncommand = a\ninterval = 1 minute\n', 5),
    "boolean": ('[job.http "x"]\nhttp_url = /x\nhttp_insecure = perhaps\n', 5),
    "number": ("max_job_running = lots\n", 3),
    "method": ('[job.http "x"]\nhttp_url = /x\nhttp_method = PATCH\n', 5),
    "request_type": ('[job.http "x"]\nhttp_method = POST\nhttp_url = /x\nhttp_request_type = xml\n', 6),
    "auth_kind": ('[job "x"]\ncommand = a\nauth_kind = plain\n', 5),
    "schedule": ('[job "x"]\ncommand = a\nschedule = every tuesday\n', 5),
    "no_command": ('[job "x"]\ninterval = 1m\n', 3),
    "notif": ('[job "x"]\ncommand = a\nnotif_on_success = nobody\n', 5),
    "credential": ('[notif "n"]\nsmtp_server = smtps://h\nfrom = a@b\nto = c@d\nsmtp_password = $KARAJO_TEST_UNSET\n', 7),
    "escape": ('[job "x"]\ncommand = echo "\\q"\n', 4),
    "listen": ("listen_address = nowhere\n", 3),
}


class BrokenConfigTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_broken_configs_exit_fast(self) -> None:
        """
        Each broken config makes twistd exit non-zero at once, printing
        FILE:LINE: reason and no traceback.  "At once" is a bound against a
        hang (the daemon starting anyway, or waiting on something), not a
        speed figure: a loaded two-core machine takes over 2 s to import
        Twisted at times.  How fast it is lives in bench/, not here.
        """
        # Two at a time, as the machine has two cores: each one's own
        # start-to-exit time is what the operator waits for.
        semaphore = defer.DeferredSemaphore(2)

        async def one(name: str, text: str, line: int) -> None:
            path = config_tree(os.path.join(self.mktemp(), name), text)
            await semaphore.acquire()
            try:
                started = reactor.seconds()
                proto, _ = start_twistd(path)
                code = await proto.ended
                elapsed = reactor.seconds() - started
            finally:
                semaphore.release()
            out = proto.out.decode()
            self.assertNotEqual(code, 0, name)
            self.assertIn(f"{path}:{line}: ", out, name)
            self.assertNotIn("Traceback", out, name)
            self.assertLess(elapsed, 10.0, name)

        self.assertGreaterEqual(len(BROKEN), 10)
        results = yield defer.DeferredList(
            [defer.ensureDeferred(one(n, t, ln)) for n, (t, ln) in BROKEN.items()],
            consumeErrors=True,
        )
        for ok, result in results:
            if not ok:
                result.raiseException()

    @defer.inlineCallbacks
    def test_missing_config(self) -> None:
        """A missing main file is an error naming the file."""
        path = os.path.join(os.path.abspath(self.mktemp()), "karajo.conf")
        proto, _ = start_twistd(path)
        code = yield proto.ended
        self.assertNotEqual(code, 0)
        self.assertIn(f"{path}: no such file", proto.out.decode())


class StartupErrorTests(TestCase):
    """What the config cannot show: the port taken, dir_base not creatable."""

    timeout = 60

    async def fails_cleanly(self, path: str, expected: str) -> None:
        proto, _ = start_twistd(path)
        code = await proto.ended
        out = proto.out.decode()
        self.assertEqual(code, 1, out)
        self.assertIn(f"karajo: {expected}", out)
        self.assertNotIn("Traceback", out)
        self.assertNotIn("karajo is ready", out)

    async def test_address_in_use(self) -> None:
        """The daemon does not run on without its HTTP side: it exits 1."""
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        self.addCleanup(taken.close)
        port = taken.getsockname()[1]
        base = os.path.abspath(self.mktemp())
        path = config_tree(base, f"listen_address = 127.0.0.1:{port}\nsecret = s\n"
                                 '[job "i"]\ninterval = 1s\ncommand = echo hi\n')
        await self.fails_cleanly(path, f"cannot listen on 127.0.0.1:{port}: Address already in use")
        self.assertFalse(os.path.exists(os.path.join(base, "var", "log", "karajo", "job", "i")))

    async def test_dir_base_not_creatable(self) -> None:
        base = os.path.abspath(self.mktemp())
        path = config_tree(base, f"listen_address = 127.0.0.1:{free_port()}\n")
        with open(path, "a") as f:
            f.write("dir_base = /proc/karajo-cannot-exist\n")
        await self.fails_cleanly(
            path, "dir_base /proc/karajo-cannot-exist: cannot create /proc/karajo-cannot-exist:")


class StartTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_listens_within_5s(self) -> None:
        """A good config has the server listening within 5 s."""
        port = free_port()
        base = os.path.abspath(self.mktemp())
        path = config_tree(
            base,
            f"listen_address = 127.0.0.1:{port}\nsecret = s3cret\n"
            '[job "hello"]\npath = /hello\ncommand = echo hi\n',
        )
        proto, process = start_twistd(path, cwd=base)
        try:
            took = yield defer.ensureDeferred(wait_listening(port, 5.0))
            self.assertLess(took, 5.0)
            for _ in range(100):
                if b"karajo is ready" in proto.out:
                    break
                yield deferLater(reactor, 0.05, lambda: None)
        finally:
            process.signalProcess("TERM")
            code = yield proto.ended
        self.assertEqual(code, 0, proto.out.decode())

    @defer.inlineCallbacks
    def test_sigterm_with_running_jobs(self) -> None:
        """
        SIGTERM with 3 running jobs exits 0 within the grace period + 1 s,
        with 3 logs finalised as canceled and no process of theirs left.
        """
        port = free_port()
        base = os.path.abspath(self.mktemp())
        jobs = "".join(
            f'[job "sleeper{i}"]\ninterval = 1h\ncommand = \"echo start; sleep 60 & sleep 60\"\n'
            for i in range(3)
        )
        path = config_tree(
            base, f"listen_address = 127.0.0.1:{port}\nsecret = s\nmax_job_running = 3\n" + jobs
        )
        proto, process = start_twistd(path, cwd=base)
        self.addCleanup(lambda: proto.ended.called or process.signalProcess("KILL"))
        logs = [os.path.join(base, f"var/log/karajo/job/sleeper{i}/sleeper{i}.1") for i in range(3)]
        pgids = [os.path.join(base, f"var/run/karajo/job/sleeper{i}.pgid") for i in range(3)]
        for _ in range(200):
            if all(os.path.exists(p) for p in logs + pgids):
                break
            yield deferLater(reactor, 0.05, lambda: None)
        else:
            process.signalProcess("KILL")
            yield proto.ended
            self.fail("jobs did not start: " + proto.out.decode())
        groups = []
        for p in pgids:
            with open(p) as f:
                groups.append(int(f.read().split()[0]))
        started = reactor.seconds()
        process.signalProcess("TERM")
        code = yield proto.ended
        self.assertLess(reactor.seconds() - started, KILL_GRACE + 1)
        self.assertEqual(code, 0, proto.out.decode())
        for _i, log in enumerate(logs):
            with open(log + ".canceled", "rb") as f:
                self.assertIn(b"??? CANCELED: karajo is stopping", f.read())
        self.assertEqual([g for g in groups if group_members(g)], [])
