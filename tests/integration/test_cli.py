"""
End-to-end tests of the C{karajo} command (L{karajo.cli}): every sub-command
runs as a real process (C{python -m karajo.cli}, and the installed console
script once), against real daemons listening on loopback where it talks to
one.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
import shutil
import socket
import sys
import time

import bcrypt
import treq
import treq.client
from twisted.internet import defer, protocol, reactor
from twisted.internet.error import ProcessDone
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool

import karajo
from karajo.config import Loaded, validate
from karajo.model import Environment, Job, User
from karajo.server import build_service
from karajo.service import thread_runner
from karajo.web.site import build_site
from tests.helpers import config_tree, write

#: the tree the running tests imported karajo from; the child uses the same
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(karajo.__file__)))
SOURCE_TREE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECRET = "cli-s3cret"


def child_env(**extra: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": CHECKOUT,
        "LANG": "C.UTF-8",
        "HOME": os.environ.get("HOME", "/"),
    }
    env.update(extra)
    return env


def karajo_cli(*args: str, cwd: str | None = None, **env: str) -> defer.Deferred:
    """Run C{python -m karajo.cli ARGS}; fires with (stdout, stderr, code)."""
    return getProcessOutputAndValue(
        sys.executable, ("-m", "karajo.cli", *args), env=child_env(**env), path=cwd,
        reactor=reactor,
    )


class _Feeding(protocol.ProcessProtocol):
    """Write C{stdin}, then close it; collect stdout and stderr apart."""

    def __init__(self, stdin: bytes) -> None:
        self.stdin = stdin
        self.out = bytearray()
        self.err = bytearray()
        self.ended: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.stdin)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out.extend(data)

    def errReceived(self, data: bytes) -> None:
        self.err.extend(data)

    def processEnded(self, reason) -> None:
        code = 0 if reason.check(ProcessDone) else reason.value.exitCode
        self.ended.callback((bytes(self.out), bytes(self.err), code))


def karajo_cli_stdin(stdin: bytes, *args: str, **env: str) -> defer.Deferred:
    """Run C{python -m karajo.cli ARGS} with C{stdin} as its standard input (a pipe)."""
    proto = _Feeding(stdin)
    reactor.spawnProcess(proto, sys.executable, [sys.executable, "-m", "karajo.cli", *args],
                         env=child_env(**env))
    return proto.ended


def client() -> treq.client.HTTPClient:
    """A treq client that leaves no connection open behind a test."""
    return treq.client.HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """A real server (service + site) on 127.0.0.1, random port, real reactor."""

    def __init__(self, test: unittest.TestCase, env: Environment) -> None:
        env, warnings = validate(env)
        self.service = build_service(Loaded(env, warnings), reactor)
        # Our own listener on port 0 instead of the configured one.
        self.service.removeService(self.service.getServiceNamed("http"))
        self.service.startService()
        self.port = reactor.listenTCP(0, build_site(self.service, reactor, thread_runner(reactor)), interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"
        test.addCleanup(self.stop)

    async def stop(self) -> None:
        await self.port.stopListening()
        if self.service.running:
            await self.service.stopService()

    def runner(self, job_id: str):
        return self.service.jobs[job_id].runner


class HelpAndVersionTests(unittest.TestCase):
    async def test_version(self) -> None:
        out, err, code = await karajo_cli("version")
        self.assertEqual((out, code), (karajo.__version__.encode() + b"\n", 0), err)
        out, err, code = await karajo_cli("--version")
        self.assertEqual((out.strip(), code), (b"karajo " + karajo.__version__.encode(), 0))

    async def test_every_command_has_help(self) -> None:
        for command in ("hash-password", "sign", "trigger", "check", "version"):
            out, err, code = await karajo_cli(command, "--help")
            self.assertEqual(code, 0, (command, err))
            self.assertIn(b"usage: karajo " + command.encode(), out)
        out, err, code = await karajo_cli("--help")
        self.assertEqual(code, 0)
        for command in (b"hash-password", b"sign", b"trigger", b"check", b"version"):
            self.assertIn(command, out)

    async def test_usage_errors_exit_2(self) -> None:
        for args in ((), ("frobnicate",), ("sign",), ("trigger", "http://x"),
                     ("hash-password", "--rounds", "3")):
            out, err, code = await karajo_cli(*args)
            self.assertEqual(code, 2, (args, out, err))
            self.assertIn(b"usage:", err)

    async def test_console_script(self) -> None:
        script = os.path.join(os.path.dirname(sys.executable), "karajo")
        if not os.access(script, os.X_OK):
            raise unittest.SkipTest(f"{script} is not installed (pip install the checkout)")
        out, err, code = await getProcessOutputAndValue(
            script, ("version",), env=child_env(), reactor=reactor)
        self.assertEqual((out.strip(), code), (karajo.__version__.encode(), 0), err)


class HashPasswordTests(unittest.TestCase):
    async def test_hash_verifies_and_logs_in(self) -> None:
        password = "correct horse battery staple ✓"
        out, err, code = await karajo_cli_stdin(
            password.encode() + b"\n", "hash-password", "--rounds", "4")
        self.assertEqual(code, 0, err)
        hashed = out.decode().strip()
        self.assertRegex(hashed, r"\A\$2b\$04\$[./A-Za-z0-9]{53}\Z")
        self.assertTrue(bcrypt.checkpw(password.encode(), hashed.encode()))
        self.assertFalse(bcrypt.checkpw(password.encode() + b"\n", hashed.encode()))

        # The hash as user.conf would carry it: a real login on a real server.
        base = os.path.abspath(self.mktemp())
        daemon = Daemon(self, Environment(
            dir_base=base, secret=SECRET, listen_address="127.0.0.1:0",
            users={"alice": User(password=hashed)},
        ))
        http = client()
        login = daemon.url + "/karajo/api/auth/login"
        response = await http.post(login, json={"name": "alice", "password": password})
        document = json.loads(await response.content())
        self.assertEqual((response.code, document["data"]["name"]), (200, "alice"), document)
        cookie = {c.name: c.value for c in response.cookies()}.get("karajo_session")
        self.assertTrue(cookie)
        env = await http.get(daemon.url + "/karajo/api/environment",
                             cookies={"karajo_session": cookie})
        self.assertEqual(env.code, 200)
        await env.content()
        denied = await client().get(daemon.url + "/karajo/api/environment")
        self.assertEqual(denied.code, 401)
        await denied.content()
        wrong = await http.post(login, json={"name": "alice", "password": password + "x"})
        self.assertEqual(wrong.code, 400)
        await wrong.content()

    async def test_crlf_and_no_newline(self) -> None:
        for stdin in (b"pw-1\r\n", b"pw-1"):
            out, err, code = await karajo_cli_stdin(stdin, "hash-password", "--rounds", "4")
            self.assertEqual(code, 0, err)
            self.assertTrue(bcrypt.checkpw(b"pw-1", out.strip()))

    async def test_bad_passwords(self) -> None:
        for stdin, expected in ((b"\n", 2), (b"", 2), (b"x" * 73 + b"\n", 2)):
            out, err, code = await karajo_cli_stdin(stdin, "hash-password", "--rounds", "4")
            self.assertEqual((out, code), (b"", expected), (stdin, err))
            self.assertTrue(err.startswith(b"karajo: "), err)

    async def test_terminal_no_echo(self) -> None:
        """On a terminal the password is asked twice, not echoed, and must match."""
        for answers, expected in (([b"tty-pass", b"tty-pass"], 0), ([b"one", b"two"], 1)):
            proto = _Terminal(answers)
            reactor.spawnProcess(
                proto, sys.executable,
                [sys.executable, "-m", "karajo.cli", "hash-password", "--rounds", "4"],
                env=child_env(), usePTY=True,
            )
            output, code = await proto.ended
            self.assertEqual(code, expected, output)
            self.assertNotIn(answers[0], output)
            self.assertNotIn(answers[1], output)
            self.assertIn(b"Password: ", output)
            if expected == 0:
                hashed = output.strip().splitlines()[-1].strip()
                self.assertTrue(bcrypt.checkpw(b"tty-pass", hashed))
            else:
                self.assertIn(b"do not match", output)


class _Terminal(protocol.ProcessProtocol):
    """Answer each password prompt on a pseudo-terminal."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = list(answers)
        self.output = bytearray()
        self.ended: defer.Deferred = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output.extend(data)
        # Answer a prompt only once it is shown: getpass flushes typed-ahead input.
        if self.answers and data.rstrip().endswith(b":"):
            self.transport.write(self.answers.pop(0) + b"\n")

    def processEnded(self, reason) -> None:
        code = 0 if reason.check(ProcessDone) else reason.value.exitCode
        self.ended.callback((bytes(self.output), code))


class SignTests(unittest.TestCase):
    def expected(self, payload: bytes, secret: str = SECRET) -> bytes:
        return hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest().encode() + b"\n"

    async def test_file(self) -> None:
        payload = b'{"_karajo_epoch":1700000000,"x":"\xc3\xa9"}\n'
        path = write(os.path.join(self.mktemp(), "payload.json"), "")
        with open(path, "wb") as f:
            f.write(payload)
        out, err, code = await karajo_cli("sign", "--secret-env", "KS", path, KS=SECRET)
        self.assertEqual((out, code), (self.expected(payload), 0), err)

    async def test_stdin_exact_bytes(self) -> None:
        for payload in (b"abc", b"abc\n", b"", b"\x00\xff binary\r\n"):
            for args in (("-",), ()):
                out, err, code = await karajo_cli_stdin(
                    payload, "sign", "--secret-env", "KS", *args, KS=SECRET)
                self.assertEqual((out, code), (self.expected(payload), 0), (payload, err))

    async def test_secret_missing_or_empty(self) -> None:
        for env in ({}, {"KS": ""}):
            out, err, code = await karajo_cli_stdin(b"x", "sign", "--secret-env", "KS", **env)
            self.assertEqual((out, code), (b"", 2), err)
            self.assertIn(b"KS", err)
            self.assertTrue(err.startswith(b"karajo: "))

    async def test_unreadable_file(self) -> None:
        missing = os.path.join(os.path.abspath(self.mktemp()), "nope")
        out, err, code = await karajo_cli("sign", "--secret-env", "KS", missing, KS=SECRET)
        self.assertEqual((out, code), (b"", 1))
        self.assertIn(b"cannot read", err)


class TriggerTests(unittest.TestCase):
    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        self.seen: list = []
        self.daemon = Daemon(self, Environment(
            dir_base=self.base, secret=SECRET, listen_address="127.0.0.1:0",
            jobs={
                "deploy": Job(path="/deploy", commands=(
                    "echo deployed run $KARAJO_JOB_COUNTER > marker",
                )),
                "record": Job(path="/record", call=lambda log, req: self.seen.append(req)),
                "custom": Job(path="/custom", commands=("true",), secret="own-secret",
                              header_sign="X-Other-Sign"),
            },
        ))
        self.hook = self.daemon.url + "/karajo/api/job_exec/run/deploy"

    async def test_signed_webhook_runs_job(self) -> None:
        out, err, code = await karajo_cli(
            "trigger", self.hook, "--secret-env", "KS", "--data", '{"ref":"main"}', KS=SECRET)
        self.assertEqual(code, 0, (out, err))
        document = json.loads(out)
        self.assertEqual((document["code"], document["message"]), (200, "job started"))
        runner = self.daemon.runner("deploy")
        await runner.when_idle()
        self.assertEqual((runner.last_status, runner.counter), ("success", 1))
        marker = os.path.join(self.base, "var", "lib", "karajo", "job", "deploy", "marker")
        with open(marker) as f:
            self.assertEqual(f.read(), "deployed run 1\n")
        self.assertIn("=== DONE", runner.store.read(1)[1].decode())

    async def test_payload(self) -> None:
        """The body is the --data object plus a fresh _karajo_epoch, compact JSON."""
        before = int(time.time())
        out, err, code = await karajo_cli(
            "trigger", self.daemon.url + "/karajo/api/job_exec/run/record", "--secret-env", "KS",
            "--data", '{"ref": "main", "_karajo_epoch": 1, "n": [1, 2]}', KS=SECRET)
        self.assertEqual(code, 0, (out, err))
        await self.daemon.runner("record").when_idle()
        [request] = self.seen
        document = json.loads(request.body)
        self.assertEqual(request.body, json.dumps(document, separators=(",", ":")).encode())
        self.assertEqual(list(document), ["ref", "_karajo_epoch", "n"])
        self.assertTrue(before <= document["_karajo_epoch"] <= time.time() + 1)
        self.assertEqual(request.headers.get("Content-Type"), "application/json")

    async def test_custom_header_and_job_secret(self) -> None:
        url = self.daemon.url + "/karajo/api/job_exec/run/custom"
        out, err, code = await karajo_cli(
            "trigger", url, "--secret-env", "JS", "--header-sign", "X-Other-Sign",
            "--timeout", "10", JS="own-secret")
        self.assertEqual(code, 0, (out, err))
        await self.daemon.runner("custom").when_idle()
        self.assertEqual(self.daemon.runner("custom").last_status, "success")

    async def test_wrong_secret(self) -> None:
        out, err, code = await karajo_cli("trigger", self.hook, "--secret-env", "KS", KS="wrong")
        self.assertEqual(code, 1, (out, err))
        document = json.loads(out)
        self.assertEqual((document["code"], document["name"]), (403, "ERR_JOB_FORBIDDEN"))
        self.assertIn(b"HTTP 403", err)
        self.assertEqual(self.daemon.runner("deploy").counter, 0)

    async def test_two_triggers(self) -> None:
        """
        Each invocation signs the current second: a second trigger is a new
        payload, except within the same second with the same data, which the
        replay guard refuses (403, exit 1).
        """
        out, err, code = await karajo_cli("trigger", self.hook, "--secret-env", "KS",
                                          "--data", '{"n":1}', KS=SECRET)
        self.assertEqual(code, 0, (out, err))
        out, err, code = await karajo_cli("trigger", self.hook, "--secret-env", "KS",
                                          "--data", '{"n":1}', KS=SECRET)
        message = json.loads(out)["message"]
        if code == 0:
            self.assertIn(message, ("job started", "job queued"))
        else:
            self.assertEqual((code, json.loads(out)["name"]), (1, "ERR_REQUEST_REPLAYED"))
        await self.daemon.runner("deploy").when_idle()

    async def test_unknown_path(self) -> None:
        out, err, code = await karajo_cli(
            "trigger", self.daemon.url + "/karajo/api/job_exec/run/nope", "--secret-env", "KS",
            KS=SECRET)
        self.assertEqual(code, 1)
        self.assertEqual(json.loads(out)["code"], 404)

    async def test_connection_refused(self) -> None:
        url = f"http://127.0.0.1:{free_port()}/karajo/api/job_exec/run/deploy"
        out, err, code = await karajo_cli("trigger", url, "--secret-env", "KS", KS=SECRET)
        self.assertEqual((out, code), (b"", 1))
        self.assertIn(b"karajo: cannot reach " + url.encode(), err)

    async def test_bad_usage(self) -> None:
        cases = [
            (("--data", "[1]"), {"KS": SECRET}, b"JSON object"),
            (("--data", "{nope"), {"KS": SECRET}, b"not JSON"),
            ((), {}, b"KS is not set"),
        ]
        for extra, env, message in cases:
            out, err, code = await karajo_cli("trigger", self.hook, "--secret-env", "KS",
                                              *extra, **env)
            self.assertEqual((out, code), (b"", 2), err)
            self.assertIn(message, err)
        out, err, code = await karajo_cli("trigger", "ftp://x/y", "--secret-env", "KS", KS="s")
        self.assertEqual(code, 2)
        self.assertIn(b"not an http", err)
        self.assertEqual(self.daemon.runner("deploy").counter, 0)


class CheckTests(unittest.TestCase):
    def example_copy(self) -> str:
        """The example configuration, run from a temporary copy of the tree."""
        top = os.path.abspath(self.mktemp())
        shutil.copytree(os.path.join(SOURCE_TREE, "etc", "karajo"),
                        os.path.join(top, "etc", "karajo"))
        return top

    async def test_closed_pipe(self) -> None:
        """`karajo check | head -1`: a reader that left early; no traceback, status 141."""
        top = self.example_copy()
        # stdout is a pipe whose reading end is already closed: the first
        # write fails with EPIPE, whatever the pipe's buffer could hold.
        script = (
            "import os, sys\n"
            "r, w = os.pipe(); os.close(r); os.dup2(w, 1)\n"
            "from karajo.cli import main\n"
            "sys.exit(main(['check', '--config', 'etc/karajo/karajo.conf']))\n"
        )
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-c", script], path=top,
            env={**os.environ, "PYTHONPATH": SOURCE_TREE},
        )
        self.assertNotIn(b"Traceback", err)
        self.assertEqual(code, 141, err)

    async def test_example_config(self) -> None:
        top = self.example_copy()
        out, err, code = await karajo_cli("check", "--config", "etc/karajo/karajo.conf", cwd=top)
        self.assertEqual(code, 0, err)
        self.assertEqual(err, b"")
        text = out.decode()
        self.assertIn("etc/karajo/karajo.conf: OK (4 job(s), 2 job.http", text)
        self.assertIn(f"dir_base         {top}", text)
        for job_id in ("hello-world", "interval-1m", "schedule-hourly-5m", "webhook-github"):
            self.assertIn(f'[job "{job_id}"]  ID {job_id}', text)
            self.assertIn(f"POST /karajo/api/job_exec/run/{job_id}\n", text)
        # Quotes removed: what /bin/sh -c gets, quoted by Python.
        self.assertIn("1. 'echo Hello world from webhook'", text)
        self.assertIn("2. 'echo this is run number $KARAJO_JOB_COUNTER'", text)
        self.assertIn('[job.http "interval-90s"]  ID interval-90s', text)
        self.assertIn("request       POST /karajo/api/job_exec/run/webhook-github", text)
        self.assertIn("request type  json", text)
        self.assertIn("every 1m30s after the last run", text)
        self.assertIn("next run      at start (it has never run)", text)
        self.assertRegex(text, r"hourly at :00, :05.*\(UTC\)\n  next run  "
                               r"\d{4}-\d\d-\d\d \d\d:(\d\d):00 UTC")
        self.assertIn("auth      github", text)
        self.assertNotIn("s3cret", text)
        # Nothing was started or created.
        self.assertFalse(os.path.exists(os.path.join(top, "var")))

    async def test_pitfalls_visible(self) -> None:
        base = os.path.abspath(self.mktemp())
        main = config_tree(base, """
            secret = x
            [job "Pit Falls"]
            path = pit
            schedule = daily@02:30
            timezone = Europe/Berlin
            interval = 5m
            command = echo a # b
            command = echo "a;b" ; trailing
            command = printf '%s\\n' "x  y"
            command = echo \\"quoted\\"
            timeout = 90s
            [job.http "Ping It"]
            http_method = put
            http_url = https://user:pw-secret@example.test/ping
            http_request_type = form
            http_header = Authorization: Bearer tok-secret
            http_header = X-Trace: on
            interval = 10m
            [job "typo"]
            command = true
            comand = false
        """)
        log_dir = os.path.join(base, "var", "log", "karajo", "job_http", "ping_it")
        write(os.path.join(log_dir, "ping_it.3.success"), "")
        past = time.time() - 3600
        os.utime(os.path.join(log_dir, "ping_it.3.success"), (past, past))
        out, err, code = await karajo_cli("check", "--config", main)
        self.assertEqual(code, 0, err)
        text = out.decode()
        self.assertIn('[job "Pit Falls"]  ID pit_falls', text)
        self.assertIn("POST /karajo/api/job_exec/run/pit\n", text)
        self.assertIn("1. 'echo a'\n", text)
        self.assertIn("2. 'echo a;b'\n", text)
        self.assertIn("""3. "printf '%s\\n' x  y"\n""", text)
        self.assertIn("""4. 'echo "quoted"'\n""", text)
        self.assertIn("(Europe/Berlin)", text)
        self.assertIn("ignored: schedule wins", text)
        self.assertIn("timeout   1m30s", text)
        self.assertRegex(text, r"next run  \d{4}-\d\d-\d\d (00|01):30:00 UTC")
        self.assertIn("request       PUT https://user:********@example.test/ping", text)
        self.assertIn("Authorization: ********", text)
        self.assertIn("X-Trace: on", text)
        self.assertIn("next run      at start (was due", text)
        self.assertNotIn("secret", text.replace("own secret", "").replace("global secret", "")
                         .replace("secret           set", ""))
        self.assertNotIn("tok-secret", text)
        # Warnings on stderr with their place.
        self.assertIn(f"warning: {main}:".encode(), err)
        self.assertIn(b"comand", err)
        self.assertIn(b"has both schedule and interval", err)

    async def test_broken_config(self) -> None:
        base = os.path.abspath(self.mktemp())
        main = config_tree(base, """
            [job "bad"]
            command = true
            schedule = fortnightly
        """)
        out, err, code = await karajo_cli("check", "--config", main)
        self.assertEqual((out, code), (b"", 2))
        self.assertRegex(err.decode(), rf"\A{main}:5: schedule: unknown schedule keyword 'fortnightly'")

        main2 = config_tree(os.path.abspath(self.mktemp()), """
            [job "bad"]
            command = "unterminated
        """)
        out, err, code = await karajo_cli("check", "--config", main2)
        self.assertEqual(code, 2)
        self.assertTrue(err.startswith(f"{main2}:4: unterminated quote".encode()), err)

        missing = os.path.join(base, "nope.conf")
        out, err, code = await karajo_cli("check", "--config", missing)
        self.assertEqual((out, code), (b"", 2))
        self.assertEqual(err, f"{missing}: no such file\n".encode())

    async def test_bad_job_d_file(self) -> None:
        base = os.path.abspath(self.mktemp())
        main = config_tree(base, "", {"job.d/x.conf": '[job "x"]\ncommand = true\ntimeout = 0s\n'})
        out, err, code = await karajo_cli("check", "--config", main)
        self.assertEqual(code, 2)
        self.assertEqual(
            err, f"{base}/etc/karajo/job.d/x.conf:3: timeout: must be positive\n".encode())


class CheckAgreesWithDaemonTests(unittest.SynchronousTestCase):
    """C{karajo check} takes the last run from the run records, as the daemon does."""

    def test_last_run_from_the_record_not_the_mtime(self) -> None:
        from twisted.internet import task

        from karajo import cli
        from karajo.joblog import RECORD_DELAY, LogStore
        from karajo.paths import Paths

        base = os.path.abspath(self.mktemp())
        paths = Paths(base)
        job = Job(name="every", commands=("true",), interval=datetime.timedelta(minutes=10))
        clock = task.Clock()
        clock.advance(1_800_000_000)

        def store() -> LogStore:
            return LogStore(
                paths.log_dir("job", "every"), "every", clock=clock,
                run_in_thread=defer.maybeDeferred,
                state_path=paths.state_file("job", "every"),
            )

        first = store()
        for _ in range(2):
            log = first.begin(first.restore().counter + 1)
            clock.advance(40)
            self.successResultOf(log.finish("success"))
            clock.advance(100)
        # The newest log's file times say nothing about the run.
        newest = first.path_of(first.scan()[-1])
        os.utime(newest, (1_000_000_000, 1_000_000_000))
        daemon = store().restore().last_run
        assert daemon is not None
        self.assertEqual(daemon.timestamp(), 1_800_000_140)
        self.assertEqual(cli._last_run(job, paths), daemon.timestamp())
        # A run going on (or left by a crash) is the newest: both count from
        # its start, once its record is written (RECORD_DELAY after it).
        running = store()
        running.restore()
        running.begin(3)
        started = clock.seconds()
        clock.advance(RECORD_DELAY)
        self.assertEqual(cli._last_run(job, paths), started)
        self.assertEqual(store().restore().last_run.timestamp(), started)


class TriggerFollowTests(unittest.TestCase):
    """C{karajo trigger --follow/--wait} against a live daemon: the log printed, 0/1/3."""

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        self.daemon = Daemon(self, Environment(
            dir_base=self.base, secret=SECRET, listen_address="127.0.0.1:0",
            jobs={
                "ok": Job(path="/ok", commands=(
                    "i=0; while [ $i -lt 500 ]; do echo \"ok line $i\"; i=$((i+1)); done",
                    "sleep 0.3", "echo last one",
                )),
                "bad": Job(path="/bad", commands=("echo going wrong", "exit 2")),
                "long": Job(path="/long", commands=("echo waiting", "sleep 30")),
            },
        ))

    def hook(self, path: str) -> str:
        return self.daemon.url + "/karajo/api/job_exec/run" + path

    async def test_follow_prints_the_log_and_exits_0(self) -> None:
        out, err, code = await karajo_cli(
            "trigger", self.hook("/ok"), "--secret-env", "KS", "--follow", KS=SECRET)
        self.assertEqual(code, 0, (out, err))
        found = self.daemon.runner("ok").store.read(1)
        assert found is not None
        self.assertEqual(found[0].status, "success")
        self.assertEqual(out, found[1])  # the whole log, and nothing else

    async def test_failed_run_exits_1_and_wait_is_silent(self) -> None:
        out, err, code = await karajo_cli(
            "trigger", self.hook("/bad"), "--secret-env", "KS", "--follow", KS=SECRET)
        self.assertEqual(code, 1, (out, err))
        self.assertIn(b"going wrong", out)
        out, err, code = await karajo_cli(
            "trigger", self.hook("/bad"), "--secret-env", "KS", "--wait", "--data", '{"n":2}',
            KS=SECRET)
        self.assertEqual((out, code), (b"", 1), err)

    async def test_canceled_run_exits_3(self) -> None:
        runner = self.daemon.runner("long")
        following = karajo_cli(
            "trigger", self.hook("/long"), "--secret-env", "KS", "--wait", KS=SECRET)
        deadline = time.monotonic() + 20
        while not runner.executing:
            self.assertLess(time.monotonic(), deadline)
            await task_sleep(0.05)
        runner.cancel()
        out, err, code = await following
        self.assertEqual((out, code), (b"", 3), err)

    async def test_follow_and_wait_exclude_each_other(self) -> None:
        out, err, code = await karajo_cli(
            "trigger", self.hook("/ok"), "--secret-env", "KS", "--follow", "--wait", KS=SECRET)
        self.assertEqual(code, 2, (out, err))


def task_sleep(seconds: float) -> defer.Deferred:
    from twisted.internet import task

    return task.deferLater(reactor, seconds, lambda: None)


class TriggerFollowWithUsersTests(unittest.TestCase):
    """On a server with users the stream needs an API token (--token-env)."""

    def setUp(self) -> None:
        from karajo.model import Token
        from karajo.tokens import hash_token

        self.token = "follow-token-0123456789"
        self.base = os.path.abspath(self.mktemp())
        self.daemon = Daemon(self, Environment(
            dir_base=self.base, secret=SECRET, listen_address="127.0.0.1:0",
            users={"admin": User(name="admin", password=bcrypt.hashpw(
                b"pw", bcrypt.gensalt(4)).decode())},
            tokens={"ci": Token(name="ci", hash=hash_token(self.token), scope="read")},
            jobs={"ok": Job(path="/ok", commands=("echo fine",))},
        ))

    async def test_token_lets_the_follow_in(self) -> None:
        hook = self.daemon.url + "/karajo/api/job_exec/run/ok"
        out, err, code = await karajo_cli(
            "trigger", hook, "--secret-env", "KS", "--follow", KS=SECRET)
        self.assertEqual(code, 1, (out, err))
        self.assertIn(b"HTTP 401", err)
        out, err, code = await karajo_cli(
            "trigger", hook, "--secret-env", "KS", "--follow", "--token-env", "KT",
            "--data", '{"n":2}', KS=SECRET, KT=self.token)
        self.assertEqual(code, 0, (out, err))
        self.assertIn(b"fine\n", out)
