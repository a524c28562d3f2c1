"""
The web UI under C{/karajo/}: login page, dashboard, job pages, run pages
and their static files (docs/behaviour.md, "Web UI").

L{karajo.web.site} mounts L{WebUI.resource} for every path under
C{/karajo/} except C{/karajo/api/}, with the C{karajo} segment consumed, so
C{request.postpath} here is::

    [b""]                       /karajo/          login page, or redirect
    [b"app", b""]               /karajo/app/      dashboard
    [b"app", b"job"]            /karajo/app/job?kind=job|job_http&id=ID
    [b"app", b"run"]            /karajo/app/run?kind=..&id=..&counter=N
    [b"app", b"log"]            the same, by its older name (a redirect)
    [b"app", b"cluster"]        /karajo/app/cluster  the nodes (a cluster node only)
    [b"static", NAME]           /karajo/static/NAME  (CSS, JS, icon)

This module routes and answers; the rest of the UI is in its own modules:
L{karajo.web.views} (what a page shows of a job), L{karajo.web.pages} (the
template elements), L{karajo.web.clusterpage} (the cluster view), L{karajo.web.chart}, L{karajo.web.description},
L{karajo.web.words} and L{karajo.web.static}.

Design notes:

  - Pages are rendered on the server from the templates of
    L{karajo.resources.templates_dir} with L{twisted.web.template}, which
    escapes every text and attribute value; the page is complete without
    JavaScript.  The scripts then keep it live by polling the JSON API (a
    running run's page follows its events stream instead) and only ever
    set text (C{textContent}), never HTML.
  - A job's description may hold simple HTML, sanitized twice
    (L{karajo.web.description}).  Descriptions do not change while the
    daemon runs, so the scripts never touch them.
  - Every response carries a strict Content-Security-Policy (no inline
    script or style at all), C{nosniff} and C{no-referrer}.
  - With users, the pages need a session; the session's CSRF token is put
    in a C{<meta>} element for the scripts (pages are C{no-store}).
    Without users, the scripts ask for the secret once per browser tab and
    sign requests with it in the browser.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any
from urllib.parse import quote, urlencode

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.filepath import FilePath
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.template import Element, XMLFile, flatten, flattenString

from karajo import resources
from karajo.errors import ClusterUnavailable
from karajo.kinds import JobKind
from karajo.logtext import client_text
from karajo.twisted_private import request_gone
from karajo.web.clusterpage import ClusterPage, ClusterPanel, ClusterView
from karajo.web.pages import Dashboard, JobPage, Page, RunPage, Simple
from karajo.web.params import query_params
from karajo.web.static import StaticFiles
from karajo.web.views import JobView, Views

__all__ = ["CSP", "SECURITY_HEADERS", "WebUI", "safe_next"]

log = Logger()

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode("ascii")),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
)

_NEXT_OK = re.compile(r"\A/karajo/app/[A-Za-z0-9_./?&=%-]*\Z")


def safe_next(value: str | None) -> str:
    """Where to go after login: a dashboard URL, never another site."""
    if value and _NEXT_OK.match(value) and "//" not in value and ".." not in value:
        return value
    return "/karajo/app/"


class _UIResource(Resource):
    isLeaf = True

    def __init__(self, ui: WebUI) -> None:
        super().__init__()
        self.ui = ui

    def render(self, request: Any) -> Any:
        for name, value in SECURITY_HEADERS:
            request.setHeader(name, value)
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return self.ui.error_page(request, 405, "Method not allowed",
                                      "This page only answers GET.")
        return self.ui.route(request, list(request.postpath))


class WebUI:
    """
    The dashboard of a L{karajo.service.KarajoService}.

    @param service: the server whose jobs are shown.
    @param sessions: its L{karajo.users.Sessions}.
    @param templates: the templates directory (default: the installed one).
    """

    def __init__(self, service: Any, sessions: Any, *, templates: str | None = None,
                 clock: Any = None) -> None:
        self.service = service
        #: what "now" is for the job page's next fires of a paused schedule
        self.clock = clock
        self.sessions = sessions
        self._dir = templates or resources.templates_dir()
        self._loaders: dict[str, XMLFile] = {}
        self.static = StaticFiles(os.path.join(self._dir, "static"))
        self.views = Views(service)

    @property
    def env(self) -> Any:
        """The running environment (a reload replaces it)."""
        return self.service.env

    def resource(self) -> IResource:
        return _UIResource(self)

    def loader(self, name: str) -> XMLFile:
        """The template C{templates/NAME.html}, parsed once."""
        loader = self._loaders.get(name)
        if loader is None:
            loader = XMLFile(FilePath(os.path.join(self._dir, name + ".html")))
            self._loaders[name] = loader
        return loader

    def _now(self) -> float:
        return self.clock.seconds() if self.clock is not None else time.time()

    def _session(self, request: Any) -> Any:
        return self.sessions.from_request(request)

    # --- responses ------------------------------------------------------------

    def _render(self, request: Any, element: Element, code: int = 200) -> Any:
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        d = flattenString(request, element)

        def written(body: bytes) -> None:
            if not request_gone(request):
                request.setHeader(b"content-length", b"%d" % (len(body) + 16))
                request.write(b"<!DOCTYPE html>\n" + body)
                request.finish()

        def failed(failure: Any) -> None:
            log.failure("rendering {path} failed", failure,
                        path=client_text(request.path))
            if not request_gone(request):
                request.setResponseCode(500)
                request.setHeader(b"content-type", b"text/plain; charset=utf-8")
                request.setHeader(b"content-length", b"22")
                request.write(b"internal server error\n")
                request.finish()

        d.addCallbacks(written, failed)
        return NOT_DONE_YET

    def _stream(self, request: Any, element: Element) -> Any:
        """
        Render C{element} as it is flattened, chunk by chunk: the browser
        paints the top of a long page (a dashboard of 1,000 jobs) while the
        rest is still being rendered (L{Dashboard.jobs} yields to the reactor
        between groups of cards, so the first chunk leaves at once).  A
        failure half-way can only cut the page off: it is logged and the
        connection closed.
        """
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.write(b"<!DOCTYPE html>\n")

        def write(data: bytes) -> None:
            if not request_gone(request):
                request.write(data)

        def done(_: Any) -> None:
            if not request_gone(request):
                request.finish()

        def failed(failure: Any) -> None:
            log.failure("rendering {path} failed", failure, path=client_text(request.path))
            if not request_gone(request):
                request.loseConnection()

        flatten(request, element, write).addCallbacks(done, failed)
        return NOT_DONE_YET

    def page(self, request: Any, title: str, page: str, body: Element,
             session: Any = None, code: int = 200, stream: bool = False) -> Any:
        element = Page(self, request, title, body, page, session)
        if stream and code == 200:
            return self._stream(request, element)
        return self._render(request, element, code)

    def error_page(self, request: Any, code: int, title: str, message: str,
                   session: Any = None) -> Any:
        body = Simple(self.loader("error"), title=title, message=message, code=str(code))
        return self.page(request, title, "error", body, session, code)

    def redirect(self, request: Any, location: str) -> bytes:
        request.setResponseCode(302)
        request.setHeader(b"location", location.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b""

    # --- routing ----------------------------------------------------------------

    def route(self, request: Any, path: list[bytes]) -> Any:
        if path == []:
            return self.redirect(request, "/karajo/")
        if path == [b""]:
            return self.login(request)
        if path[0] == b"static" and len(path) == 2:
            return self.static_file(request, path[1])
        if path[0] == b"app":
            if path == [b"app"]:
                return self.redirect(request, "/karajo/app/")
            session = self._session(request)
            if self.sessions.enabled and session is None:
                target = request.uri.decode("latin-1")
                return self.redirect(request, "/karajo/?next=" + quote(safe_next(target), safe=""))
            if path == [b"app", b""]:
                return self.dashboard(request, session)
            if path == [b"app", b"job"]:
                return self.job_page(request, session)
            if path == [b"app", b"run"]:
                return self.run_page(request, session)
            if path == [b"app", b"log"]:
                return self.log_redirect(request)
            if path == [b"app", b"cluster"]:
                return self.cluster_page(request, session)
        return self.error_page(request, 404, "Not found", "There is no such page.",
                               self._session(request))

    def login(self, request: Any) -> Any:
        nxt = safe_next(query_params(request).get("next"))
        if not self.sessions.enabled or self._session(request) is not None:
            return self.redirect(request, nxt)
        body = Simple(self.loader("login"), app_name=self.env.name, next=nxt)
        return self.page(request, "Log in", "login", body)

    def dashboard(self, request: Any, session: Any) -> Any:
        views = self.views.all()
        cluster = getattr(self.service, "cluster", None)
        # The panel counts nodes and names the dead ones: no run is looked at.
        panel = None if cluster is None else ClusterPanel(
            self.loader("cluster_panel"), ClusterView(cluster, []))
        return self.page(request, "Dashboard", "dashboard", Dashboard(self, views, panel),
                         session, stream=True)

    def cluster_page(self, request: Any, session: Any) -> Any:
        """The nodes of the cluster; a single server has none (404)."""
        cluster = getattr(self.service, "cluster", None)
        if cluster is None:
            return self.error_page(request, 404, "Not a cluster",
                                   "This karajo runs alone: it has no [cluster] section.",
                                   session)
        body = ClusterPage(self.loader("cluster"), ClusterView(cluster, self.views.all()),
                           self._now())
        return self.page(request, "Cluster", "cluster", body, session)

    def _find(self, request: Any, session: Any) -> tuple[JobView | None, Any]:
        query = query_params(request)
        try:
            kind = JobKind(query.get("kind", JobKind.JOB))
        except ValueError:
            return None, self.error_page(request, 400, "Bad request",
                                         "kind must be job or job_http.", session)
        view = self.views.find(kind, query.get("id", ""))
        if view is None:
            return None, self.error_page(request, 404, "No such job",
                                         "There is no job with this ID.", session)
        return view, None

    def job_page(self, request: Any, session: Any) -> Any:
        view, failed = self._find(request, session)
        if view is None:
            return failed
        page_text = query_params(request).get("page", "1")
        if not re.fullmatch(r"[0-9]{1,9}", page_text) or int(page_text) < 1:
            return self.error_page(request, 400, "Bad request",
                                   "page must be a whole number from 1.", session)
        body = JobPage(self, view, int(page_text), self._now())
        return self.page(request, view.name, "job", body, session)

    def log_redirect(self, request: Any) -> bytes:
        """
        C{/karajo/app/log}, the run page's older name, which webhook
        notifications still send as C{log_url} (docs/behaviour.md): the
        same query, on the run page.
        """
        query = query_params(request)
        kept = [(key, query[key]) for key in ("kind", "id", "counter") if key in query]
        return self.redirect(request, "/karajo/app/run?" + urlencode(kept))

    def run_page(self, request: Any, session: Any) -> Any:
        view, failed = self._find(request, session)
        if view is None:
            return failed
        counter_text = query_params(request).get("counter", "")

        def show(found: Any) -> Any:
            if found is None:
                return self.error_page(request, 404, "No such run",
                                       "This run has no log (old logs are deleted).", session)
            name, content = found
            status = name.status or "running"
            text = content.decode("utf-8", errors="replace")
            body = RunPage(self, view, name, status, text, len(content), self._now())
            return self.page(request, f"{view.name} #{name.counter}", "run", body, session)

        if not (re.fullmatch(r"[0-9]{1,18}", counter_text) and int(counter_text) >= 1):
            return show(None)
        counter = int(counter_text)
        cluster = getattr(self.service, "cluster", None)

        def elsewhere(found: Any) -> Any:
            # A run of another node of the cluster: its log is in the database.
            if found is None and cluster is not None:
                return defer.ensureDeferred(cluster.read_log(view.kind, view.id, counter))
            return found

        # A log may be 10 MiB: read it off the reactor thread, then render.
        d = view.store.read_in_thread(counter)
        d.addCallback(elsewhere)
        d.addCallback(show)

        def read_failed(f: Any) -> Any:
            if f.check(ClusterUnavailable):
                return self.error_page(request, 503, "Cluster unavailable",
                                       "This run ran on another node, and the cluster's database "
                                       "cannot be reached now: try again shortly.", session)
            log.failure("run page failed", f)
            return self.error_page(request, 500, "Error", "The log could not be read.", session)

        d.addErrback(read_failed)
        return NOT_DONE_YET

    def static_file(self, request: Any, name: bytes) -> Any:
        body = self.static.render(request, name.decode("latin-1"))
        if body is None:
            return self.error_page(request, 404, "Not found", "There is no such file.")
        return body
