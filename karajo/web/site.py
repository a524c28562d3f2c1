"""
The whole HTTP site: the JSON API, the web UI and C{dir_public}.

    /karajo/api/...   JSON API (L{karajo.web.api})
    /karajo/metrics   Prometheus metrics (L{karajo.web.metrics})
    /karajo/...       web UI: login, dashboard, job and log pages, static files
    /...              files of dir_public (when set), else 404

Everything goes through one L{limited_site}, so the body cap and the
slow-client timeouts protect every route.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.web.resource import IResource, Resource, getChildForRequest
from twisted.web.server import NOT_DONE_YET, Site

from karajo.twisted_private import request_gone
from karajo.users import Sessions, threaded_check
from karajo.version import __version__
from karajo.web.api import KarajoAPI
from karajo.web.compression import gzipped
from karajo.web.errors import error
from karajo.web.limits import limited_site
from karajo.web.metrics import Metrics
from karajo.web.ui import WebUI


class _NotFound(Resource):
    isLeaf = True

    def render(self, request):
        return error(request, 404, "ERR_NOT_FOUND", "not found")


class _HeldUntilReady(Resource):
    """
    A request for the jobs (API, dashboard, metrics) that came in while
    the server still reads their state at start-up: it waits, then goes
    its normal way, so no client sees a job without its counter.
    """

    isLeaf = True

    def __init__(self, root: Resource, ready: Deferred[None]) -> None:
        super().__init__()
        self._root = root
        self._ready = ready

    def render(self, request: Any) -> Any:
        def go(_: object) -> None:
            if request_gone(request):
                return
            request.postpath.insert(0, request.prepath.pop())
            request.render(getChildForRequest(self._root, request))

        def failed(_: object) -> None:
            if not request_gone(request):
                request.write(error(request, 503, "ERR_SERVER_STARTING",
                                    "karajo could not start its jobs"))
                request.finish()

        self._ready.addCallbacks(go, failed)
        return NOT_DONE_YET


class Root(Resource):
    """Route by the first path segments without consuming them for the API."""

    def __init__(self, api: IResource, ui: IResource | None, public: IResource | None,
                 metrics: IResource | None = None, service: Any = None) -> None:
        super().__init__()
        # Answers gzip-compressed when asked (karajo.web.compression), all
        # but the events streams', which must reach a follower piece by piece.
        self._api_plain = api
        self._api = gzipped(api)
        self._ui = gzipped(ui) if ui is not None else None
        self._public = public
        self._metrics = gzipped(metrics) if metrics is not None else None
        self._service = service

    def getChildWithDefault(self, name: bytes, request) -> IResource:
        if name == b"karajo" and self._service is not None and not self._service.ready:
            return _HeldUntilReady(self, self._service.when_ready())
        if name == b"karajo":
            if request.postpath == [b"metrics"] and self._metrics is not None:
                return self._metrics
            if request.postpath[:1] == [b"api"] or self._ui is None:
                # The API's routes are full paths: hand it the request as
                # it came, with "karajo" still in postpath.
                request.postpath.insert(0, request.prepath.pop())
                if request.postpath[3:4] == [b"events"]:
                    return self._api_plain
                return self._api
            return self._ui
        if self._public is not None:
            request.postpath.insert(0, request.prepath.pop())
            return self._public
        return _NotFound()

    def render(self, request):
        if self._public is not None:
            return self._public.render(request)
        request.redirect(b"/karajo/")
        request.setResponseCode(302)
        return b""


class _UsersOf:
    """Gives the login sessions a reload's users (docs/behaviour.md, "Reloading")."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    def reloaded(self, service: Any, added: Any, removed: Any) -> None:
        self._sessions.replace_users(service.env.users)


def build_site(
    service: Any,
    clock: Any,
    run_in_thread: Callable[..., Any],
    *,
    sessions: Sessions | None = None,
) -> Site:
    """
    The site of a L{KarajoService}: API, UI and public files, capped.

    @param clock: the reactor the site's timeouts and sessions run on.
    @param run_in_thread: C{f, *args -> Deferred} off the reactor thread
        (L{karajo.service.thread_runner}): bcrypt checks go there.
    @param sessions: the login sessions; by default the environment's users
        with bcrypt checked through C{run_in_thread}.
    """
    env = service.env
    if sessions is None:
        # bcrypt takes ~0.2 s of CPU: never on the reactor thread.
        sessions = Sessions(env.users, clock, check=threaded_check(run_in_thread))
    listeners = getattr(service, "reload_listeners", None)
    if listeners is not None:
        listeners.append(_UsersOf(sessions))
    api = KarajoAPI(service, clock, sessions, version=__version__)
    metrics = Metrics(service, api.refusals, api.access, clock)
    ui = WebUI(service, sessions, clock=clock).resource()
    public = None
    if env.dir_public:
        from karajo.web.public import PublicFiles

        public = PublicFiles(env.dir_public)
    api_resource = api.resource()
    root = Root(api_resource, ui, public, metrics.resource(), service)

    def hot_route(request: Any) -> bytes | None:
        # Held back like every request for the jobs until they are ready.
        return api_resource.hot(request) if service.ready else None

    return limited_site(root, env.max_body_size, clock=clock, hot_route=hot_route)
