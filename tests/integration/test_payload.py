"""
Trigger rules and the payload a command gets, end to end: a real daemon
(services and site on a real socket), GitHub-signed requests, real
commands (docs/behaviour.md, "What a command sees"; docs/configuration.md,
"Trigger rules").
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import uuid

import treq
import treq.client
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from karajo.paths import Paths
from karajo.signature import sign
from karajo.work import clear_payload, remove_payload, write_payload
from tests.helpers import config_tree
from tests.integration.served import serve

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
        _, self.service, self.url = await serve(self, self.config)
        return self.service

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

    async def test_malformed_body_refused_before_rules(self) -> None:
        """A signed body starting with '{' that is no JSON object is 400, as without rules."""
        await self.daemon()
        code, answer = await self.github("deploy", b'{"ref": ')
        self.assertEqual((code, answer["name"]), (400, "ERR_INVALID_PARAMETER"))

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


class PayloadTests(DaemonTestCase):
    main = f"""
        [job "echo"]
        path = /echo
        auth_kind = github
        secret = {SECRET}
        retry = 1
        retry_delay = 1s
        payload_env = REF=ref
        payload_env = EVENT=header:X-GitHub-Event
        payload_env = REPO=repository.full_name
        payload_env = FIRST=commits.0.id
        payload_env = COMMITS=commits
        payload_env = FORCED=forced
        payload_env = NOPE=no.such.path
        payload_env = FIELD=form:field
        command = echo \\"ref=$REF\\"
        command = echo ref-unquoted=$REF
        command = echo \\"event=$EVENT repo=$REPO first=$FIRST commits=$COMMITS forced=$FORCED\\"
        command = echo \\"nope=[$NOPE] field=[$FIELD] type=$KARAJO_PAYLOAD_TYPE\\"
        command = echo \\"file=${{KARAJO_PAYLOAD_FILE-unset}}\\"
        command = stat -c mode=%a \\"${{KARAJO_PAYLOAD_FILE:-/dev/null}}\\"
        command = cp \\"${{KARAJO_PAYLOAD_FILE:-/dev/null}}\\" copy-$KARAJO_RUN_ATTEMPT
        command = test \\"$FIELD\\" != fail

        [job "slow"]
        path = /slow
        auth_kind = github
        secret = {SECRET}
        command = sleep 30
    """

    def work_dir(self) -> str:
        return Paths(self.base).work_dir("job", "echo")

    def payload_file(self) -> str:
        return Paths(self.base).payload_file("job", "echo")

    async def test_file_and_variables(self) -> None:
        """
        The file holds the signed body byte for byte, mode 0600, and is
        empty after the run; each selector's value as documented.
        """
        await self.daemon()
        body = push(forced=False)
        code, answer = await self.github("echo", body)
        self.assertEqual((code, answer["message"]), (200, "job started"), answer)
        await self.service.jobs["echo"].runner.when_idle()
        text = self.log_of("echo", 1)
        self.assertIn(f"echo: ref={MAIN}\n", text)
        self.assertIn('echo: event=push repo=o/r first=c1 commits=[{"id":"c1"}] forced=false\n', text)
        self.assertIn("echo: nope=[] field=[] type=application/json\n", text)
        self.assertIn(f"echo: file={self.payload_file()}\n", text)
        self.assertIn("echo: mode=600\n", text)
        with open(os.path.join(self.work_dir(), "copy-1"), "rb") as f:
            self.assertEqual(f.read(), body)
        self.assertEqual(os.path.getsize(self.payload_file()), 0)
        self.assertEqual(self.service.jobs["echo"].runner.last_status, "success")

    async def test_run_directory_removed_between_runs(self) -> None:
        """The payload and pid files' directory, removed while idle, is made again by the next run."""
        await self.daemon()
        runner = self.service.jobs["echo"].runner
        for n in (1, 2):
            shutil.rmtree(os.path.dirname(self.payload_file()))
            code, answer = await self.github("echo", push(n=n))
            self.assertEqual(code, 200, answer)
            await runner.when_idle()
            self.assertEqual(runner.last_status, "success", self.log_of("echo", n))
            self.assertEqual(os.path.getsize(self.payload_file()), 0)

    async def test_no_command_injection(self) -> None:
        """A payload of shell syntax stays text, quoted or not."""
        await self.daemon()
        for ref in ("$(touch pwned)", "`touch pwned2`", "x; touch pwned3", "'\"$(touch pwned4)"):
            code, answer = await self.github("echo", push(ref))
            self.assertEqual(code, 200, answer)
            await self.service.jobs["echo"].runner.when_idle()
            counter = self.service.jobs["echo"].runner.counter
            text = self.log_of("echo", counter)
            self.assertIn(f"echo: ref={ref}\n", text)
        self.assertEqual(sorted(n for n in os.listdir(self.work_dir()) if "pwned" in n), [])

    async def test_values_a_variable_cannot_hold(self) -> None:
        """A NUL is dropped, a lone surrogate becomes '?': the run still starts."""
        await self.daemon()
        body = b'{"ref": "a\\u0000b\\ud800c"}'
        code, answer = await self.github("echo", body)
        self.assertEqual(code, 200, answer)
        runner = self.service.jobs["echo"].runner
        await runner.when_idle()
        self.assertIn("echo: ref=ab?c\n", self.log_of("echo", 1))
        self.assertEqual(runner.last_status, "success")

    async def test_no_payload_without_webhook_succeeds(self) -> None:
        await self.daemon()
        runner = self.service.jobs["echo"].runner
        runner.trigger(None)
        await runner.when_idle()
        self.assertEqual(runner.last_status, "success")

    async def test_emptied_after_cancel(self) -> None:
        await self.daemon()
        path = Paths(self.base).payload_file("job", "slow")
        code, answer = await self.github("slow", push())
        self.assertEqual(code, 200, answer)
        runner = self.service.jobs["slow"].runner
        while not runner.executing:
            await deferLater(reactor, 0.05)
        while not (os.path.exists(path) and os.path.getsize(path)):
            await deferLater(reactor, 0.05)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        runner.cancel()
        await runner.when_idle()
        self.assertEqual(runner.last_status, "canceled")
        self.assertEqual(os.path.getsize(path), 0)

    async def test_form_body(self) -> None:
        await self.daemon()
        body = b"field=a+b%21&ref=ignored"
        code, answer = await self.github("echo", body, content_type="application/x-www-form-urlencoded")
        self.assertEqual(code, 200, answer)
        await self.service.jobs["echo"].runner.when_idle()
        text = self.log_of("echo", 1)
        self.assertIn("echo: nope=[] field=[a b!] type=application/x-www-form-urlencoded\n", text)
        self.assertIn("echo: ref=\n", text)

    async def test_retry_gets_the_payload_again(self) -> None:
        await self.daemon()
        body = b"field=fail"
        code, answer = await self.github("echo", body, content_type="application/x-www-form-urlencoded")
        self.assertEqual(code, 200, answer)
        runner = self.service.jobs["echo"].runner
        while runner.counter < 2 or runner.active or runner.retry_pending:
            await deferLater(reactor, 0.1)
        for attempt in (1, 2):
            with open(os.path.join(self.work_dir(), f"copy-{attempt}"), "rb") as f:
                self.assertEqual(f.read(), body)
        self.assertIn("echo: file=" + self.payload_file(), self.log_of("echo", 2))
        self.assertEqual(os.path.getsize(self.payload_file()), 0)

    async def test_no_payload_without_webhook(self) -> None:
        """run now: no KARAJO_PAYLOAD_*, every payload_env name empty."""
        await self.daemon()
        runner = self.service.jobs["echo"].runner
        runner.trigger(None)
        await runner.when_idle()
        text = self.log_of("echo", 1)
        self.assertIn("echo: ref=\n", text)
        self.assertIn("echo: file=unset\n", text)
        self.assertIn("echo: nope=[] field=[] type=\n", text)

    async def test_leftover_removed_at_start(self) -> None:
        """A crash's payload file is gone once the daemon is ready."""
        path = self.payload_file()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(b'{"secret": "left"}')
        await self.daemon()
        self.assertFalse(os.path.exists(path))


class PayloadFileTests(TestCase):
    """
    The job's payload file is made once and rewritten in place (no file
    created per run), yet never followed nor written through when
    something else is put at its name.
    """

    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir, mode=0o700)
        self.path = os.path.join(self.dir, "job.payload")

    def write(self, body: bytes) -> None:
        clear_payload(write_payload(self.path, body))

    def test_rewritten_in_place(self) -> None:
        fd = write_payload(self.path, b"first body")
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"first body")
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        clear_payload(fd)
        inode = os.stat(self.path).st_ino
        self.assertEqual(os.path.getsize(self.path), 0)
        fd = write_payload(self.path, b"2nd")
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"2nd")
        clear_payload(fd)
        self.assertEqual(os.stat(self.path).st_ino, inode)

    def test_directory_made_when_missing(self) -> None:
        """An operator removed the directory: it is made again, private."""
        path = os.path.join(self.dir, "gone", "job.payload")
        clear_payload(write_payload(path, b"body"))
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode), 0o700)
        self.assertEqual(os.path.getsize(path), 0)

    def test_leftover_emptied_and_mode_restored(self) -> None:
        with open(self.path, "wb") as f:
            f.write(b"a much longer body a crash left behind")
        os.chmod(self.path, 0o644)
        fd = write_payload(self.path, b"short")
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"short")
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        clear_payload(fd)

    def test_link_not_followed(self) -> None:
        target = os.path.join(self.dir, "target")
        with open(target, "wb") as f:
            f.write(b"keep")
        os.symlink(target, self.path)
        self.write(b"body")
        self.assertFalse(os.path.islink(self.path))
        with open(target, "rb") as f:
            self.assertEqual(f.read(), b"keep")

    def test_second_name_not_written_through(self) -> None:
        other = os.path.join(self.dir, "other")
        with open(other, "wb") as f:
            f.write(b"keep")
        os.link(other, self.path)
        self.write(b"body")
        with open(other, "rb") as f:
            self.assertEqual(f.read(), b"keep")
        self.assertNotEqual(os.stat(other).st_ino, os.stat(self.path).st_ino)

    def test_fifo_does_not_block(self) -> None:
        os.mkfifo(self.path, 0o600)
        self.write(b"body")
        self.assertTrue(stat.S_ISREG(os.lstat(self.path).st_mode))

    def test_remove_says_whether_a_payload_was_left(self) -> None:
        self.assertFalse(remove_payload(self.path))
        self.write(b"body")
        self.assertFalse(remove_payload(self.path))  # emptied by its run: nothing left
        self.assertFalse(os.path.exists(self.path))
        os.close(write_payload(self.path, b"body"))  # a crash: never emptied
        self.assertTrue(remove_payload(self.path))
