"""
Trigger rules and the payload a command gets, end to end: a real daemon
(services and site on a real socket), GitHub-signed requests, real
commands (docs/behaviour.md, "What a command sees"; docs/configuration.md,
"Trigger rules").
"""

from __future__ import annotations

import json
import os
import uuid

import treq
import treq.client
from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from karajo.config import load_environment
from karajo.paths import Paths
from karajo.server import build_service
from karajo.service import thread_runner
from karajo.signature import sign
from karajo.web.site import build_site
from tests.helpers import config_tree

SECRET = "gh-s3cret"
MAIN = "refs/heads/main"


def _client() -> treq.client.HTTPClient:
    return treq.client.HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))


def push(ref: str = MAIN, **extra) -> bytes:
    return json.dumps({"ref": ref, "repository": {"full_name": "o/r"},
                       "commits": [{"id": "c1"}], **extra}).encode()


class DaemonTestCase(TestCase):
    timeout = 60
    main = ""

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        self.config = config_tree(self.base, "secret = global-s3cret\n" + self.main)

    async def daemon(self):
        loaded = load_environment(self.config)
        service = build_service(loaded, reactor)
        service.removeService(service.getServiceNamed("http"))
        service.startService()
        await service.when_ready()
        port = reactor.listenTCP(
            0, build_site(service, reactor, thread_runner(reactor)), interface="127.0.0.1"
        )

        async def stop() -> None:
            await port.stopListening()
            if service.running:
                await service.stopService()

        self.addCleanup(stop)
        self.service = service
        self.url = f"http://127.0.0.1:{port.getHost().port}"
        return service

    async def github(self, path: str, body: bytes, event: str = "push", delivery: str | None = None,
                     content_type: str = "application/json"):
        response = await _client().post(
            self.url + "/karajo/api/job_exec/run/" + path, data=body,
            headers={
                "Content-Type": content_type,
                "X-GitHub-Event": event,
                "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
                "X-Hub-Signature-256": "sha256=" + sign(SECRET, body),
            },
        )
        return response.code, json.loads(await response.content())

    def log_of(self, job_id: str, counter: int) -> str:
        _, content = self.service.jobs[job_id].runner.store.read(counter)
        return content.decode()

    async def metrics(self) -> str:
        response = await _client().get(self.url + "/karajo/metrics")
        return (await response.content()).decode()


class TriggerRuleTests(DaemonTestCase):
    main = f"""
        [job "deploy"]
        path = /deploy
        auth_kind = github
        secret = {SECRET}
        match = header:X-GitHub-Event == push
        match = ref == {MAIN}
        command = echo deployed
    """

    async def test_matching_push_runs(self) -> None:
        await self.daemon()
        code, answer = await self.github("deploy", push())
        self.assertEqual((code, answer["message"]), (200, "job started"))
        runner = self.service.jobs["deploy"].runner
        await runner.when_idle()
        self.assertEqual(runner.counter, 1)
        self.assertIn("deployed", self.log_of("deploy", 1))

    async def test_not_matched_starts_nothing(self) -> None:
        """
        A ping, or a push to another branch: 200, the first failed rule,
        the Job; no counter, no log, counted in the metrics.
        """
        await self.daemon()
        runner = self.service.jobs["deploy"].runner
        code, answer = await self.github("deploy", b'{"zen": "hi", "hook_id": 1}', event="ping")
        self.assertEqual(code, 200)
        self.assertEqual(answer["code"], 200)
        self.assertEqual(answer["message"], "not matched: header:X-GitHub-Event == push")
        self.assertEqual(answer["data"]["id"], "deploy")
        code, answer = await self.github("deploy", push("refs/heads/dev"))
        self.assertEqual(answer["message"], f"not matched: ref == {MAIN}")
        self.assertEqual(answer["data"]["logs"], [])
        self.assertEqual(runner.counter, 0)
        self.assertFalse(runner.active)
        log_dir = Paths(self.base).log_dir("job", "deploy")
        self.assertEqual(os.listdir(log_dir) if os.path.isdir(log_dir) else [], [])
        self.assertIn('karajo_webhook_not_matched_total{job="deploy",kind="job"} 2.0',
                      await self.metrics())

    async def test_forged_signature_before_rules(self) -> None:
        """Rules are never read for an unsigned request: 403, not 'not matched'."""
        await self.daemon()
        response = await _client().post(
            self.url + "/karajo/api/job_exec/run/deploy", data=push("refs/heads/dev"),
            headers={"X-GitHub-Event": "ping", "X-GitHub-Delivery": "d",
                     "X-Hub-Signature-256": "sha256=" + "0" * 64},
        )
        self.assertEqual(response.code, 403)

    async def test_not_matched_leaves_no_replay_entry(self) -> None:
        """
        The same signed body and delivery first turned away by the rules
        (ping), then sent as a push: accepted, not refused as a replay.
        The matching one sent again is a replay.
        """
        await self.daemon()
        body = push()
        code, answer = await self.github("deploy", body, event="ping", delivery="d-1")
        self.assertTrue(answer["message"].startswith("not matched"), answer)
        code, answer = await self.github("deploy", body, event="push", delivery="d-1")
        self.assertEqual((code, answer["message"]), (200, "job started"))
        await self.service.jobs["deploy"].runner.when_idle()
        code, answer = await self.github("deploy", body, event="push", delivery="d-1")
        self.assertEqual((code, answer["name"]), (403, "ERR_REQUEST_REPLAYED"))
