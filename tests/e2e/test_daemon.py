"""End to end: the installed twistd plugin as a real process."""

from __future__ import annotations

import os

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from ..helpers import config_tree, write
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
        Each broken config makes twistd exit non-zero within 2 s, printing
        FILE:LINE: reason and no traceback.
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
            self.assertLess(elapsed, 2.0, name)

        self.assertGreaterEqual(len(BROKEN), 10)
        results = yield defer.DeferredList(
            [defer.ensureDeferred(one(n, t, l)) for n, (t, l) in BROKEN.items()],
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
        finally:
            process.signalProcess("TERM")
            code = yield proto.ended
        self.assertIn("Server Shut Down", proto.out.decode())
