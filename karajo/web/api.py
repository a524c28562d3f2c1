"""
The JSON HTTP API under C{/karajo/api/} (docs/http-api.md), as a Klein app.

Every response, success or error, is the envelope of L{karajo.web.envelope}.
Errors have one home, L{karajo.web.errors}: its C{ERRORS} maps an exception
type to its status and C{ERR_*} name, and L{KarajoAPI._error_body} is the
only code here that turns an exception into a response (called by the
per-route wrapper for errors the handlers raise and by Klein's
C{handle_errors} for routing errors).

Authentication, per route (see docs/http-api.md):

  - webhook runs: the job's C{auth_kind} over the raw body, then the replay
    guard; never a session;
  - management calls (pause, resume, cancel, run_now): a C{manage} API
    token (C{Authorization: Bearer}); or C{X-Karajo-Sign} with the
    global secret over the raw body (job_exec) or the raw query string
    (job_http), then the replay guard; or a logged-in session plus the CSRF
    header (or, without it, a same-origin C{Origin});
  - login and logout: none;
  - everything else: an API token of any scope, or a session when users
    exist, nothing otherwise (a wrong token is refused all the same).

Secrets (the global and per-job secrets, passwords, session tokens in
logs) never appear in a response or a log line: job JSON is built from an
explicit list of fields, sensitive C{http_header} values and URL passwords
are masked, and error messages are fixed strings or the short reasons of
L{karajo.signature.Verdict}, which never contain what the client sent.
"""

from __future__ import annotations

import base64
import functools
import inspect
import json
import os
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from klein import Klein
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from werkzeug.exceptions import NotFound
from werkzeug.routing import RequestRedirect

from karajo.deferreds import as_deferred
from karajo.errors import (
    REFUSAL_WORDS,
    ClusterUnavailable,
    RunRefused,
)
from karajo.logtext import client_text
from karajo.model import JobKind, TriggerRequest
from karajo.replay import ReplayGuard, extract_epoch
from karajo.selectors import Request, first_failed
from karajo.signature import verify
from karajo.users import COOKIE_NAME, CSRF_HEADER, LoginFailed
from karajo.web import envelope, events, params
from karajo.web.access import Access, RefusalLog, client_host, header_getter
from karajo.web.apiresource import APIResource
from karajo.web.documents import Documents
from karajo.web.errors import (
    BodyTooLarge,
    CSRFRefused,
    InvalidJobID,
    JobNotFound,
    JobNotRunning,
    LogNotFound,
    RequestReplayed,
    WebhookForbidden,
    describe,
    error,
)
from karajo.web.params import parse_pairs, query_params, raw_query

__all__ = ["KarajoAPI", "openapi_path", "routes"]

log = Logger()

API = "/karajo/api"


# --- routing helpers -------------------------------------------------------

#: Route authentication kinds (see the module docstring).
SESSION = "session"
SIGNED = "signed"
PUBLIC = "public"

#: Most bytes a login body may have: a name and a password need far less,
#: and parsing the site's 1 MiB cap costs the reactor about 0.4 s.
LOGIN_MAX_BODY = 4096

_TOKEN_OK = re.compile(r"[A-Za-z0-9._~+/=-]{1,512}")


def endpoint(auth: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """
    Wrap a route handler: enforce the session when C{auth} is L{SESSION}
    and users exist, and turn every exception (raised now, or later by a
    coroutine handler) into the error envelope.  Catching here rather than
    in Klein's error chain keeps the refusals on hot paths (forged
    signatures, 429) cheap: no L{Failure} is built for them.
    """

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def handler(self: KarajoAPI, request: Any, **kwargs: Any) -> Any:
            try:
                if auth == SESSION:
                    self._access.require_session(request)
                result = f(self, request, **kwargs)
            except Exception as exc:
                return self._error_body(request, exc)
            if inspect.isawaitable(result):
                return as_deferred(result).addErrback(self._error_failure, request)
            return result

        # Read by the tests that check every route's protection; a function
        # attribute, which mypy cannot see declared.
        handler.karajo_auth = auth  # type: ignore[attr-defined]
        return handler

    return wrap


class KarajoAPI:
    """
    The JSON API of one L{karajo.service.KarajoService}.

    @param service: the server whose jobs are served.
    @param clock: time for cookies and the default replay guard.
    @param sessions: the login sessions (L{karajo.users.Sessions}).
    @param guard: the replay guard; by default one with the environment's
        C{sign_max_age} on C{clock}.
    @param sourcehut_key: an ed25519 public key replacing SourceHut's
        published one (tests).
    @param version: reported by C{GET /karajo/api/environment}.
    """

    app = Klein()

    def __init__(
        self,
        service: Any,
        clock: IReactorTime,
        sessions: Any,
        *,
        guard: ReplayGuard | None = None,
        sourcehut_key: Any = None,
        version: str = "0.1.0",
    ) -> None:
        self._service = service
        self._env = service.env
        self._clock = clock
        self._sessions = sessions
        self._guard = guard if guard is not None else ReplayGuard(
            max_age=self._env.sign_max_age.total_seconds(), clock=clock.seconds
        )
        self._access = Access(self._env, sessions, self._guard)
        self._sourcehut_key = sourcehut_key
        self._version = version
        self._documents = Documents(service, version)
        self._openapi: bytes | None = None
        self._paths: dict[str, Any] | None = None
        self.refusals = RefusalLog(clock)
        #: this node's L{karajo.cluster.ClusterService}, or None (a single server)
        self._cluster = getattr(service, "cluster", None)
        getattr(service, "reload_listeners", []).append(self)

    def reloaded(self, service: Any, added: Any, removed: Any) -> None:
        """
        A reload (docs/behaviour.md, "Reloading"): the new global secret
        and C{sign_max_age} from now on; the jobs by path are looked up
        again.  Remembered signed requests stay remembered.
        """
        self._env = service.env
        self._guard.max_age = self._env.sign_max_age.total_seconds()
        self._access.use(self._env)
        self._paths = None
        self._documents.forget(removed)

    @property
    def access(self) -> Access:
        """Who may call what; the metrics page asks it too."""
        return self._access

    def resource(self) -> APIResource:
        """The Klein resource; mount it at the site root (full paths)."""
        return APIResource(self.app, self)

    # --- errors -------------------------------------------------------------

    def _error_body(self, request: Any, exc: BaseException, failure: Failure | None = None) -> bytes:
        status, name, message, headers = describe(exc)
        if status == 500:
            log.failure(
                "API {method} {path} failed",
                failure if failure is not None else Failure(),
                method=client_text(request.method, 16),
                path=client_text(request.path),
            )
        return error(request, status, name, message, headers=headers)

    def _error_failure(self, failure: Failure, request: Any) -> bytes | None:
        if failure.check(defer.CancelledError):
            return None  # the client went away
        if failure.check(RequestRedirect):
            # Werkzeug redirects a path with C{//} to its merged form (built
            # from the client's Host header); no route of the API is
            # reached that way, so it is the 404 of any unknown path.
            return self._error_body(request, NotFound())
        exc = failure.value
        if exc is None:  # typed optional; a Failure made from an exception always has one
            exc = Exception(failure.getErrorMessage())
        return self._error_body(request, exc, failure)

    @app.handle_errors(Exception)
    def _routing_error(self, request: Any, failure: Failure) -> bytes | None:
        """Routing errors (404, 405) and anything that escaped a handler."""
        return self._error_failure(failure, request)

    def _lookup(self, table: dict[str, Any], job_id: str | None) -> Any:
        if not job_id:
            raise InvalidJobID("missing or empty id")
        svc = table.get(job_id)
        if svc is None:
            raise JobNotFound("job not found")
        return svc

    # --- routes: reading ----------------------------------------------------

    @app.route(API + "/environment", methods=["GET"])
    @endpoint(SESSION)
    def environment(self, request: Any) -> bytes:
        envelope.set_json_headers(request, 200)
        return self._documents.environment()

    @app.route(API + "/job_exec", methods=["GET"])
    @endpoint(SESSION)
    def job_exec(self, request: Any) -> bytes:
        svc = self._lookup(self._service.jobs, query_params(request).get("id"))
        return envelope.success_raw(request, self._documents.job(JobKind.JOB, svc).json)

    @app.route(API + "/job_http", methods=["GET"])
    @endpoint(SESSION)
    def job_http(self, request: Any) -> bytes:
        svc = self._lookup(self._service.http_jobs, query_params(request).get("id"))
        return envelope.success_raw(request, self._documents.job(JobKind.JOB_HTTP, svc).json)

    def _run_query(self, request: Any, table: dict[str, Any]) -> tuple[Any, int, int]:
        """The job, run counter and byte offset a log or events request names."""
        query = query_params(request)
        svc = self._lookup(table, query.get("id"))
        counter = params.int_param(query.get("counter"), "counter", 1)
        offset = params.int_param(query.get("offset"), "offset", 0, default=0)
        return svc, counter, offset

    async def _log(self, request: Any, table: dict[str, Any]) -> bytes:
        svc, counter, offset = self._run_query(request, table)
        found = await svc.runner.store.read_in_thread(counter)
        if found is None and self._cluster is not None:  # a run of another node
            found = await self._cluster.read_log(svc.runner.job.kind, svc.runner.job.id, counter)
        if found is None:
            raise LogNotFound("log not found")
        name, content = found
        return envelope.success(request, {
            "job_id": name.job_id,
            "name": name.filename,
            "status": name.status or "running",
            "counter": name.counter,
            "content": base64.b64encode(content[offset:]).decode("ascii"),
            "size": len(content),
        })

    @app.route(API + "/job_exec/log", methods=["GET"])
    @endpoint(SESSION)
    def job_exec_log(self, request: Any) -> Any:
        return self._log(request, self._service.jobs)

    @app.route(API + "/job_http/log", methods=["GET"])
    @endpoint(SESSION)
    def job_http_log(self, request: Any) -> Any:
        return self._log(request, self._service.http_jobs)

    async def _events(self, request: Any, table: dict[str, Any]) -> bytes:
        svc, counter, offset = self._run_query(request, table)
        feed = await svc.runner.store.follow(counter)
        if feed is None and self._cluster is not None:  # a run of another node
            feed = await self._cluster.remote_feed(svc.runner.job.kind, svc.runner.job.id, counter)
        if feed is None:
            raise LogNotFound("log not found")
        return await events.follow(request, feed, offset)

    @app.route(API + "/job_exec/events", methods=["GET"])
    @endpoint(SESSION)
    def job_exec_events(self, request: Any) -> Any:
        """A run's log as it grows, as Server-Sent Events (docs/http-api.md)."""
        return self._events(request, self._service.jobs)

    @app.route(API + "/job_http/events", methods=["GET"])
    @endpoint(SESSION)
    def job_http_events(self, request: Any) -> Any:
        return self._events(request, self._service.http_jobs)

    @app.route(API + "/openapi.json", methods=["GET"])
    @endpoint(SESSION)
    def openapi(self, request: Any) -> bytes:
        """The OpenAPI document as is (not in the envelope), for tools."""
        if self._openapi is None:
            with open(openapi_path(), "rb") as f:
                self._openapi = f.read()
        envelope.set_json_headers(request, 200)
        return self._openapi

    # --- routes: webhook ----------------------------------------------------

    @app.route(API + "/job_exec/run/<path:path>", methods=["POST"])
    @endpoint(SIGNED)
    def job_exec_run(self, request: Any, path: str) -> Any:
        svc = self._by_path().get("/" + path)
        if svc is None:
            raise JobNotFound("no job has this path")
        runner = svc.runner
        job = runner.job
        body = params.body(request)
        verdict = verify(
            job.auth_kind, self._env.secret_of(job), body, header_getter(request),
            job.header_sign, sourcehut_key=self._sourcehut_key,
        )
        if not verdict.ok:
            self.refusals.refused(job.id, client_host(request), verdict.reason)
            raise WebhookForbidden(verdict.reason)
        headers = {}
        for name, values in request.requestHeaders.getAllRawHeaders():
            if name.lower() == b"cookie":
                continue  # a dashboard session is no business of the job
            headers[name.decode("latin-1")] = b", ".join(values).decode("latin-1")
        # A body that is not what it claims (a "{" that is no JSON object,
        # an epoch that is no integer) is refused (400) before the rules read it.
        # Both read the body parsed once (Request keeps what it parsed).
        selected = Request(headers, body)
        epoch = extract_epoch(body, body_document=selected.document())
        # The rules after the signature (an unsigned request learns nothing
        # of them) and before the replay guard: a request they turn away
        # leaves no entry, so the same body may still trigger once they hold.
        failed = first_failed(job.rules, selected) if job.rules else None
        if failed is not None:
            self.refusals.not_matched(JobKind.JOB, job.id)
            document = self._documents.job(JobKind.JOB, svc).json
            return envelope.success_raw(request, document, f"not matched: {failed}")
        replay = b"webhook\0" + job.path.encode("utf-8") + b"\0" + body
        forget = self._access.check_replay(epoch, replay, verdict.replay_key)
        trigger = TriggerRequest(
            method=request.method.decode("latin-1"),
            path=request.path.decode("latin-1"),
            headers=headers,
            body=body,
        )
        if self._cluster is not None:
            keys = [k for k in (replay if epoch is not None else None, verdict.replay_key) if k]
            return self._in_cluster(request, JobKind.JOB, svc, "run", forget, trigger, keys)
        try:
            accepted = runner.submit(trigger)
        except RunRefused:
            forget()  # paused or busy: the same payload may come again
            raise
        document = with_run(self._documents.job(JobKind.JOB, svc).json,
                            run_document(JobKind.JOB, job.id, accepted))
        return envelope.success_raw(request, document, f"job {accepted.outcome}")

    def _by_path(self) -> dict[str, Any]:
        table = self._paths
        if table is None:
            table = {svc.runner.job.path: svc for svc in self._service.jobs.values()
                     if svc.runner.job.path}
            self._paths = table
        return table

    async def _in_cluster(
        self, request: Any, kind: JobKind, svc: Any, action: str, forget: Callable[[], None],
        trigger: TriggerRequest | None = None, replay_keys: list[bytes] | tuple = (),
    ) -> bytes:
        """
        A trigger or management call on a cluster node (docs/cluster.md):
        replay checked cluster-wide, then done by the job's owner (this
        node or another), answered as a local call would be.
        """
        job_id = svc.runner.job.id
        assert self._cluster is not None
        try:
            for key in replay_keys:
                max_age = self._env.sign_max_age.total_seconds()
                if not await self._cluster.first_time(key, max_age):
                    raise RequestReplayed("replayed: a signed request is accepted only once")
            answer = await self._cluster.act(str(kind), job_id, action, trigger)
            if answer.outcome.startswith("refused:"):
                refusal = _REFUSALS.get(answer.outcome[len("refused:"):], ClusterUnavailable)
                raise refusal(answer.message or answer.outcome)
        except Exception:
            forget()
            raise
        document = self._documents.job(kind, svc).json
        if action == "run":
            document = with_run(document, run_document(kind, job_id, answer))
        return envelope.success_raw(request, document, answer.message or f"job {action}")

    # --- routes: management ---------------------------------------------------

    def _manage_exec(self, request: Any, action: str) -> bytes:
        body = params.body(request)
        forget = self._access.authorize_management(
            request, f"job_exec/{action}", body, lambda: extract_epoch(body))
        try:
            svc = self._lookup(self._service.jobs, params.body_params(request, body).get("id"))
            return self._apply(request, JobKind.JOB, svc, action)
        except Exception:
            forget()
            raise

    def _manage_http(self, request: Any, action: str) -> bytes:
        query = raw_query(request)
        forget = self._access.authorize_management(
            request, f"job_http/{action}", query, lambda: extract_epoch(b"", query=query))
        try:
            svc = self._lookup(self._service.http_jobs, parse_pairs(query).get("id"))
            return self._apply(request, JobKind.JOB_HTTP, svc, action)
        except Exception:
            forget()
            raise

    def _apply(self, request: Any, kind: JobKind, svc: Any, action: str) -> Any:
        if self._cluster is not None:
            return self._in_cluster(request, kind, svc, action, lambda: None)
        runner = svc.runner
        run = None
        if action == "pause":
            runner.pause()
            message = "job paused"
        elif action == "resume":
            runner.resume()
            message = "job resumed"
        elif action == "run":
            accepted = runner.submit(None)
            run = run_document(kind, runner.job.id, accepted)
            message = f"job {accepted.outcome}"
        else:
            if not runner.cancel():
                raise JobNotRunning("job is not running")
            message = "job canceled"
        document = self._documents.job(kind, svc).json
        if run is not None:
            document = with_run(document, run)
        return envelope.success_raw(request, document, message)

    @app.route(API + "/job_exec/pause", methods=["POST"])
    @endpoint(SIGNED)
    def job_exec_pause(self, request: Any) -> bytes:
        return self._manage_exec(request, "pause")

    @app.route(API + "/job_exec/resume", methods=["POST"])
    @endpoint(SIGNED)
    def job_exec_resume(self, request: Any) -> bytes:
        return self._manage_exec(request, "resume")

    @app.route(API + "/job_exec/cancel", methods=["POST"])
    @endpoint(SIGNED)
    def job_exec_cancel(self, request: Any) -> bytes:
        return self._manage_exec(request, "cancel")

    @app.route(API + "/job_exec/run_now", methods=["POST"])
    @endpoint(SIGNED)
    def job_exec_run_now(self, request: Any) -> bytes:
        """Run a job now, from the dashboard or a script holding the global secret."""
        return self._manage_exec(request, "run")

    @app.route(API + "/job_http/run_now", methods=["POST"])
    @endpoint(SIGNED)
    def job_http_run_now(self, request: Any) -> bytes:
        return self._manage_http(request, "run")

    @app.route(API + "/job_http/pause", methods=["POST"])
    @endpoint(SIGNED)
    def job_http_pause(self, request: Any) -> bytes:
        return self._manage_http(request, "pause")

    @app.route(API + "/job_http/resume", methods=["POST"])
    @endpoint(SIGNED)
    def job_http_resume(self, request: Any) -> bytes:
        return self._manage_http(request, "resume")

    # --- routes: login --------------------------------------------------------

    def _cookie(self, request: Any, value: str, max_age: int) -> None:
        parts = [f"{COOKIE_NAME}={value}", "Path=/karajo", f"Max-Age={max_age}"]
        if max_age == 0:
            parts.append("Expires=Thu, 01 Jan 1970 00:00:00 GMT")
        parts += ["HttpOnly", "SameSite=Strict"]
        if request.isSecure():
            parts.append("Secure")
        request.responseHeaders.addRawHeader(b"set-cookie", "; ".join(parts).encode("ascii"))

    @app.route(API + "/auth/login", methods=["POST"])
    @endpoint(PUBLIC)
    async def auth_login(self, request: Any) -> bytes:
        # Throttle, then cap, then parse: a throttled client or a huge body
        # costs no parsing on the reactor thread.
        client = client_host(request)
        self._sessions.check_throttle(client)
        body = params.body(request, LOGIN_MAX_BODY)
        if body is None:
            raise BodyTooLarge(f"a login body is at most {LOGIN_MAX_BODY} bytes")
        fields = params.body_params(request, body)
        name = fields.get("name", "")
        password = fields.get("password", "")
        if not name or not password:
            raise LoginFailed()
        session = await self._sessions.login(name, password, client)
        if not _TOKEN_OK.fullmatch(session.token or ""):
            raise RuntimeError("session token is not cookie-safe")
        max_age = max(0, int(session.expires - self._clock.seconds()))
        self._cookie(request, session.token, max_age)
        return envelope.success(request, {"name": session.user, "csrf": session.csrf},
                                "logged in")

    @app.route(API + "/auth/logout", methods=["POST"])
    @endpoint(PUBLIC)
    def auth_logout(self, request: Any) -> bytes:
        session = self._access.session(request)
        if session is not None:
            if not self._access.csrf_ok(request, session):
                raise CSRFRefused(f"missing or wrong {CSRF_HEADER} header")
            self._sessions.logout(session.token)
        self._cookie(request, "", 0)
        return envelope.success(request, None, "logged out")


#: A refused L{karajo.clusterstore.Answer}'s reason -> the error a local call
#: raises: the owner's table read backwards, plus the two errors of the web's own.
_REFUSALS: dict[str, type[Exception]] = {
    **{word: error for error, word in REFUSAL_WORDS.items()},
    "not_running": JobNotRunning,
    "not_found": JobNotFound,
}


def run_document(kind: JobKind, job_id: str, accepted: Any) -> dict[str, Any]:
    """
    The C{run} of a trigger's answer: the counter the run owns, whether it
    runs or is queued, and where to read and follow its log.
    """
    query = f"?id={quote(job_id, safe='')}&counter={accepted.counter:d}"
    return {
        "counter": accepted.counter,
        "status": "queued" if accepted.outcome == "queued" else "running",
        "log_url": f"{API}/{kind.api}/log{query}",
        "events_url": f"{API}/{kind.api}/events{query}",
    }


def with_run(document: str, run: dict[str, Any]) -> str:
    """A Job document (a JSON object, cached as text) with C{run} added."""
    if not document.endswith("}"):
        raise ValueError("a job document is a JSON object")
    inner = document[:-1].rstrip()
    sep = "" if inner.endswith("{") else ","
    return inner + sep + '"run":' + json.dumps(run, separators=(",", ":")) + "}"


def openapi_path() -> str:
    """Where the OpenAPI document of this API is installed."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "openapi.json")


def routes(app: Klein | None = None) -> set[tuple[str, str]]:
    """
    Every C{(METHOD, path)} the app routes, in OpenAPI path syntax
    (C{<path:path>} becomes C{{path}}); HEAD and OPTIONS are left out.
    """
    app = app if app is not None else KarajoAPI.app
    found = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                found.add((method, path))
    return found
