"""
End to end: SIGHUP reloads a real twistd daemon's configuration
(docs/behaviour.md, "Reloading").
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable

import treq
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from ..helpers import config_tree, write
from .daemon import free_port, start_twistd, wait_listening


async def eventually(check: Callable[[], object], timeout: float, what: str) -> None:
    """Poll C{check} (which may return a Deferred) until it is true."""
    start = reactor.seconds()
    while reactor.seconds() - start < timeout:
        result = check()
        if inspect.iscoroutine(result):
            result = defer.ensureDeferred(result)
        if isinstance(result, defer.Deferred):
            result = await result
        if result:
            return
        await deferLater(reactor, 0.1, lambda: None)
    raise AssertionError(f"not after {timeout}s: {what}")


class ReloadTests(TestCase):
    timeout = 90

    def log_dir(self, job: str) -> str:
        return os.path.join(self.base, "var", "log", "karajo", "job", job)

    def logs(self, job: str) -> list[str]:
        try:
            return sorted(os.listdir(self.log_dir(job)))
        except FileNotFoundError:
            return []

    def read_log(self, job: str, name: str) -> str:
        with open(os.path.join(self.log_dir(job), name)) as f:
            return f.read()

    async def api_jobs(self) -> dict:
        response = await treq.get(f"http://127.0.0.1:{self.port}/karajo/api/environment", persistent=False)
        body = json.loads(await response.content())
        return body["data"]["jobs"]

    async def metrics(self) -> str:
        response = await treq.get(f"http://127.0.0.1:{self.port}/karajo/metrics", persistent=False)
        return (await response.content()).decode()

    async def test_reload(self) -> None:
        self.port = free_port()
        self.base = base = os.path.abspath(self.mktemp())
        main = (
            f"listen_address = 127.0.0.1:{self.port}\nsecret = s\nmax_job_running = 4\n"
            '[job "keep"]\ninterval = 1s\ncommand = echo version-one\n'
        )
        path = config_tree(base, main, {
            # Starts at once (it never ran) and runs for a while.
            "job.d/slow.conf": '[job "slow"]\ninterval = 1h\n'
                               'command = "echo begin; sleep 4; echo the end"\n',
        })
        proto, process = start_twistd(path, cwd=base)
        self.addCleanup(lambda: proto.ended.called or process.signalProcess("KILL"))
        await wait_listening(self.port, 10)
        await eventually(lambda: b"karajo is ready" in proto.out, 10, "ready")
        await eventually(lambda: "slow.1" in self.logs("slow"), 10, "slow runs")
        await eventually(lambda: len(self.logs("keep")) >= 1, 10, "keep runs")
        jobs = await self.api_jobs()
        self.assertEqual(sorted(jobs), ["keep", "slow"])

        # Remove "slow" (running), change "keep"'s command, add "fresh".
        os.unlink(os.path.join(base, "etc", "karajo", "job.d", "slow.conf"))
        write(path, f"[karajo]\ndir_base = {base}\n"
              + main.replace("version-one", "version-two"))
        write(os.path.join(base, "etc", "karajo", "job.d", "fresh.conf"),
              '[job "fresh"]\ninterval = 1h\ncommand = echo fresh-output\n')
        counter_before = max(int(n.split(".")[1]) for n in self.logs("keep"))
        process.signalProcess("HUP")

        async def listed() -> bool:
            return sorted(await self.api_jobs()) == ["fresh", "keep"]

        await eventually(listed, 10, "the API lists the new jobs only")
        # The removed job's run was not interrupted: it ends with its log final.
        self.assertIn("slow.1", self.logs("slow"))
        await eventually(lambda: "slow.1.success" in self.logs("slow"), 10, "slow's run ends")
        self.assertIn("the end", self.read_log("slow", "slow.1.success"))
        # The new job runs.
        await eventually(lambda: "fresh.1.success" in self.logs("fresh"), 10, "fresh runs")
        self.assertIn("fresh-output", self.read_log("fresh", "fresh.1.success"))

        # The changed job's next run uses the new command; its counter continues.
        def new_command_ran() -> bool:
            return any(
                n.endswith(".success") and "version-two" in self.read_log("keep", n)
                for n in self.logs("keep")
            )

        await eventually(new_command_ran, 10, "keep runs its new command")
        counters = [int(n.split(".")[1]) for n in self.logs("keep")]
        self.assertGreater(max(counters), counter_before)
        self.assertEqual(len(counters), len(set(counters)))

        # A broken file: the running configuration stays, FILE:LINE: reason is logged.
        broken = os.path.join(base, "etc", "karajo", "job.d", "broken.conf")
        write(broken, '[job "broken"]\ninterval = 1 minute\ncommand = true\n')
        process.signalProcess("HUP")
        await eventually(lambda: f"{broken}:2: ".encode() in proto.out, 10,
                         "the error is logged")
        self.assertIn(b"configuration not reloaded", proto.out)
        self.assertEqual(sorted(await self.api_jobs()), ["fresh", "keep"])
        text = await self.metrics()
        self.assertRegex(text, r'karajo_config_reloads_total\{result="success"\} 1\.0')
        self.assertRegex(text, r'karajo_config_reloads_total\{result="failure"\} 1\.0')

        process.signalProcess("TERM")
        code = await proto.ended
        self.assertEqual(code, 0, proto.out.decode()[-3000:])
        self.assertNotIn(b"Traceback", proto.out)
