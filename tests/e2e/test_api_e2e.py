"""
End to end over a real loopback socket: the installed twistd plugin, the
README's curl example verbatim, and a JobHttp that triggers a webhook
job of the same daemon through a relative URL.
"""

from __future__ import annotations

import json
import os

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from ..helpers import config_tree
from .daemon import free_port, start_twistd, wait_listening

README_CURL = """\
PAYLOAD="{\\"_karajo_epoch\\":$(date +%s)}"
SIGN=$(printf %s "$PAYLOAD" | openssl dgst -sha256 -hmac s3cret -hex | sed 's/.* //')
curl -H "X-Karajo-Sign: $SIGN" --json "$PAYLOAD" http://127.0.0.1:31937/karajo/api/job_exec/run/hello-world
"""


class DaemonTestCase(TestCase):
    timeout = 60

    async def start(self, main: str) -> tuple[str, int]:
        port = free_port()
        base = os.path.abspath(self.mktemp())
        path = config_tree(base, f"listen_address = 127.0.0.1:{port}\nsecret = s3cret\n" + main)
        proto, process = start_twistd(path, cwd=base)

        async def stop() -> None:
            if not proto.ended.called:
                process.signalProcess("TERM")
            await proto.ended

        self.addCleanup(lambda: defer.ensureDeferred(stop()))
        self.output = proto.out
        await wait_listening(port, 5.0)
        return base, port

    async def wait_for(self, path: str, seconds: float = 10.0) -> None:
        for _ in range(int(seconds / 0.05)):
            if os.path.exists(path):
                return
            await deferLater(reactor, 0.05, lambda: None)
        self.fail(f"{path} did not appear; daemon said:\n{self.output.decode()}")


class CurlExampleTests(DaemonTestCase):
    async def test_spec_curl_example(self) -> None:
        """The README's curl one-liner, verbatim but for the port, triggers the job."""
        base, port = await self.start(
            '[job "hello-world"]\npath = /hello-world\ncommand = echo "Hello world"\n'
        )
        script = README_CURL.replace("31937", str(port))
        out, err, code = await getProcessOutputAndValue("/bin/sh", ["-c", script], env=os.environ)
        self.assertEqual(code, 0, err)
        reply = json.loads(out)
        self.assertEqual(reply["code"], 200, reply)
        self.assertEqual(reply["data"]["id"], "hello-world")
        log = os.path.join(base, "var/log/karajo/job/hello-world/hello-world.1.success")
        await self.wait_for(log)
        with open(log, "rb") as f:
            self.assertIn(b"hello-world: Hello world\n", f.read())

    async def test_forged_signature(self) -> None:
        """A forged signature over the wire is a JSON 403, and nothing runs."""
        base, port = await self.start('[job "hello-world"]\npath = /hello-world\ncommand = true\n')
        script = README_CURL.replace("31937", str(port)).replace("-hmac s3cret", "-hmac wrong")
        out, err, code = await getProcessOutputAndValue("/bin/sh", ["-c", script], env=os.environ)
        reply = json.loads(out)
        self.assertEqual((reply["code"], reply["name"]), (403, "ERR_JOB_FORBIDDEN"))
        # No run: the job's log directory (made at its first run) does not even exist.
        self.assertFalse(os.path.exists(os.path.join(base, "var/log/karajo/job/hello-world")))


class JobHttpLoopTests(DaemonTestCase):
    async def test_job_http_triggers_local_webhook(self) -> None:
        """
        A JobHttp with a relative URL signs its request like the example
        config (GitHub header) and makes the webhook job of the same daemon run.
        """
        base, port = await self.start(
            '[job "webhook-github"]\nauth_kind = github\nsecret = s3cret\n'
            'path = /webhook-github\ncommand = echo "Webhook using github authentication"\n'
            '[job.http "interval-90s"]\nsecret = s3cret\nheader_sign = X-Hub-Signature-256\n'
            "interval = 90s\nhttp_method = POST\n"
            "http_url = /karajo/api/job_exec/run/webhook-github\nhttp_request_type = json\n"
        )
        await self.wait_for(os.path.join(base, "var/log/karajo/job_http/interval-90s/interval-90s.1.success"))
        await self.wait_for(os.path.join(base, "var/log/karajo/job/webhook-github/webhook-github.1.success"))
        with open(os.path.join(base, "var/log/karajo/job_http/interval-90s/interval-90s.1.success"), "rb") as f:
            content = f.read()
        self.assertIn(b"job_http: interval-90s: --- POST http://127.0.0.1:", content)
        self.assertIn(b"200 OK", content)
