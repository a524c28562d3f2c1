"""
A command job's environment with real commands, and the secrecy of its
values: what a command sees (docs/behaviour.md, "What a command sees"), and
that the values of C{env} and C{env_file} appear nowhere karajo itself
writes: the API, the dashboard, C{karajo check}, config errors and
warnings, karajo's own log.
"""

from __future__ import annotations

import json
import os
import sys
import time

import treq
import treq.client
from twisted.internet import defer, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import eventAsText, globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

import karajo
from karajo.config import load_environment
from karajo.errors import ConfigError
from karajo.joblog import LogStore
from karajo.paths import Paths
from karajo.process import SANE_PATH
from karajo.signature import sign
from karajo.work import CommandWork
from tests.helpers import config_tree, write
from tests.integration.served import serve

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(karajo.__file__)))

#: Distinctive values: none of them may show anywhere but in a command.
FILE_SECRET = "FiLe-SeCrEt-7731"
LINE_SECRET = "LiNe-SeCrEt-4402"
OVERRIDDEN_SECRET = "OvErRiDdEn-SeCrEt-9915"
DUPLICATE_SECRET = "DuPlIcAtE-SeCrEt-2268"
SECRETS = (FILE_SECRET, LINE_SECRET, OVERRIDDEN_SECRET, DUPLICATE_SECRET)
GLOBAL_SECRET = "global-s3cret"


def _client() -> treq.client.HTTPClient:
    return treq.client.HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))


class JobEnvTestCase(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        self.etc = os.path.join(self.base, "etc", "karajo")
        env_file = write(os.path.join(self.etc, "secrets", "deploy.env"), f"""
            # the deploy token
            DEPLOY_TOKEN="{FILE_SECRET}"
            SHARED={OVERRIDDEN_SECRET}
            TWICE={DUPLICATE_SECRET}
            TWICE={DUPLICATE_SECRET}-2
        """)
        os.chmod(env_file, 0o600)
        # Set in the daemon's (this test's) environment: it must not reach a command.
        os.environ["KARAJO_TEST_MARKER"] = "daemon-only"
        self.addCleanup(os.environ.pop, "KARAJO_TEST_MARKER")
        self.config = config_tree(self.base, f"""
            secret = {GLOBAL_SECRET}
            sign_max_age = 5m

            [job "printenv"]
            path = /printenv
            env_file = secrets/deploy.env
            env = SHARED={LINE_SECRET}
            env = PLAIN=with spaces and = sign
            command = env | sort

            [job "quiet"]
            env_file = secrets/deploy.env
            env = SHARED={LINE_SECRET}
            command = test -n "$DEPLOY_TOKEN" && test -n "$SHARED"
        """)

    async def daemon(self):
        return await serve(self, self.config)

    async def get(self, url: str) -> bytes:
        response = await _client().get(url)
        body = await response.content()
        self.assertEqual(response.code, 200, body[:200])
        return body

    async def log_of(self, service, job_id: str, counter: int) -> str:
        _, content = service.jobs[job_id].runner.store.read(counter)
        return content.decode()


class CommandEnvironmentTests(JobEnvTestCase):
    async def test_exactly_these_names(self) -> None:
        """
        PATH, the four KARAJO_* names and the job's own: nothing of the
        daemon's environment (HOME, the test's marker); env lines override
        the file; values arrive byte for byte.
        """
        _, service, _ = await self.daemon()
        runner = service.jobs["printenv"].runner
        runner.trigger(None)
        await runner.when_idle()
        text = await self.log_of(service, "printenv", 1)
        seen = {}
        for line in text.splitlines():
            body = line.split(" job: printenv: ", 1)[1]
            if body[:3] in ("===", "---", "!!!"):
                continue
            name, _, value = body.partition("=")
            seen[name] = value
        self.assertEqual(sorted(seen), [
            "DEPLOY_TOKEN", "KARAJO_JOB_COUNTER", "KARAJO_JOB_ID", "KARAJO_RUN_ATTEMPT",
            "KARAJO_TRIGGER", "PATH", "PLAIN", "PWD", "SHARED", "TWICE",
        ])
        # PWD is the shell's own (it sets it on cd into the job's directory).
        self.assertEqual(seen["PWD"], Paths(self.base).work_dir("job", "printenv"))
        self.assertEqual(seen["PATH"], SANE_PATH)
        self.assertEqual(seen["DEPLOY_TOKEN"], FILE_SECRET)
        self.assertEqual(seen["SHARED"], LINE_SECRET)
        self.assertEqual(seen["TWICE"], DUPLICATE_SECRET + "-2")
        self.assertEqual(seen["PLAIN"], "with spaces and = sign")
        self.assertEqual(
            (seen["KARAJO_JOB_ID"], seen["KARAJO_JOB_COUNTER"], seen["KARAJO_RUN_ATTEMPT"],
             seen["KARAJO_TRIGGER"]),
            ("printenv", "1", "1", "manual"),
        )

    async def test_trigger_names(self) -> None:
        """A webhook run says webhook, and the counter follows the run."""
        _, service, url = await self.daemon()
        body = json.dumps({"_karajo_epoch": int(time.time())}).encode()
        response = await _client().post(
            url + "/karajo/api/job_exec/run/printenv", data=body,
            headers={"Content-Type": "application/json",
                     "X-Karajo-Sign": sign(GLOBAL_SECRET, body)},
        )
        self.assertEqual(response.code, 200, await response.content())
        await service.jobs["printenv"].runner.when_idle()
        text = await self.log_of(service, "printenv", 1)
        self.assertIn("printenv: KARAJO_TRIGGER=webhook\n", text)
        self.assertIn("printenv: KARAJO_JOB_COUNTER=1\n", text)


class RecordTests(TestCase):
    """CommandWork reads trigger and attempt from the run's record, as LogStore.begin got them."""

    timeout = 30

    async def test_retry_attempt(self) -> None:
        base = os.path.abspath(self.mktemp())
        store = LogStore(
            os.path.join(base, "log"), "j", clock=reactor,
            run_in_thread=lambda f, *a: defer.maybeDeferred(f, *a),
        )
        work = CommandWork(reactor, reactor, ("env | sort",), base, job_id="j",
                           env=(("A", "1"),))
        runlog = store.begin(7, trigger="retry", attempt=3)
        await work.run(runlog, 7, None)
        await runlog.finish("success")
        _, content = store.read(7)
        lines = [line.split(" job: j: ", 1)[1] for line in content.decode().splitlines()]
        self.assertEqual(lines[1:], [
            "A=1", "KARAJO_JOB_COUNTER=7", "KARAJO_JOB_ID=j", "KARAJO_RUN_ATTEMPT=3",
            "KARAJO_TRIGGER=retry", f"PATH={SANE_PATH}", f"PWD={base}",
        ])


class SecrecyTests(JobEnvTestCase):
    """Run jobs with secret env values, then look for the values everywhere karajo writes."""

    def assertNoSecret(self, where: str, text: str | bytes) -> None:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        for secret in SECRETS:
            self.assertNotIn(secret, text, f"{secret} leaked into {where}")

    async def test_values_appear_nowhere(self) -> None:
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        loaded, service, url = await self.daemon()
        # The config's warnings (TWICE set twice in the file) name it, not its values.
        self.assertTrue(any("TWICE is set again" in w for w in loaded.warnings), loaded.warnings)
        for warning in loaded.warnings:
            self.assertNoSecret("a config warning", warning)

        runner = service.jobs["quiet"].runner
        runner.trigger(None)
        await runner.when_idle()
        self.assertEqual(runner.last_status, "success", await self.log_of(service, "quiet", 1))

        environment = await self.get(url + "/karajo/api/environment")
        self.assertNoSecret("the environment JSON", environment)
        jobs = json.loads(environment)["data"]["jobs"]
        self.assertEqual(jobs["quiet"]["env_names"], ["DEPLOY_TOKEN", "SHARED", "TWICE"])
        self.assertEqual(jobs["printenv"]["env_names"],
                         ["DEPLOY_TOKEN", "PLAIN", "SHARED", "TWICE"])
        for job_id in ("quiet", "printenv"):
            self.assertNoSecret(f"the Job JSON of {job_id}",
                                await self.get(f"{url}/karajo/api/job_exec?id={job_id}"))
            self.assertNoSecret(f"the job page of {job_id}",
                                await self.get(f"{url}/karajo/app/job?kind=job&id={job_id}"))
        self.assertNoSecret("the dashboard", await self.get(url + "/karajo/app/"))
        self.assertNoSecret("the run log of quiet",
                            await self.get(f"{url}/karajo/api/job_exec/log?id=quiet&counter=1"))
        self.assertNoSecret("the log page of quiet",
                            await self.get(f"{url}/karajo/app/log?kind=job&id=quiet&counter=1"))
        self.assertNoSecret("the OpenAPI document",
                            await self.get(url + "/karajo/api/openapi.json"))

        out, err, code = await getProcessOutputAndValue(
            sys.executable, ("-m", "karajo.cli", "check", "--config", self.config),
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": CHECKOUT, "LANG": "C.UTF-8"},
            reactor=reactor,
        )
        self.assertEqual(code, 0, err)
        self.assertIn(b"env names", out)
        self.assertIn(b"DEPLOY_TOKEN, SHARED, TWICE", out)
        self.assertNoSecret("karajo check's output", out)
        self.assertNoSecret("karajo check's warnings", err)

        await service.stopService()
        self.assertTrue(events)
        for event in events:
            self.assertNoSecret("karajo's log", eventAsText(event))
            self.assertNoSecret("karajo's log event", repr(event))

    def test_config_errors(self) -> None:
        """Every kind of bad env or env_file line fails the config without its value."""
        env_file = os.path.join(self.etc, "secrets", "deploy.env")
        for bad_file in (f"{FILE_SECRET}\n", f"KARAJO_X={FILE_SECRET}\n", f"1X={FILE_SECRET}\n",
                         f"{FILE_SECRET} x={FILE_SECRET}\n"):
            write(env_file, bad_file)
            with self.assertRaises(ConfigError) as e:
                load_environment(self.config)
            self.assertEqual(e.exception.line, 1)
            self.assertNoSecret("a config error", str(e.exception))
        os.chmod(env_file, 0o644)
        with self.assertRaises(ConfigError) as e:
            load_environment(self.config)
        self.assertIn("readable by others", str(e.exception))
        self.assertNoSecret("a config error", str(e.exception))
        for bad_line in (LINE_SECRET, f"KARAJO_TRIGGER={LINE_SECRET}", f"{LINE_SECRET}-x=1"):
            os.chmod(env_file, 0o600)
            write(env_file, "A=1\n")
            config = config_tree(self.base, f'[job "j"]\ncommand = true\nenv = {bad_line}\n')
            with self.assertRaises(ConfigError) as e:
                load_environment(config)
            self.assertEqual(e.exception.line, 5)
            self.assertNoSecret("a config error", str(e.exception))

    async def test_check_prints_errors_without_values(self) -> None:
        """karajo check on a bad env line: exit 2, file:line, no value."""
        config = config_tree(self.base, f'[job "j"]\ncommand = true\nenv = KARAJO_JOB_ID={LINE_SECRET}\n')
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ("-m", "karajo.cli", "check", "--config", config),
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": CHECKOUT, "LANG": "C.UTF-8"},
            reactor=reactor,
        )
        self.assertEqual(code, 2, (out, err))
        self.assertIn(f"{config}:5: env: KARAJO_JOB_ID is reserved".encode(), err)
        self.assertNoSecret("karajo check", out + err)

