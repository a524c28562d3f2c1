"""
API fuzz: schemathesis (v4 CLI, in a subprocess so trial's reactor keeps
running) against a live daemon, from the daemon's own OpenAPI document at
C{/karajo/api/openapi.json}.

The daemon has a user, so every route needs a session: the test logs in and
hands schemathesis the session cookie and the CSRF token, plus real job ids
and a real webhook path (with a chance of random ones), so requests get past
"not found" and the 200 answers are checked against their schema too.

Checked: no 5xx (C{not_a_server_error}) and every response as documented:
status code, content type, headers and body schema.  Logout is left out (it
would end the session the rest depends on).
"""

from __future__ import annotations

import os
import re
import sys

import treq
from twisted.internet import defer
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase

from .harness import LONG, Daemon, report, scale

CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_headers_conformance,response_schema_conformance"
)

CONFIG = """
max_job_running = 2
[job "hello"]
path = /hello
command = echo hi
[job "tick"]
interval = 1m
command = "echo tick; sleep 0.2"
[job.http "ping"]
interval = 1m
http_url = /karajo/api/environment
"""

SCHEMATHESIS_TOML = """
[headers]
Cookie = "karajo_session={session}"

[dictionaries.exec_ids]
values = ["hello", "tick"]
[dictionaries.http_ids]
values = ["ping"]
[dictionaries.csrf]
values = ["{csrf}"]

[[operations]]
include-path-regex = "^/karajo/api/job_exec"
parameters = {{ "query.id" = {{ dictionary = "exec_ids", probability = 0.8 }}, "body.id" = {{ dictionary = "exec_ids", probability = 0.8 }}, "path.path" = "hello", "header.X-Karajo-CSRF" = {{ dictionary = "csrf", probability = 0.9 }} }}

[[operations]]
include-path-regex = "^/karajo/api/job_http"
parameters = {{ "query.id" = {{ dictionary = "http_ids", probability = 0.8 }}, "header.X-Karajo-CSRF" = {{ dictionary = "csrf", probability = 0.9 }} }}
"""


def schemathesis_cli() -> str:
    try:
        import schemathesis  # noqa: F401
    except ImportError:
        raise SkipTest("schemathesis is not installed (pip install 'schemathesis>=4,<5')") from None
    path = os.path.join(os.path.dirname(sys.executable), "st")
    if not os.access(path, os.X_OK):
        raise SkipTest(f"schemathesis is installed but its CLI {path} is not")
    return path


class ApiFuzzTests(TestCase):
    timeout = 1800 if LONG else 120

    @defer.inlineCallbacks
    def test_schemathesis(self):
        yield defer.ensureDeferred(self.fuzz())

    async def fuzz(self) -> None:
        st = schemathesis_cli()
        import bcrypt

        examples = scale(50, 1000)
        base = os.path.abspath(self.mktemp())
        password = b"fuzz-password"
        hashed = bcrypt.hashpw(password, bcrypt.gensalt(4)).decode()
        daemon = Daemon(base, CONFIG, {"user.conf": f'[user "admin"]\npassword = {hashed}\n'})
        self.addCleanup(lambda: defer.ensureDeferred(daemon.cleanup()))
        await daemon.start()

        response = await treq.post(
            daemon.url + "/karajo/api/auth/login",
            data={"name": "admin", "password": password.decode()},
            persistent=False,
        )
        login = await response.json()
        self.assertEqual(response.code, 200, login)
        session = response.cookies()["karajo_session"]
        toml = os.path.join(base, "schemathesis.toml")
        with open(toml, "w") as f:
            f.write(SCHEMATHESIS_TOML.format(session=session, csrf=login["data"]["csrf"]))

        seed = os.environ.get("KARAJO_RELIABILITY_SEED", "1")
        ndjson = os.path.join(base, "schemathesis.ndjson")
        args = [
            "--no-color", "--config-file", toml,
            "run", daemon.url + "/karajo/api/openapi.json",
            "--checks", CHECKS,
            "--exclude-path", "/karajo/api/auth/logout",
            "--max-examples", str(examples),
            "--seed", seed,
            "--workers", "1",
            "--request-timeout", "10",
            "--report", "ndjson", "--report-ndjson-path", ndjson,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS_")}
        out, err, code = await getProcessOutputAndValue(st, args, env=env, path=base)
        text = (out + err).decode("utf-8", "replace")
        code_500 = code_other = 0
        with open(ndjson, encoding="utf-8") as f:
            for line in f:
                for status in re.findall(r'"status_code":\s*(\d{3})', line):
                    if status.startswith("5"):
                        code_500 += 1
                    else:
                        code_other += 1
        await daemon.stop()

        generated = re.search(r"(\d+) generated", text)
        failures = re.search(r"Failures:\n((?:.*\n)+?)\n", text)
        report(
            "api_fuzz",
            schemathesis_max_examples=examples,
            test_cases=generated.group(1) if generated else "?",
            responses=code_500 + code_other,
            server_errors=code_500,
            failures=(
                failures.group(1).encode("ascii", "ignore").decode().strip().replace("\n", "; ")
                if failures else 0
            ),
            exit_status=code,
        )
        self.assertEqual(code_500, 0, text[-6000:])
        self.assertEqual(code, 0, text[-6000:])
