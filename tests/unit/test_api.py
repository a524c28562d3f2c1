"""
Tests for L{karajo.web.api}: the JSON API through L{treq.testing.StubTreq}
against a real L{karajo.service.KarajoService} (code jobs, no sockets, no
processes, a memory reactor as clock).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import attrs
import bcrypt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.trial import unittest
from twisted.web.test.requesthelper import DummyRequest

from karajo.config import Loaded, validate
from karajo.errors import JobBusy, JobPaused, ServerStopping
from karajo.model import Environment, Job, JobHttp, Token, TriggerRequest, User
from karajo.server import build_service
from karajo.signature import sign
from karajo.users import LoginFailed, LoginThrottled, Sessions, hash_password
from karajo.web import api as apimod
from karajo.web import documents, envelope
from karajo.web.api import KarajoAPI, routes
from karajo.web.errors import ERRORS, describe

SECRET = "s3cret"
JOB_SECRET = "j0b-secret-value"
HTTP_SECRET = "http-j0b-secret"
GITHUB_SECRET = "It's a Secret to Everybody"
#: every secret of the environment; none may appear in any response
SECRETS = (SECRET, JOB_SECRET, HTTP_SECRET, GITHUB_SECRET, "Bearer tok-123", "hunter2pass")
NOW = 1_767_323_045  # 2026-01-02T03:04:05Z
RFC3339 = re.compile(r"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\Z")
LOG_NAME = re.compile(r"\A[a-z0-9_-]+\.[1-9][0-9]*\.(success|failed|canceled)\Z")
USER_PASSWORD = "hunter2pass"

JOB_FIELDS = {
    "env_names",
    "id", "name", "description", "status", "schedule", "interval", "last_run",
    "next_run", "path", "auth_kind", "header_sign", "commands", "log_retention",
    "notif_on_success", "notif_on_failed", "logs",
    "retry", "retry_delay", "overlap", "catch_up", "random_delay", "timeout",
    "on_success", "on_failed",
}
JOB_HTTP_FIELDS = {
    "id", "name", "description", "status", "schedule", "interval", "last_run",
    "next_run", "log_retention", "notif_on_success", "notif_on_failed", "logs",
    "http_method", "http_url", "http_request_type", "http_headers", "http_timeout",
    "http_insecure", "header_sign",
    "retry", "retry_delay", "overlap", "catch_up", "random_delay", "timeout",
}
ENV_FIELDS = {
    "name", "listen_address", "dir_base", "dir_public", "version", "http_timeout",
    "max_job_running", "jobs", "http_jobs",
}


def _sync_check(password: str, hashed: str) -> defer.Deferred[bool]:
    """bcrypt on the test thread, so StubTreq answers without a thread pool."""
    return defer.succeed(bcrypt.checkpw(password.encode(), hashed.encode()))


class Response:
    def __init__(self, code: int, headers: Any, body: bytes) -> None:
        self.code = code
        self.headers = headers
        self.body = body

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return self.headers.getRawHeaders(name) or []


class APITestCase(unittest.TestCase):
    """A real service with a few code jobs, an API over it, and helpers."""

    users: dict[str, User] = {}
    tokens: dict[str, Token] = {}

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.clock.advance(NOW)
        self.held: list[defer.Deferred] = []
        self.seen: list[TriggerRequest] = []
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)

        def hello(log, req):
            log.write(b"hi\n")

        def record(log, req):
            self.seen.append(req)
            log.write(b"recorded\n")

        def slow(log, req):
            d = defer.Deferred()
            self.held.append(d)
            return d

        jobs = {
            "hello": Job(path="/hello", call=hello, description="Say <b>hi</b>"),
            "Record Job": Job(path="/deep/er/record", call=record, secret=JOB_SECRET,
                              header_sign="X-Custom-Sign"),
            "slow": Job(path="/slow", call=slow),
            "every minute": Job(interval=timedelta(minutes=1), call=hello,
                                notif_on_success=(), log_retention=3),
            "gh": Job(path="/gh", call=hello, auth_kind="github", secret=GITHUB_SECRET),
            "srht": Job(path="/srht", call=hello, auth_kind="sourcehut"),
        }
        http_jobs = {
            "Ping": JobHttp(
                http_url="https://user:hunter2pass@example.test/ping",
                schedule="monthly",
                secret=HTTP_SECRET,
                http_method="POST",
                http_request_type="json",
                http_headers=(("Authorization", "Bearer tok-123"), ("X-Trace", "on")),
                http_timeout=timedelta(seconds=10),
            ),
        }
        env, warnings = validate(Environment(
            dir_base=self.base, secret=SECRET, listen_address="127.0.0.1:0",
            max_job_running=10, jobs=jobs, http_jobs=http_jobs, users=self.users,
            tokens=self.tokens,
        ))
        self.env = env
        self.service = build_service(
            Loaded(env, warnings), reactor=self.clock,
            run_in_thread=lambda f, *a: defer.maybeDeferred(f, *a),
        )
        self.service.removeService(self.service.getServiceNamed("http"))
        self.service.startService()
        self.addCleanup(self._stop)
        self.sessions = Sessions(env.users, self.clock, check=_sync_check)
        self.srht_key = Ed25519PrivateKey.generate()
        self.api = KarajoAPI(
            self.service, self.clock, self.sessions,
            sourcehut_key=self.srht_key.public_key(),
        )
        self.resource = self.api.resource()

    def _stop(self) -> defer.Deferred | None:
        if self.service.running:
            return self.service.stopService()
        return None

    def runner(self, job_id: str, kind: str = "job"):
        table = self.service.jobs if kind == "job" else self.service.http_jobs
        return table[job_id].runner

    # --- requests ---------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: dict | None = None,
        cookie: str | None = None,
        scheme: str = "http",
    ) -> Response:
        """One request on a fresh client (no cookie jar carried over)."""
        stub = StubTreq(self.resource)
        headers = dict(headers or {})
        if cookie is not None:
            headers["Cookie"] = f"karajo_session={cookie}"
        if isinstance(body, str):
            body = body.encode()
        d = stub.request(method, f"{scheme}://karajo.test{path}", data=body,
                         headers=headers or None)
        stub.flush()
        response = self.successResultOf(d)
        content = stub.content(response)
        stub.flush()
        raw = self.successResultOf(content)
        for secret in SECRETS:
            self.assertNotIn(secret.encode(), raw, f"{secret!r} leaked by {method} {path}")
        if method != "HEAD" and not path.startswith("/karajo/api/openapi.json"):
            self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
            self.assertEqual(response.headers.getRawHeaders("cache-control"), ["no-store"])
            document = json.loads(raw)
            self.assertEqual(document["code"], response.code)
            self.assertIsInstance(document["message"], str)
            self.assertIn("data", document)
            if response.code >= 400:
                self.assertRegex(document["name"], r"\AERR_[A-Z_]+\Z")
            else:
                self.assertNotIn("name", document)
        return Response(response.code, response.headers, raw)

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: bytes | str | None = None, **kw: Any) -> Response:
        return self.request("POST", path, body, **kw)

    def assertError(self, response: Response, code: int, name: str) -> dict:
        document = response.json
        self.assertEqual((response.code, document["name"]), (code, name), document)
        self.assertIsNone(document["data"])
        return document

    def hook(self, path: str, body: bytes, secret: str = SECRET,
             header: str = "X-Karajo-Sign", extra: dict | None = None) -> Response:
        headers = {header: sign(secret, body), "Content-Type": "application/json"}
        headers.update(extra or {})
        return self.post("/karajo/api/job_exec/run" + path, body, headers=headers)

    def epoch_body(self, epoch: int | None = None) -> bytes:
        return json.dumps({"_karajo_epoch": NOW if epoch is None else epoch}).encode()

    def manage(self, action: str, job_id: str | None = "hello", epoch: int | None = NOW,
               secret: str = SECRET, extra: str = "", **kw: Any) -> Response:
        params = []
        if epoch is not None:
            params.append(("_karajo_epoch", str(epoch)))
        if job_id is not None:
            params.append(("id", job_id))
        body = urlencode(params) + extra
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if secret:
            headers["X-Karajo-Sign"] = sign(secret, body.encode())
        headers.update(kw.pop("headers", {}))
        return self.post(f"/karajo/api/job_exec/{action}", body, headers=headers, **kw)

    def manage_http(self, action: str, query: str, secret: str | None = SECRET,
                    **kw: Any) -> Response:
        headers = dict(kw.pop("headers", {}))
        if secret:
            headers["X-Karajo-Sign"] = sign(secret, query.encode())
        return self.post(f"/karajo/api/job_http/{action}?{query}", headers=headers, **kw)


# --- envelope ------------------------------------------------------------------


class EnvelopeTests(unittest.TestCase):
    def test_format_time(self) -> None:
        self.assertEqual(envelope.format_time(None), "0001-01-01T00:00:00Z")
        self.assertEqual(envelope.format_time(0), "1970-01-01T00:00:00Z")
        self.assertEqual(envelope.format_time(NOW), "2026-01-02T03:04:05Z")
        self.assertEqual(envelope.format_time(NOW + 0.999), "2026-01-02T03:04:05Z")
        self.assertEqual(envelope.format_time(float("nan")), envelope.ZERO_TIME)
        self.assertEqual(envelope.format_time(1e30), envelope.ZERO_TIME)
        self.assertEqual(envelope.format_time(-86400), "1969-12-31T00:00:00Z")

    def test_duration_ns(self) -> None:
        self.assertEqual(envelope.duration_ns(None), 0)
        self.assertEqual(envelope.duration_ns(timedelta(minutes=5)), 300_000_000_000)
        self.assertEqual(envelope.duration_ns(timedelta(milliseconds=1)), 1_000_000)

    def test_envelope(self) -> None:
        self.assertEqual(
            json.loads(envelope.envelope(200, "OK", {"a": 1})),
            {"code": 200, "message": "OK", "data": {"a": 1}},
        )
        self.assertEqual(
            json.loads(envelope.envelope(404, "no <x>", None, "ERR_X")),
            {"code": 404, "message": "no <x>", "name": "ERR_X", "data": None},
        )
        # non-ASCII and markup are escaped by the encoder
        raw = envelope.envelope(400, "\u00e9\u2028", None, "ERR_X")
        self.assertTrue(raw.isascii())

    def test_describe(self) -> None:
        """Every mapped exception gets its status and name; others are 500."""
        samples = {
            LoginFailed: LoginFailed(),
            LoginThrottled: LoginThrottled(7),
            JobPaused: JobPaused("job x is paused"),
            JobBusy: JobBusy("busy"),
            ServerStopping: ServerStopping("stopping"),
        }
        for cls, (status, name) in ERRORS.items():
            exc = samples.get(cls) or cls("message")
            got = describe(exc)
            self.assertEqual(got[:2], (status, name), cls)
        status, name, message, headers = describe(LoginThrottled(7))
        self.assertEqual(headers, [(b"retry-after", b"7")])
        self.assertEqual(describe(KeyError("secret-bits"))[:3],
                         (500, "ERR_INTERNAL", "internal server error"))

    def test_error_table(self) -> None:
        """
        Each error's status and name, written out: clients of the original
        match on these names, so test_describe's loop over the table itself
        would not notice a changed one.
        """
        self.assertEqual(
            {cls.__name__: answer for cls, answer in ERRORS.items()},
            {
                "InvalidJobID": (400, "ERR_INVALID_JOB_ID"),
                "InvalidParameter": (400, "ERR_INVALID_PARAMETER"),
                "InvalidEpoch": (400, "ERR_INVALID_PARAMETER"),
                "LoginFailed": (400, "ERR_AUTH_LOGIN"),
                "Unauthorized": (401, "ERR_UNAUTHORIZED"),
                "WebhookForbidden": (403, "ERR_JOB_FORBIDDEN"),
                "CSRFRefused": (403, "ERR_CSRF"),
                "TokenScope": (403, "ERR_TOKEN_SCOPE"),
                "RequestReplayed": (403, "ERR_REQUEST_REPLAYED"),
                "RequestExpired": (403, "ERR_REQUEST_EXPIRED"),
                "JobNotFound": (404, "ERR_JOB_NOT_FOUND"),
                "LogNotFound": (404, "ERR_LOG_NOT_FOUND"),
                "NotFound": (404, "ERR_NOT_FOUND"),
                "MethodNotAllowed": (405, "ERR_METHOD_NOT_ALLOWED"),
                "JobNotRunning": (409, "ERR_JOB_NOT_RUNNING"),
                "BodyTooLarge": (413, "ERR_BODY_TOO_LARGE"),
                "JobPaused": (412, "ERR_JOB_PAUSED"),
                "JobBusy": (429, "ERR_JOB_ALREADY_RUN"),
                "LoginThrottled": (429, "ERR_AUTH_THROTTLED"),
                "ServerStopping": (503, "ERR_SERVER_STOPPING"),
                "ServerStarting": (503, "ERR_SERVER_STARTING"),
                "ReplayMemoryFull": (503, "ERR_REPLAY_MEMORY_FULL"),
                "ClusterUnavailable": (503, "ERR_CLUSTER_UNAVAILABLE"),
            },
        )


# --- reading ----------------------------------------------------------------------


class ReadTests(APITestCase):
    def test_environment_shape(self) -> None:
        r = self.get("/karajo/api/environment")
        self.assertEqual(r.code, 200)
        doc = r.json
        self.assertEqual(set(doc), {"code", "message", "data"})
        data = doc["data"]
        self.assertEqual(set(data), ENV_FIELDS)
        self.assertEqual(data["name"], "karajo")
        self.assertEqual(data["listen_address"], "127.0.0.1:0")
        self.assertEqual(data["dir_base"], self.base)
        self.assertEqual(data["dir_public"], "")
        self.assertEqual(data["version"], "0.1.0")
        self.assertEqual(data["http_timeout"], 300_000_000_000)
        self.assertEqual(data["max_job_running"], 10)
        self.assertEqual(
            set(data["jobs"]), {"hello", "Record Job", "slow", "every minute", "gh", "srht"}
        )
        self.assertEqual(set(data["http_jobs"]), {"Ping"})
        for job in data["jobs"].values():
            self.assertEqual(set(job), JOB_FIELDS)
            self.assertRegex(job["last_run"], RFC3339)
            self.assertRegex(job["next_run"], RFC3339)
            self.assertIsInstance(job["interval"], int)
        for job in data["http_jobs"].values():
            self.assertEqual(set(job), JOB_HTTP_FIELDS)

    def test_job_values(self) -> None:
        self.clock.advance(0)  # the interval job's first fire
        jobs = self.get("/karajo/api/environment").json["data"]["jobs"]
        hello = jobs["hello"]
        self.assertEqual(hello["id"], "hello")
        self.assertEqual(hello["description"], "Say <b>hi</b>")
        self.assertEqual(hello["status"], "started")
        self.assertEqual(hello["schedule"], "")
        self.assertEqual(hello["interval"], 0)
        self.assertEqual(hello["last_run"], "0001-01-01T00:00:00Z")
        self.assertEqual(hello["next_run"], "0001-01-01T00:00:00Z")
        self.assertEqual(hello["path"], "/hello")
        self.assertEqual(hello["auth_kind"], "hmac-sha256")
        self.assertEqual(hello["header_sign"], "X-Karajo-Sign")
        self.assertEqual(hello["commands"], [])
        self.assertEqual(hello["log_retention"], 5)
        self.assertEqual(hello["logs"], [])
        record = jobs["Record Job"]
        self.assertEqual(record["id"], "record_job")
        self.assertEqual(record["header_sign"], "X-Custom-Sign")
        every = jobs["every minute"]
        self.assertEqual(every["interval"], 60_000_000_000)
        self.assertEqual(every["log_retention"], 3)
        # an interval job with no past run runs at start; it has run once now
        self.assertEqual(every["last_run"], "2026-01-02T03:04:05Z")
        self.assertEqual(every["next_run"], "2026-01-02T03:05:05Z")
        self.assertEqual(every["status"], "success")
        self.assertEqual(every["logs"], [
            {"job_id": "every_minute", "name": "every_minute.1.success",
             "status": "success", "counter": 1,
             "started": "2026-01-02T03:04:05Z", "ended": "2026-01-02T03:04:05Z",
             "trigger": "interval", "attempt": 1, "node": None},
        ])

    def test_job_http_values(self) -> None:
        r = self.get("/karajo/api/job_http?id=ping")
        self.assertEqual(r.code, 200)
        job = r.json["data"]
        self.assertEqual(set(job), JOB_HTTP_FIELDS)
        self.assertEqual(job["id"], "ping")
        self.assertEqual(job["name"], "Ping")
        self.assertEqual(job["schedule"], "monthly")
        self.assertEqual(job["http_method"], "POST")
        self.assertEqual(job["http_request_type"], "json")
        self.assertEqual(job["http_timeout"], 10_000_000_000)
        self.assertIs(job["http_insecure"], False)
        self.assertRegex(job["next_run"], RFC3339)
        self.assertNotEqual(job["next_run"], envelope.ZERO_TIME)
        # credentials are masked, the rest shown
        self.assertEqual(job["http_headers"], ["Authorization: ********", "X-Trace: on"])
        self.assertEqual(job["http_url"], "https://user:********@example.test/ping")
        env = self.get("/karajo/api/environment").json["data"]
        self.assertEqual(env["http_jobs"]["Ping"], job)

    def test_job_exec_one(self) -> None:
        r = self.get("/karajo/api/job_exec?id=record_job")
        self.assertEqual(r.code, 200)
        env = self.get("/karajo/api/environment").json["data"]
        self.assertEqual(r.json["data"], env["jobs"]["Record Job"])

    def test_job_lookup_errors(self) -> None:
        for path in ("/karajo/api/job_exec", "/karajo/api/job_http"):
            self.assertError(self.get(path), 400, "ERR_INVALID_JOB_ID")
            self.assertError(self.get(path + "?id="), 400, "ERR_INVALID_JOB_ID")
            self.assertError(self.get(path + "?id=nope"), 404, "ERR_JOB_NOT_FOUND")
        # a JobHttp id is not a Job id and the other way round
        self.assertError(self.get("/karajo/api/job_exec?id=ping"), 404, "ERR_JOB_NOT_FOUND")
        self.assertError(self.get("/karajo/api/job_http?id=hello"), 404, "ERR_JOB_NOT_FOUND")

    def test_log(self) -> None:
        self.assertEqual(self.hook("/hello", b"one").code, 200)
        r = self.get("/karajo/api/job_exec/log?id=hello&counter=1")
        self.assertEqual(r.code, 200)
        data = r.json["data"]
        self.assertEqual(set(data), {"job_id", "name", "status", "counter", "content", "size"})
        self.assertEqual(data["job_id"], "hello")
        self.assertEqual(data["name"], "hello.1.success")
        self.assertRegex(data["name"], LOG_NAME)
        self.assertEqual(data["status"], "success")
        self.assertEqual(data["counter"], 1)
        content = base64.b64decode(data["content"], validate=True)
        self.assertEqual(len(content), data["size"])
        self.assertIn(b"2026-01-02 03:04:05 UTC job: hello: hi\n", content)
        self.assertTrue(content.startswith(b"2026-01-02 03:04:05 UTC job: hello: === BEGIN\n"))
        # the job's entry lists it
        job = self.get("/karajo/api/job_exec?id=hello").json["data"]
        self.assertEqual(job["logs"], [
            {"job_id": "hello", "name": "hello.1.success", "status": "success", "counter": 1,
             "started": "2026-01-02T03:04:05Z", "ended": "2026-01-02T03:04:05Z",
             "trigger": "webhook", "attempt": 1, "node": None}
        ])
        self.assertEqual(job["status"], "success")
        self.assertEqual(job["last_run"], "2026-01-02T03:04:05Z")

    def test_logs_times_from_the_record(self) -> None:
        """
        A log entry's started and ended are its run record's, RFC 3339 UTC;
        the zero time stands for unknown (a log older than run records) and
        for the end of a run still going on.
        """
        from karajo.joblog import RunRecord

        entries = documents._logs_json([
            RunRecord("j", 1, "failed", None, NOW + 0.9),
            RunRecord("j", 2, "running", NOW + 61.5, None, "retry", 2),
        ])
        self.assertEqual(entries, [
            {"job_id": "j", "name": "j.1.failed", "status": "failed", "counter": 1,
             "started": envelope.ZERO_TIME, "ended": "2026-01-02T03:04:05Z",
             "trigger": None, "attempt": 1, "node": None},
            {"job_id": "j", "name": "j.2", "status": "running", "counter": 2,
             "started": "2026-01-02T03:05:06Z", "ended": envelope.ZERO_TIME,
             "trigger": "retry", "attempt": 2, "node": None},
        ])

    def test_log_offset(self) -> None:
        self.hook("/hello", b"one")
        whole = base64.b64decode(
            self.get("/karajo/api/job_exec/log?id=hello&counter=1").json["data"]["content"])
        for offset in (0, 1, 10, len(whole) - 1, len(whole), len(whole) + 100):
            data = self.get(
                f"/karajo/api/job_exec/log?id=hello&counter=1&offset={offset}").json["data"]
            self.assertEqual(base64.b64decode(data["content"]), whole[offset:])
            self.assertEqual(data["size"], len(whole))

    def test_log_running(self) -> None:
        """A running log is readable, with status running and no suffix."""
        self.hook("/slow", b"x")
        data = self.get("/karajo/api/job_exec/log?id=slow&counter=1").json["data"]
        self.assertEqual((data["name"], data["status"]), ("slow.1", "running"))
        job = self.get("/karajo/api/job_exec?id=slow").json["data"]
        self.assertEqual(job["status"], "running")
        self.assertEqual(job["logs"][0]["status"], "running")

    def test_log_errors(self) -> None:
        self.hook("/hello", b"one")
        base = "/karajo/api/job_exec/log"
        self.assertError(self.get(base + "?counter=1"), 400, "ERR_INVALID_JOB_ID")
        self.assertError(self.get(base + "?id=nope&counter=1"), 404, "ERR_JOB_NOT_FOUND")
        self.assertError(self.get(base + "?id=hello"), 400, "ERR_INVALID_PARAMETER")
        for bad in ("0", "-1", "x", "1.5", "+1", "%201", "1e3", "99999999999999999999999"):
            self.assertError(self.get(f"{base}?id=hello&counter={bad}"), 400,
                             "ERR_INVALID_PARAMETER")
        for bad in ("-1", "x", "1.0"):
            self.assertError(self.get(f"{base}?id=hello&counter=1&offset={bad}"), 400,
                             "ERR_INVALID_PARAMETER")
        self.assertError(self.get(base + "?id=hello&counter=2"), 404, "ERR_LOG_NOT_FOUND")

    def test_job_http_log(self) -> None:
        base = "/karajo/api/job_http/log"
        self.assertError(self.get(base + "?id=ping&counter=1"), 404, "ERR_LOG_NOT_FOUND")
        self.assertError(self.get(base + "?id=hello&counter=1"), 404, "ERR_JOB_NOT_FOUND")
        store = self.runner("ping", "job_http").store
        runlog = store.begin(1)
        runlog.line("=== BEGIN")
        self.successResultOf(runlog.finish("failed"))
        data = self.get(base + "?id=ping&counter=1").json["data"]
        self.assertEqual(data["name"], "ping.1.failed")
        self.assertEqual(data["status"], "failed")
        self.assertIn(b"job_http: ping: === BEGIN", base64.b64decode(data["content"]))

    def test_environment_follows_runs(self) -> None:
        """The per-job cache is rebuilt when a job's state changes."""
        first = self.get("/karajo/api/environment").json["data"]["jobs"]["hello"]
        self.assertEqual(first["logs"], [])
        self.hook("/hello", b"one")
        second = self.get("/karajo/api/environment").json["data"]["jobs"]["hello"]
        self.assertEqual([e["name"] for e in second["logs"]], ["hello.1.success"])
        self.runner("hello").pause()
        third = self.get("/karajo/api/environment").json["data"]["jobs"]["hello"]
        self.assertEqual(third["status"], "paused")

    def test_job_document_same_as_whole_encoding(self) -> None:
        """
        The cached template of a job's JSON gives, byte for byte, what
        encoding the whole document gives, as runs come and go and a job
        shows what a template mark looks like.
        """
        from karajo.model import JobKind
        from karajo.web.documents import _MARKS, Documents, job_dict, job_http_dict
        from karajo.web.envelope import dumps

        docs = Documents(self.service, "v")

        def check() -> None:
            for kind, table, build in ((JobKind.JOB, self.service.jobs, job_dict),
                                       (JobKind.JOB_HTTP, self.service.http_jobs, job_http_dict)):
                for svc in table.values():
                    r = svc.runner
                    whole = dumps(build(r.job, r.status, r.last_run, svc.next_run, r.records()))
                    self.assertEqual(docs.job(kind, svc).json, whole)

        check()
        for n in range(7):  # past the retention of 5: records come and go
            self.assertEqual(self.hook("/hello", self.epoch_body(NOW + n)).code, 200)
            check()
        hello = self.service.jobs["hello"]
        hello.runner.job = attrs.evolve(hello.runner.job, description=_MARKS[0])
        check()

    def test_environment_same_bytes_until_a_job_changes(self) -> None:
        """
        Nothing changed: the very same bytes object (the gzip wrapper then
        finds its compressed form without comparing a megabyte); a run or a
        pause gives new bytes, which show it.
        """
        from karajo.web.documents import Documents

        docs = Documents(self.service, "v")
        first = docs.environment()
        self.assertIs(docs.environment(), first)
        self.assertEqual(self.hook("/hello", self.epoch_body(NOW)).code, 200)
        second = docs.environment()
        self.assertIsNot(second, first)
        hello = json.loads(second)["data"]["jobs"]["hello"]
        self.assertEqual(len(hello["logs"]), 1)
        self.assertIs(docs.environment(), second)
        self.runner("hello").pause()
        self.assertEqual(json.loads(docs.environment())["data"]["jobs"]["hello"]["status"], "paused")

    def test_openapi_served(self) -> None:
        r = self.get("/karajo/api/openapi.json")
        self.assertEqual(r.code, 200)
        with open(apimod.openapi_path(), "rb") as f:
            self.assertEqual(r.body, f.read())
        self.assertEqual(r.header("content-type"), "application/json")

    def test_internal_error(self) -> None:
        """An unexpected exception is a generic 500, logged server-side."""
        def broken():
            raise RuntimeError("s3cret details")

        self.runner("hello").store.snapshot = broken
        r = self.get("/karajo/api/environment")
        doc = self.assertError(r, 500, "ERR_INTERNAL")
        self.assertEqual(doc["message"], "internal server error")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_internal_error_log_escapes_the_path(self) -> None:
        """The 500's log line carries the client's path escaped, never raw bytes."""
        request = DummyRequest([b""])
        request.method = b"G\x1bET"
        request.path = b"/karajo/api/\x1b[31m\nfake line" + b"x" * 1000
        with capturedLogs() as events:
            try:
                raise RuntimeError("boom")
            except RuntimeError as e:
                self.api._error_body(request, e)
        self.flushLoggedErrors(RuntimeError)
        (event,) = [e for e in events if e.get("log_failure") is not None]
        self.assertTrue(event["path"].startswith("/karajo/api/\\x1b[31m\\nfake line"), event)
        self.assertLess(len(event["path"]), 300)
        for key in ("path", "method"):
            self.assertTrue(event[key].isprintable() and event[key].isascii(), event[key])


# --- routing ----------------------------------------------------------------------


class RoutingTests(APITestCase):
    def test_unknown_routes(self) -> None:
        for path in ("/karajo/api/nope", "/karajo/api/", "/karajo/api",
                     "/karajo/api/job_exec/run/", "/karajo/api/environment/",
                     "/karajo/api/job_exec/log/x", "/elsewhere"):
            self.assertError(self.get(path), 404, "ERR_NOT_FOUND")

    def test_double_slash_is_404_and_not_logged(self) -> None:
        """
        A C{//} in the path (werkzeug answers it with a redirect built from
        the Host header) is the 404 of an unknown path: no 500, no logged
        traceback, nothing of the Host echoed.
        """
        for method, path in (("GET", "/karajo/api//environment"),
                             ("GET", "/karajo//api/environment"),
                             ("POST", "/karajo/api/job_exec//pause"),
                             ("GET", "/karajo/api/job_exec//log?id=hello")):
            with capturedLogs() as events:
                r = self.request(method, path, headers={"Host": "evil\x1b[31m.test"})
            self.assertError(r, 404, "ERR_NOT_FOUND")
            self.assertNotIn(b"evil", r.body)
            self.assertIsNone(r.header("location"))
            self.assertEqual([e for e in events if e.get("log_failure")], [])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_undecodable_path(self) -> None:
        for method, path in (("POST", "/karajo/api/job_exec/run/%ff"),
                             ("GET", "/karajo/api/%C3%28"),
                             ("GET", "/karajo/api/job_exec?id=%ff")):
            r = self.request(method, path)
            self.assertEqual(r.code, 404)
            self.assertIn(r.json["name"], ("ERR_NOT_FOUND", "ERR_JOB_NOT_FOUND"))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_header_with_nul_is_refused_by_http_layer(self) -> None:
        """Twisted's parser refuses it before the API: a 400, never a 500."""
        stub = StubTreq(self.resource)
        body = self.epoch_body()
        d = stub.request("POST", "http://karajo.test/karajo/api/job_exec/run/hello", data=body,
                         headers={b"X-Karajo-Sign": [sign(SECRET, body).encode() + b"\x00"]})
        stub.flush()
        self.assertEqual(self.successResultOf(d).code, 400)
        self.assertEqual(self.runner("hello").counter, 0)

    def test_wrong_method(self) -> None:
        cases = [
            ("POST", "/karajo/api/environment"),
            ("GET", "/karajo/api/job_exec/pause"),
            ("GET", "/karajo/api/job_exec/run/hello"),
            ("PUT", "/karajo/api/job_exec/run/hello"),
            ("DELETE", "/karajo/api/job_http/pause"),
            ("GET", "/karajo/api/auth/login"),
            ("OPTIONS", "/karajo/api/job_exec/run/hello"),
        ]
        for method, path in cases:
            r = self.request(method, path)
            self.assertError(r, 405, "ERR_METHOD_NOT_ALLOWED")
            self.assertTrue(r.header("allow"), (method, path))
        self.assertEqual(self.runner("hello").counter, 0)

    def test_webhook_route_is_direct(self) -> None:
        """
        A webhook POST reaches its handler without werkzeug's matching (the
        hot path: every trigger and every forged one), with the same
        answers; a path werkzeug treats its own way (an empty segment) and
        other methods still go through it.
        """
        bound = []
        real_bind = KarajoAPI.app.url_map.bind

        def bind(*args: Any, **kw: Any) -> Any:
            bound.append(kw.get("path_info"))
            return real_bind(*args, **kw)

        self.patch(KarajoAPI.app.url_map, "bind", bind)
        ok = self.hook("/hello", self.epoch_body())
        self.assertEqual((ok.code, ok.json["message"]), (200, "job started"))
        self.assertError(self.hook("/hello", self.epoch_body(), secret="wrong"),
                         403, "ERR_JOB_FORBIDDEN")
        self.assertError(self.hook("/deep/er", b"{}"), 404, "ERR_JOB_NOT_FOUND")
        self.assertEqual(self.hook("/deep/er/record", b'{"_karajo_epoch":%d}' % NOW,
                                   secret=JOB_SECRET, header="X-Custom-Sign").code, 200)
        self.assertEqual(bound, [])
        self.assertError(self.hook("/hello/", b"{}"), 404, "ERR_JOB_NOT_FOUND")
        self.assertError(self.request("GET", "/karajo/api/job_exec/run/hello"),
                         405, "ERR_METHOD_NOT_ALLOWED")
        self.assertEqual(bound, ["/karajo/api/job_exec/run/hello/",
                                 "/karajo/api/job_exec/run/hello"])

    def test_user_input_not_echoed(self) -> None:
        marker = "<script>alert(1)</script>"
        quoted = "%3Cscript%3Ealert(1)%3C%2Fscript%3E"
        for r in (
            self.get("/karajo/api/" + quoted),
            self.post("/karajo/api/job_exec/run/" + quoted, b"{}"),
            self.get("/karajo/api/job_exec?id=" + quoted),
            self.get("/karajo/api/job_exec/log?id=hello&counter=" + quoted),
            self.manage("pause", job_id=marker),
        ):
            self.assertGreaterEqual(r.code, 400)
            self.assertNotIn(b"<script>", r.body)
            self.assertNotIn(b"alert", r.body)


# --- webhooks ----------------------------------------------------------------------


class WebhookTests(APITestCase):
    def test_spec_example(self) -> None:
        """The README's curl example (docs/http-api.md): JSON epoch body, hex HMAC."""
        payload = b'{"_karajo_epoch":%d}' % NOW
        signature = hmac.new(b"s3cret", payload, hashlib.sha256).hexdigest()
        r = self.post("/karajo/api/job_exec/run/hello", payload, headers={
            "X-Karajo-Sign": signature, "Content-Type": "application/json",
        })
        self.assertEqual(r.code, 200, r.body)
        doc = r.json
        self.assertEqual(doc["message"], "job started")
        self.assertEqual(set(doc["data"]), JOB_FIELDS | {"run"})
        self.assertEqual(doc["data"]["id"], "hello")
        self.assertEqual(doc["data"]["run"], {
            "counter": 1, "status": "running",
            "log_url": "/karajo/api/job_exec/log?id=hello&counter=1",
            "events_url": "/karajo/api/job_exec/events?id=hello&counter=1",
        })
        self.assertEqual(self.runner("hello").counter, 1)
        self.assertEqual(self.runner("hello").last_status, "success")

    def test_trigger_request(self) -> None:
        """The callable sees method, path, headers and the raw body; no cookie."""
        body = b'{"_karajo_epoch":%d, "x": [1]}' % NOW
        r = self.hook("/deep/er/record", body, secret=JOB_SECRET, header="X-Custom-Sign",
                      extra={"Cookie": "karajo_session=abc", "X-Extra": "yes"})
        self.assertEqual(r.code, 200, r.body)
        self.assertEqual(r.json["data"]["id"], "record_job")
        [req] = self.seen
        self.assertIsInstance(req, TriggerRequest)
        self.assertEqual(req.method, "POST")
        self.assertEqual(req.path, "/karajo/api/job_exec/run/deep/er/record")
        self.assertEqual(req.body, body)
        headers = {k.lower(): v for k, v in req.headers.items()}
        self.assertEqual(headers["x-extra"], "yes")
        self.assertEqual(headers["x-custom-sign"], sign(JOB_SECRET, body))
        self.assertNotIn("cookie", headers)

    def test_job_secret_and_header(self) -> None:
        """A job with its own secret and header refuses the global ones."""
        body = b"{}"
        for secret, header in ((SECRET, "X-Custom-Sign"), (JOB_SECRET, "X-Karajo-Sign")):
            r = self.hook("/deep/er/record", body, secret=secret, header=header)
            self.assertError(r, 403, "ERR_JOB_FORBIDDEN")
        self.assertEqual(self.seen, [])

    def test_unknown_path(self) -> None:
        for path in ("/nope", "/hello/", "/Hello", "/deep", "/deep/er"):
            r = self.hook(path, b"{}")
            self.assertError(r, 404, "ERR_JOB_NOT_FOUND")

    def test_forged_hmac(self) -> None:
        body = self.epoch_body()
        good = sign(SECRET, body)
        bad_values: list[bytes] = [
            b"", b" ", good[:-1].encode(), (good + "0").encode(), good.replace(good[0], "g").encode(),
            sign("wrong", body).encode(), sign(SECRET, body + b" ").encode(),
            b"sha1=" + good.encode(), b"sha256=" + good[:10].encode(),
            "\u00e9".encode("utf-8") * 32, b"\xff" * 64, good.encode() + b"\x7f",
            b"z" * 64, base64.b64encode(bytes.fromhex(good)),
        ]
        for value in bad_values:
            r = self.post("/karajo/api/job_exec/run/hello", body,
                          headers={b"X-Karajo-Sign": [value]})
            doc = self.assertError(r, 403, "ERR_JOB_FORBIDDEN")
            self.assertNotIn(good, doc["message"])
        r = self.post("/karajo/api/job_exec/run/hello", body)
        self.assertError(r, 403, "ERR_JOB_FORBIDDEN")
        self.assertEqual(self.runner("hello").counter, 0)
        # the accepted spellings
        r = self.post("/karajo/api/job_exec/run/hello", body,
                      headers={"X-Karajo-Sign": "sha256=" + good.upper()})
        self.assertEqual(r.code, 200, r.body)

    def test_github_published_vector(self) -> None:
        r = self.post("/karajo/api/job_exec/run/gh", b"Hello, World!", headers={
            "X-Hub-Signature-256":
                "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        })
        self.assertEqual(r.code, 200, r.body)
        self.assertEqual(self.runner("gh").counter, 1)

    def test_github_forged(self) -> None:
        body = b'{"zen":"x"}'
        good256 = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
        good1 = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha1).hexdigest()
        cases = [
            {},
            {"X-Hub-Signature-256": "sha256=" + "0" * 64},
            {"X-Hub-Signature-256": "sha1=" + good256},
            {"X-Hub-Signature-256": "sha256=" + good256[:-2]},
            {"X-Hub-Signature-256": ""},
            {"X-Hub-Signature-256": "garbage", "X-Hub-Signature": "sha1=" + good1},
            {"X-Hub-Signature": "sha1=" + "f" * 40},
            {"X-Karajo-Sign": sign(GITHUB_SECRET, body)},
        ]
        for headers in cases:
            r = self.post("/karajo/api/job_exec/run/gh", body, headers=headers)
            self.assertError(r, 403, "ERR_JOB_FORBIDDEN")
        r = self.post("/karajo/api/job_exec/run/gh", body,
                      headers={"X-Hub-Signature": "sha1=" + good1})
        self.assertEqual(r.code, 200, r.body)

    def test_github_delivery_replay(self) -> None:
        body = b'{"zen":"x"}'
        headers = {
            "X-Hub-Signature-256": "sha256=" + hmac.new(
                GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest(),
            "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        }
        self.assertEqual(self.post("/karajo/api/job_exec/run/gh", body, headers=headers).code, 200)
        r = self.post("/karajo/api/job_exec/run/gh", body, headers=headers)
        self.assertError(r, 403, "ERR_REQUEST_REPLAYED")
        headers["X-GitHub-Delivery"] = "another-delivery"
        self.assertEqual(self.post("/karajo/api/job_exec/run/gh", body, headers=headers).code, 200)

    def srht_headers(self, body: bytes, nonce: str) -> dict:
        signature = self.srht_key.sign(body + nonce.encode())
        return {"X-Payload-Signature": base64.b64encode(signature).decode(),
                "X-Payload-Nonce": nonce}

    def test_sourcehut(self) -> None:
        body = b'{"event":"push"}'
        r = self.post("/karajo/api/job_exec/run/srht", body, headers=self.srht_headers(body, "n1"))
        self.assertEqual(r.code, 200, r.body)
        # the same nonce again is a replay
        r = self.post("/karajo/api/job_exec/run/srht", body, headers=self.srht_headers(body, "n1"))
        self.assertError(r, 403, "ERR_REQUEST_REPLAYED")
        good = self.srht_headers(body, "n2")
        other = Ed25519PrivateKey.generate().sign(body + b"n2")
        cases = [
            {},
            {"X-Payload-Signature": good["X-Payload-Signature"]},
            {"X-Payload-Signature": good["X-Payload-Signature"], "X-Payload-Nonce": "n3"},
            {"X-Payload-Signature": "not base64!", "X-Payload-Nonce": "n2"},
            {"X-Payload-Signature": base64.b64encode(b"x" * 63).decode(), "X-Payload-Nonce": "n2"},
            {"X-Payload-Signature": base64.b64encode(other).decode(), "X-Payload-Nonce": "n2"},
            {"X-Payload-Signature": good["X-Payload-Signature"], "X-Payload-Nonce": ""},
            {"X-Karajo-Sign": sign(SECRET, body)},
        ]
        for headers in cases:
            r = self.post("/karajo/api/job_exec/run/srht", body, headers=headers)
            self.assertError(r, 403, "ERR_JOB_FORBIDDEN")
        r = self.post("/karajo/api/job_exec/run/srht", body + b" ", headers=good)
        self.assertError(r, 403, "ERR_JOB_FORBIDDEN")
        self.assertEqual(self.post("/karajo/api/job_exec/run/srht", body, headers=good).code, 200)

    def test_replay_same_payload(self) -> None:
        body = self.epoch_body()
        self.assertEqual(self.hook("/hello", body).code, 200)
        doc = self.assertError(self.hook("/hello", body), 403, "ERR_REQUEST_REPLAYED")
        self.assertIn("replayed", doc["message"])
        self.assertEqual(self.runner("hello").counter, 1)
        # a new epoch is a new payload
        self.assertEqual(self.hook("/hello", self.epoch_body(NOW + 1)).code, 200)

    def test_replay_form_epoch(self) -> None:
        body = b"_karajo_epoch=%d&x=1" % NOW
        headers = {"X-Karajo-Sign": sign(SECRET, body),
                   "Content-Type": "application/x-www-form-urlencoded"}
        self.assertEqual(self.post("/karajo/api/job_exec/run/hello", body, headers=headers).code,
                         200)
        r = self.post("/karajo/api/job_exec/run/hello", body, headers=headers)
        self.assertError(r, 403, "ERR_REQUEST_REPLAYED")

    def test_content_type_cannot_hide_the_epoch(self) -> None:
        """
        The unsigned Content-Type header does not change what a signed body
        says: a JSON body sent as a form (or a form sent as JSON) still
        carries its epoch, so the replay and expiry checks still apply.
        """
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        body = self.epoch_body()
        self.assertEqual(self.hook("/hello", body).code, 200)
        for extra in (form, {"Content-Type": "text/plain"}, {"Content-Type": ""}):
            self.assertError(self.hook("/hello", body, extra=extra), 403, "ERR_REQUEST_REPLAYED")
        self.assertError(self.hook("/hello", self.epoch_body(NOW - 100_000), extra=form), 403,
                         "ERR_REQUEST_EXPIRED")
        old_form = b"_karajo_epoch=%d" % (NOW - 100_000)
        self.assertError(self.hook("/hello", old_form), 403, "ERR_REQUEST_EXPIRED")
        self.assertEqual(self.runner("hello").counter, 1)

    def test_epoch_not_an_integer(self) -> None:
        """An epoch that is there but not an integer is refused, not ignored."""
        for body in (b'{"_karajo_epoch":%d.0}' % NOW, b'{"_karajo_epoch":true}',
                     b'{"_karajo_epoch":"abc"}', b"_karajo_epoch=abc&x=1"):
            doc = self.assertError(self.hook("/hello", body), 400, "ERR_INVALID_PARAMETER")
            self.assertIn("_karajo_epoch must be an integer", doc["message"])
        self.assertEqual(self.runner("hello").counter, 0)

    def test_stale_and_future_epoch(self) -> None:
        for epoch in (NOW - 301, NOW + 301, 0, -1, 10**20):
            doc = self.assertError(self.hook("/hello", self.epoch_body(epoch)), 403,
                                   "ERR_REQUEST_EXPIRED")
            self.assertIn("_karajo_epoch", doc["message"])
        for epoch in (NOW - 299, NOW + 299):
            self.assertEqual(self.hook("/hello", self.epoch_body(epoch)).code, 200)

    def test_no_epoch_accepted_twice(self) -> None:
        body = b'{"ref":"main"}'
        self.assertEqual(self.hook("/hello", body).code, 200)
        self.assertEqual(self.hook("/hello", body).code, 200)
        self.assertEqual(self.runner("hello").counter, 2)

    def test_same_payload_other_job(self) -> None:
        """Two jobs may receive the same signed payload (JobHttp to local hooks)."""
        body = self.epoch_body()
        self.assertEqual(self.hook("/hello", body).code, 200)
        self.assertEqual(self.hook("/slow", body).code, 200)

    def test_unparseable_signed_json_refused(self) -> None:
        """
        A signed body that starts like a JSON object but does not parse (a
        trailing comma, an over-long number, deep nesting) is a 400 and
        runs nothing: read as a form it hid its epoch and so could be
        replayed, or sent long after it expired, without limit.
        """
        for body in (
            b'{"_karajo_epoch":%d,}' % (NOW - 10_000),
            b'{"_karajo_epoch":%d,"n":%s}' % (NOW, b"9" * 4301),
            b'{"_karajo_epoch":%d,"n":%s%s}' % (NOW, b"[" * 5000, b"]" * 5000),
        ):
            for _ in range(2):
                self.assertError(self.hook("/hello", body), 400, "ERR_INVALID_PARAMETER")
            body_form = body.decode()
            r = self.post("/karajo/api/job_exec/pause", body_form,
                          headers={"X-Karajo-Sign": sign(SECRET, body)})
            self.assertError(r, 400, "ERR_INVALID_PARAMETER")
        self.assertEqual(self.runner("hello").counter, 0)
        self.assertFalse(self.runner("hello").paused)

    def test_forged_request_leaves_no_replay_trace(self) -> None:
        body = self.epoch_body()
        self.assertError(self.hook("/hello", body, secret="wrong"), 403, "ERR_JOB_FORBIDDEN")
        self.assertEqual(self.hook("/hello", body).code, 200)

    def test_paused(self) -> None:
        self.runner("hello").pause()
        self.assertError(self.hook("/hello", b"1"), 412, "ERR_JOB_PAUSED")
        self.assertEqual(self.runner("hello").counter, 0)

    def test_busy(self) -> None:
        r1 = self.hook("/slow", b"1")
        self.assertEqual((r1.code, r1.json["message"]), (200, "job started"))
        self.assertEqual(r1.json["data"]["status"], "running")
        r2 = self.hook("/slow", b"2")
        self.assertEqual((r2.code, r2.json["message"]), (200, "job queued"))
        self.assertError(self.hook("/slow", b"3"), 429, "ERR_JOB_ALREADY_RUN")
        self.assertError(self.hook("/slow", b"4"), 429, "ERR_JOB_ALREADY_RUN")
        self.held.pop(0).callback(None)
        self.assertEqual(self.runner("slow").counter, 2)
        self.held.pop(0).callback(None)
        self.assertEqual(self.runner("slow").last_status, "success")

    def test_stopping(self) -> None:
        self.successResultOf(defer.maybeDeferred(self.service.stopService))
        self.assertError(self.hook("/hello", b"1"), 503, "ERR_SERVER_STOPPING")


# --- management --------------------------------------------------------------------


class ManagementTests(APITestCase):
    def test_run_now_signed(self) -> None:
        """run_now with the global secret's signature starts a run, then queues, then 429; paused is 412."""
        r = self.manage("run_now")
        self.assertEqual(r.code, 200, r.body)
        self.assertEqual(r.json["message"], "job started")
        self.assertEqual(set(r.json["data"]), JOB_FIELDS | {"run"})
        self.assertEqual((r.json["data"]["run"]["counter"], r.json["data"]["run"]["status"]),
                         (1, "running"))
        self.assertEqual(self.runner("hello").counter, 1)
        # pause answers the Job alone: only a trigger has a run to name
        self.assertNotIn("run", self.manage("pause", epoch=NOW + 9).json["data"])
        self.manage("resume", epoch=NOW + 10)
        self.assertError(self.manage("run_now", secret="wrong", epoch=NOW + 1), 401, "ERR_UNAUTHORIZED")
        self.manage("pause", epoch=NOW + 2)
        self.assertError(self.manage("run_now", epoch=NOW + 3), 412, "ERR_JOB_PAUSED")

    def test_run_now_http(self) -> None:
        """job_http/run_now is signed over the raw query string like pause."""
        ids = list(self.service.http_jobs)
        if not ids:
            raise unittest.SkipTest("no JobHttp in this environment")
        query = f"_karajo_epoch={NOW}&id={ids[0]}"
        r = self.manage_http("run_now", query)
        self.assertEqual(r.code, 200, r.body)
        self.assertIn(r.json["message"], ("job started", "job queued"))
        run = r.json["data"]["run"]
        self.assertEqual(run["events_url"],
                         f"/karajo/api/job_http/events?id={ids[0]}&counter={run['counter']}")
        self.assertError(self.manage_http("run_now", query + "x", secret="nope"), 401, "ERR_UNAUTHORIZED")

    def test_pause_resume_signed(self) -> None:
        r = self.manage("pause")
        self.assertEqual(r.code, 200, r.body)
        self.assertEqual(r.json["message"], "job paused")
        self.assertEqual(set(r.json["data"]), JOB_FIELDS)
        self.assertEqual(r.json["data"]["status"], "paused")
        self.assertTrue(self.runner("hello").paused)
        r = self.manage("resume")
        self.assertEqual(r.code, 200, r.body)
        self.assertEqual(r.json["data"]["status"], "started")
        self.assertFalse(self.runner("hello").paused)

    def test_json_body(self) -> None:
        body = json.dumps({"_karajo_epoch": NOW, "id": "hello"})
        r = self.post("/karajo/api/job_exec/pause", body, headers={
            "X-Karajo-Sign": sign(SECRET, body.encode()), "Content-Type": "application/json"})
        self.assertEqual(r.code, 200, r.body)
        self.assertTrue(self.runner("hello").paused)

    def test_body_shapes(self) -> None:
        """
        A signed body that says JSON but is not a JSON object is named as
        such; a JSON body sent as a form is still read as JSON; an epoch of
        the wrong type is refused.
        """
        broken = f'{{"_karajo_epoch":{NOW:d},"id":"hello"'
        r = self.post("/karajo/api/job_exec/pause", broken, headers={
            "X-Karajo-Sign": sign(SECRET, broken.encode()), "Content-Type": "application/json"})
        doc = self.assertError(r, 400, "ERR_INVALID_PARAMETER")
        self.assertEqual(doc["message"], "the body is not a JSON object")
        body = json.dumps({"_karajo_epoch": NOW, "id": "hello"})
        r = self.post("/karajo/api/job_exec/pause", body, headers={
            "X-Karajo-Sign": sign(SECRET, body.encode()),
            "Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(r.code, 200, r.body)
        self.assertTrue(self.runner("hello").paused)
        self.assertError(self.manage("resume", epoch=None, extra="&_karajo_epoch=1.5"), 400,
                         "ERR_INVALID_PARAMETER")
        self.assertTrue(self.runner("hello").paused)

    def test_bad_signatures(self) -> None:
        for kw in ({"secret": "wrong"}, {"secret": ""}, {"secret": JOB_SECRET},
                   {"headers": {"X-Karajo-Sign": "zz"}, "secret": ""},
                   {"headers": {b"X-Karajo-Sign": [b"\xff" * 64]}, "secret": ""}):
            for action in ("pause", "resume", "cancel"):
                self.assertError(self.manage(action, **kw), 401, "ERR_UNAUTHORIZED")
        self.assertFalse(self.runner("hello").paused)
        # the signature covers the body: changing the id after signing fails
        body = f"_karajo_epoch={NOW}&id=hello"
        r = self.post("/karajo/api/job_exec/pause", body + "x",
                      headers={"X-Karajo-Sign": sign(SECRET, body.encode())})
        self.assertError(r, 401, "ERR_UNAUTHORIZED")

    def test_ids(self) -> None:
        self.assertError(self.manage("pause", job_id=None), 400, "ERR_INVALID_JOB_ID")
        self.assertError(self.manage("pause", job_id="", epoch=NOW + 1), 400,
                         "ERR_INVALID_JOB_ID")
        self.assertError(self.manage("pause", job_id="nope"), 404, "ERR_JOB_NOT_FOUND")
        self.assertError(self.manage("pause", job_id="ping", epoch=NOW + 2), 404,
                         "ERR_JOB_NOT_FOUND")

    def test_cancel(self) -> None:
        self.assertError(self.manage("cancel", job_id="slow"), 409, "ERR_JOB_NOT_RUNNING")
        self.hook("/slow", b"1")
        r = self.manage("cancel", job_id="slow", epoch=NOW + 1)
        self.assertEqual(r.code, 200, r.body)
        self.assertEqual(r.json["message"], "job canceled")
        self.assertEqual(self.runner("slow").last_status, "canceled")
        names = [e["name"] for e in self.get("/karajo/api/job_exec?id=slow").json["data"]["logs"]]
        self.assertEqual(names, ["slow.1.canceled"])

    def test_replay(self) -> None:
        self.assertEqual(self.manage("pause").code, 200)
        self.assertError(self.manage("pause"), 403, "ERR_REQUEST_REPLAYED")
        self.assertError(self.manage("pause", epoch=NOW - 1000), 403, "ERR_REQUEST_EXPIRED")
        # the same body on another endpoint is another request
        self.assertEqual(self.manage("resume").code, 200)

    def test_replay_respelled_path(self) -> None:
        """
        The replay key is the action and the signed bytes, not the raw
        path: a re-spelling of the same route (percent-escapes that routing
        decodes) is the same request and refused as a replay.
        """
        self.assertEqual(self.manage("pause").code, 200)
        body = urlencode([("_karajo_epoch", str(NOW)), ("id", "hello")])
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "X-Karajo-Sign": sign(SECRET, body.encode())}
        for path in ("/karajo/api/job_exec/paus%65", "/%6Barajo/api/job_exec/pause",
                     "/karajo/api/job_exec%2Fpause"):
            r = self.post(path, body, headers=headers)
            if r.code != 404:
                self.assertError(r, 403, "ERR_REQUEST_REPLAYED")
        body = urlencode([("_karajo_epoch", str(NOW)), ("id", "slow")])
        headers["X-Karajo-Sign"] = sign(SECRET, body.encode())
        self.assertEqual(self.post("/karajo/api/job_exec/run_now", body, headers=headers).code, 200)
        self.assertError(self.post("/karajo/api/job_exec/run_no%77", body, headers=headers),
                         403, "ERR_REQUEST_REPLAYED")
        query = f"_karajo_epoch={NOW}&id=ping"
        self.assertEqual(self.manage_http("pause", query).code, 200)
        r = self.post(f"/karajo/api/job_http/paus%65?{query}",
                      headers={"X-Karajo-Sign": sign(SECRET, query.encode())})
        self.assertError(r, 403, "ERR_REQUEST_REPLAYED")

    def test_job_http_signed_query(self) -> None:
        query = f"_karajo_epoch={NOW}&id=ping"
        r = self.manage_http("pause", query)
        self.assertEqual(r.code, 200, r.body)
        self.assertEqual(set(r.json["data"]), JOB_HTTP_FIELDS)
        self.assertEqual(r.json["data"]["status"], "paused")
        self.assertTrue(self.runner("ping", "job_http").paused)
        self.assertError(self.manage_http("pause", query), 403, "ERR_REQUEST_REPLAYED")
        r = self.manage_http("resume", query)
        self.assertEqual(r.code, 200, r.body)
        self.assertFalse(self.runner("ping", "job_http").paused)

    def test_job_http_signature_is_over_raw_query(self) -> None:
        query = f"id=ping&_karajo_epoch={NOW}"
        reordered = f"_karajo_epoch={NOW}&id=ping"
        r = self.post(f"/karajo/api/job_http/pause?{reordered}",
                      headers={"X-Karajo-Sign": sign(SECRET, query.encode())})
        self.assertError(r, 401, "ERR_UNAUTHORIZED")
        self.assertError(self.manage_http("pause", query, secret="wrong"), 401,
                         "ERR_UNAUTHORIZED")
        self.assertError(self.manage_http("pause", query, secret=None), 401, "ERR_UNAUTHORIZED")
        # a body cannot override the signed id
        r = self.manage_http("pause", f"_karajo_epoch={NOW}&id=nope", body=b"id=ping",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertError(r, 404, "ERR_JOB_NOT_FOUND")
        self.assertFalse(self.runner("ping", "job_http").paused)
        self.assertError(self.manage_http("pause", f"_karajo_epoch={NOW}&id="), 400,
                         "ERR_INVALID_JOB_ID")
        self.assertError(self.manage_http("pause", f"_karajo_epoch={NOW - 999}&id=ping"), 403,
                         "ERR_REQUEST_EXPIRED")

    def test_no_session_without_users(self) -> None:
        """With no users there is no session: a cookie does not authorise."""
        self.assertFalse(self.sessions.enabled)
        r = self.manage("pause", secret="", cookie="whatever",
                        headers={"Origin": "http://karajo.test"})
        self.assertError(r, 401, "ERR_UNAUTHORIZED")
        self.assertError(self.post("/karajo/api/auth/login", "name=a&password=b",
                                   headers={"Content-Type": "application/x-www-form-urlencoded"}),
                         400, "ERR_AUTH_LOGIN")


# --- users, login, sessions -----------------------------------------------------------------


class SessionTests(APITestCase):
    users = {"admin": User(password=hash_password(USER_PASSWORD, rounds=4))}

    def login(self, name: str = "admin", password: str = USER_PASSWORD,
              scheme: str = "http") -> Response:
        return self.post("/karajo/api/auth/login", urlencode({"name": name, "password": password}),
                         headers={"Content-Type": "application/x-www-form-urlencoded"},
                         scheme=scheme)

    def session(self) -> tuple[str, str]:
        r = self.login()
        self.assertEqual(r.code, 200, r.body)
        cookie = r.header("set-cookie")
        token = cookie.split(";")[0].split("=", 1)[1]
        return token, r.json["data"]["csrf"]

    def test_login_cookie(self) -> None:
        r = self.login()
        self.assertEqual(r.code, 200, r.body)
        data = r.json["data"]
        self.assertEqual(data["name"], "admin")
        self.assertTrue(data["csrf"])
        [cookie] = r.all("set-cookie")
        parts = [p.strip() for p in cookie.split(";")]
        name, _, token = parts[0].partition("=")
        self.assertEqual(name, "karajo_session")
        self.assertGreaterEqual(len(token), 32)
        self.assertNotIn(token, r.body.decode())
        self.assertEqual(set(parts[1:]), {"Path=/karajo", "Max-Age=43200", "HttpOnly",
                                          "SameSite=Strict"})
        self.assertIsNotNone(self.sessions.get(token))

    def test_login_secure_cookie_over_tls(self) -> None:
        r = self.login(scheme="https")
        self.assertEqual(r.code, 200, r.body)
        self.assertIn("Secure", [p.strip() for p in r.header("set-cookie").split(";")])

    def test_login_wrong(self) -> None:
        for name, password in (("admin", "wrong"), ("nobody", USER_PASSWORD), ("admin", ""),
                               ("", USER_PASSWORD)):
            r = self.login(name, password)
            doc = self.assertError(r, 400, "ERR_AUTH_LOGIN")
            self.assertEqual(doc["message"], "invalid name or password")
            self.assertEqual(r.all("set-cookie"), [])

    def test_login_throttled(self) -> None:
        for _ in range(5):
            self.assertError(self.login(password="wrong"), 400, "ERR_AUTH_LOGIN")
        r = self.login()
        self.assertError(r, 429, "ERR_AUTH_THROTTLED")
        self.assertGreaterEqual(int(r.header("retry-after")), 1)
        self.clock.advance(301)
        self.assertEqual(self.login().code, 200)

    def test_login_throttled_before_the_body_is_parsed(self) -> None:
        """A throttled client's login is refused before its body is read or parsed."""
        for _ in range(5):
            self.assertError(self.login(password="wrong"), 400, "ERR_AUTH_LOGIN")
        parsed: list[bytes] = []
        real = apimod.params.body_params

        def counting(request: Any, raw: bytes) -> dict[str, str]:
            parsed.append(raw)
            return real(request, raw)

        self.patch(apimod.params, "body_params", counting)
        body = "name=admin&password=" + "x" * 3000
        r = self.post("/karajo/api/auth/login", body,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertError(r, 429, "ERR_AUTH_THROTTLED")
        self.assertEqual(parsed, [])

    def test_login_body_capped(self) -> None:
        """A login body over 4 KiB is a 413, never parsed; 4 KiB exactly is read."""
        parsed: list[bytes] = []
        real = apimod.params.body_params

        def counting(request: Any, raw: bytes) -> dict[str, str]:
            parsed.append(raw)
            return real(request, raw)

        self.patch(apimod.params, "body_params", counting)
        head = "name=admin&password=wrong&pad="
        for size, code in ((4097, 413), (100_000, 413), (4096, 400)):
            body = head + "x" * (size - len(head))
            r = self.post("/karajo/api/auth/login", body,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
            self.assertEqual(r.code, code, r.body)
        self.assertEqual([len(raw) for raw in parsed], [4096])
        self.assertEqual(r.json["name"], "ERR_AUTH_LOGIN")
        r = self.post("/karajo/api/auth/login", "x" * 5000)
        self.assertError(r, 413, "ERR_BODY_TOO_LARGE")

    def test_logout(self) -> None:
        token, csrf = self.session()
        r = self.post("/karajo/api/auth/logout", cookie=token)
        self.assertError(r, 403, "ERR_CSRF")
        self.assertIsNotNone(self.sessions.get(token))
        r = self.post("/karajo/api/auth/logout", cookie=token, headers={"X-Karajo-CSRF": csrf})
        self.assertEqual(r.code, 200, r.body)
        cookie = r.header("set-cookie")
        self.assertTrue(cookie.startswith("karajo_session=;"))
        self.assertIn("Max-Age=0", cookie)
        self.assertIsNone(self.sessions.get(token))
        self.assertError(self.get("/karajo/api/environment", cookie=token), 401,
                         "ERR_UNAUTHORIZED")
        # without a session logout still answers (and clears the cookie)
        self.assertEqual(self.post("/karajo/api/auth/logout").code, 200)

    def protected(self) -> list[tuple[str, str]]:
        """Every route the app has that needs a session, by its handler's mark."""
        out = []
        app = KarajoAPI.app
        for rule in app.url_map.iter_rules():
            handler = app.endpoints[rule.endpoint]
            if getattr(handler, "karajo_auth", None) == apimod.SESSION:
                for method in rule.methods - {"HEAD", "OPTIONS"}:
                    out.append((method, rule.rule))
        return out

    def test_every_protected_route_needs_session(self) -> None:
        protected = self.protected()
        self.assertEqual(
            {(m, p) for m, p in protected},
            {(m, p) for m, p in routes()} - {
                ("POST", "/karajo/api/job_exec/run/{path}"),
                ("POST", "/karajo/api/job_exec/pause"),
                ("POST", "/karajo/api/job_exec/resume"),
                ("POST", "/karajo/api/job_exec/cancel"),
                ("POST", "/karajo/api/job_exec/run_now"),
                ("POST", "/karajo/api/job_http/run_now"),
                ("POST", "/karajo/api/job_http/pause"),
                ("POST", "/karajo/api/job_http/resume"),
                ("POST", "/karajo/api/auth/login"),
                ("POST", "/karajo/api/auth/logout"),
            },
        )
        token, _ = self.session()
        query = "?id=hello&counter=1"
        for method, path in protected:
            url = path + query.replace("hello", "ping" if "job_http" in path else "hello")
            for cookie in (None, "", "garbage", "x" * 500, token + "x"):
                r = self.request(method, url, cookie=cookie)
                self.assertError(r, 401, "ERR_UNAUTHORIZED")
            r = self.request(method, url, cookie=token)
            self.assertNotEqual(r.code, 401, (method, path, r.body))
        # the session expires on the server
        self.clock.advance(12 * 3600 + 1)
        self.assertError(self.get("/karajo/api/environment", cookie=token), 401,
                         "ERR_UNAUTHORIZED")

    def test_signed_calls_need_no_session(self) -> None:
        self.assertEqual(self.hook("/hello", self.epoch_body()).code, 200)
        self.assertEqual(self.manage("pause").code, 200)
        self.assertEqual(self.manage_http("pause", f"_karajo_epoch={NOW}&id=ping").code, 200)
        self.assertError(self.manage("resume", secret=""), 401, "ERR_UNAUTHORIZED")

    def test_management_with_session_and_csrf(self) -> None:
        token, csrf = self.session()
        r = self.manage("pause", secret="", epoch=None, cookie=token,
                        headers={"X-Karajo-CSRF": csrf})
        self.assertEqual(r.code, 200, r.body)
        self.assertTrue(self.runner("hello").paused)
        # a session also stands in for a wrong signature
        r = self.manage("resume", secret="wrong", cookie=token, headers={"X-Karajo-CSRF": csrf})
        self.assertEqual(r.code, 200, r.body)
        r = self.post("/karajo/api/job_http/pause?id=ping", cookie=token,
                      headers={"X-Karajo-CSRF": csrf})
        self.assertEqual(r.code, 200, r.body)
        self.assertTrue(self.runner("ping", "job_http").paused)

    def test_management_session_without_csrf(self) -> None:
        token, csrf = self.session()
        for headers in ({}, {"X-Karajo-CSRF": "wrong"}, {"X-Karajo-CSRF": ""},
                        {"Origin": "http://evil.test"}, {"Origin": "https://karajo.test"},
                        {"Origin": "null"},
                        {"X-Karajo-CSRF": "wrong", "Origin": "http://karajo.test"}):
            for action in ("pause", "cancel"):
                r = self.manage(action, secret="", epoch=None, cookie=token, headers=headers)
                self.assertError(r, 403, "ERR_CSRF")
            r = self.post("/karajo/api/job_http/pause?id=ping", cookie=token, headers=headers)
            self.assertError(r, 403, "ERR_CSRF")
        self.assertFalse(self.runner("hello").paused)
        self.assertFalse(self.runner("ping", "job_http").paused)
        # without the token, a same-origin Origin is enough
        r = self.manage("pause", secret="", epoch=None, cookie=token,
                        headers={"Origin": "http://karajo.test"})
        self.assertEqual(r.code, 200, r.body)

    def test_opaque_origin_refused_even_with_token(self) -> None:
        """
        A sandboxed document (a public file under its CSP) says C{Origin:
        null}: refused for every session call and logout, even if it had
        the CSRF token.
        """
        token, csrf = self.session()
        headers = {"Origin": "null", "X-Karajo-CSRF": csrf}
        self.assertError(self.manage("pause", secret="", epoch=None, cookie=token,
                                     headers=headers), 403, "ERR_CSRF")
        self.assertError(self.post("/karajo/api/job_http/pause?id=ping", cookie=token,
                                   headers=headers), 403, "ERR_CSRF")
        self.assertError(self.post("/karajo/api/auth/logout", cookie=token,
                                   headers={"Origin": " NULL ", "X-Karajo-CSRF": csrf}),
                         403, "ERR_CSRF")
        self.assertFalse(self.runner("hello").paused)
        self.assertIsNotNone(self.sessions.get(token))

    def test_origin_over_tls(self) -> None:
        token, csrf = self.session()
        r = self.manage("pause", secret="", epoch=None, cookie=token, scheme="https",
                        headers={"Origin": "https://karajo.test"})
        self.assertEqual(r.code, 200, r.body)

    def test_no_secret_in_log_lines(self) -> None:
        """Exercise every kind of call and check what the server logged."""
        from twisted.logger import formatEvent, globalLogPublisher

        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        token, csrf = self.session()
        self.login(password="wrong-" + SECRET)
        self.login(name=SECRET, password=USER_PASSWORD)
        self.hook("/hello", self.epoch_body())
        self.hook("/hello", self.epoch_body(), secret="wrong")
        self.hook("/deep/er/record", b"{}", secret=JOB_SECRET, header="X-Custom-Sign")
        self.manage("pause")
        self.manage("resume", secret="", cookie=token, headers={"X-Karajo-CSRF": csrf})
        self.get("/karajo/api/environment", cookie=token)
        self.post("/karajo/api/auth/logout", cookie=token, headers={"X-Karajo-CSRF": csrf})
        self.assertTrue(events)
        text = "\n".join(formatEvent(e) + repr(sorted(e.items(), key=str)) for e in events)
        for secret in (SECRET, JOB_SECRET, token, csrf, USER_PASSWORD):
            self.assertNotIn(secret, text)

    def test_management_without_anything(self) -> None:
        r = self.manage("pause", secret="", cookie="nope", headers={"X-Karajo-CSRF": "x"})
        self.assertError(r, 401, "ERR_UNAUTHORIZED")


# --- OpenAPI and docs ------------------------------------------------------------------


class DocumentTests(unittest.TestCase):
    def setUp(self) -> None:
        with open(apimod.openapi_path(), encoding="utf-8") as f:
            self.doc = json.load(f)

    def documented(self) -> set[tuple[str, str]]:
        out = set()
        for path, item in self.doc["paths"].items():
            for method in item:
                if method in ("get", "post", "put", "delete", "patch", "head", "options"):
                    out.add((method.upper(), path))
        return out

    def test_routes_match(self) -> None:
        """The document lists exactly the routes the Klein app has."""
        self.assertEqual(self.documented(), routes())
        self.assertEqual(len(routes()), 18)

    def test_refs_resolve(self) -> None:
        def walk(node: Any) -> None:
            if isinstance(node, dict):
                ref = node.get("$ref")
                if ref is not None:
                    target: Any = self.doc
                    for part in ref.lstrip("#/").split("/"):
                        target = target[part]
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(self.doc)
        self.assertEqual(self.doc["openapi"][:2], "3.")

    def test_schemas_match_fields(self) -> None:
        schemas = self.doc["components"]["schemas"]
        self.assertEqual(set(schemas["Job"]["properties"]), JOB_FIELDS)
        self.assertEqual(set(schemas["JobHttp"]["properties"]), JOB_HTTP_FIELDS)
        # "cluster" only with [cluster] (tests/unit/test_cluster.py)
        self.assertEqual(set(schemas["Environment"]["properties"]), ENV_FIELDS | {"cluster"})
        self.assertEqual(set(schemas["Log"]["properties"]),
                         {"job_id", "name", "status", "counter", "content", "size"})
        names = set(schemas["Error"]["properties"]["name"]["enum"])
        self.assertLessEqual({name for _, name in ERRORS.values()}, names)

    def test_operations_have_responses(self) -> None:
        for path, item in self.doc["paths"].items():
            for method, op in item.items():
                self.assertIn("200", op["responses"], (method, path))
                self.assertIn("operationId", op)
                for parameter in op.get("parameters", []):
                    if parameter["in"] == "path":
                        self.assertIn("{" + parameter["name"] + "}", path)

    def test_markdown_mentions_every_route(self) -> None:
        here = os.path.dirname(os.path.abspath(__file__))
        with open(os.path.join(here, "..", "..", "docs", "http-api.md"), encoding="utf-8") as f:
            text = f.read()
        for method, path in routes():
            self.assertIn(f"{method} `{path}`", text)
        # the README's curl example, verbatim
        self.assertIn(
            'curl -H "X-Karajo-Sign: $SIGN" --json "$PAYLOAD" '
            "http://127.0.0.1:31937/karajo/api/job_exec/run/hello-world",
            text,
        )


class RefusalLogTests(unittest.SynchronousTestCase):
    def test_rate_limited(self) -> None:
        """Refusals are all counted but logged at most once per interval."""
        from twisted.internet.task import Clock
        from twisted.logger import globalLogPublisher

        from karajo.web.access import RefusalLog

        events: list = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        clock = Clock()
        refusals = RefusalLog(clock, interval=10)
        for _ in range(100):
            refusals.refused("hook", "127.0.0.1", "signature does not match")
        clock.advance(10)
        refusals.refused("hook", "127.0.0.1", "signature does not match")
        mine = [e for e in events if "refused {count}" in e.get("log_format", "")]
        self.assertEqual([e["count"] for e in mine], [1, 100])
        self.assertEqual(refusals.total, 101)


class RefusedThenRetriedTests(APITestCase):
    def test_paused_webhook_payload_can_be_resent(self) -> None:
        """A signed payload refused because the job was paused is accepted once it is resumed."""
        body = self.epoch_body()
        self.manage("pause")
        self.assertError(self.hook("/hello", body), 412, "ERR_JOB_PAUSED")
        self.manage("resume", epoch=NOW + 1)
        self.assertEqual(self.hook("/hello", body).code, 200)
        self.assertError(self.hook("/hello", body), 403, "ERR_REQUEST_REPLAYED")

    def test_refused_management_payload_can_be_resent(self) -> None:
        """A signed cancel refused (nothing running) does not use up its payload."""
        self.assertError(self.manage("cancel"), 409, "ERR_JOB_NOT_RUNNING")
        self.assertError(self.manage("cancel"), 409, "ERR_JOB_NOT_RUNNING")
