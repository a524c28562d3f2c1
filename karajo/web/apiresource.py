"""
The resource that serves the JSON API: Klein's, with two exceptions that
come before werkzeug's routing.  A path that is not UTF-8 gets the API's
JSON 404 (not Klein's plain-text 400 and its logged traceback), and the
webhook POST, the hottest route of all (every webhook, and every forged
one), goes straight to its handler (docs/architecture.md; bench/PROFILE.md
measured werkzeug's matching and Klein's Deferred chain costing more than
the handler itself), and L{APIResource.hot} answers the ones that
L{karajo.web.hotpath} reads without twisted.web's request.
"""

from __future__ import annotations

from typing import Any

from klein import Klein
from klein.resource import KleinResource
from twisted.web.server import NOT_DONE_YET
from werkzeug.exceptions import NotFound


class APIResource(KleinResource):
    """
    Klein's resource, except that a path which is not UTF-8 gets the JSON
    404 rather than Klein's plain-text 400 (and its logged traceback).
    """

    def __init__(self, app: Klein, api: Any) -> None:
        super().__init__(app)
        self._api = api

    def render(self, request: Any) -> Any:
        try:
            for segment in request.prepath + request.postpath:
                segment.decode("utf-8")
        except UnicodeDecodeError:
            return self._api._error_body(request, NotFound())
        # The hottest route (every webhook, and every forged one) goes
        # straight to its handler: werkzeug's matching and Klein's Deferred
        # chain cost more than the handler itself.  The answer is written
        # as Klein writes it.
        body = self.hot(request)
        if body is not None:
            request.write(body)
            request.finish()
            return NOT_DONE_YET
        return super().render(request)

    def hot(self, request: Any) -> bytes | None:
        """
        A webhook POST (read by Twisted, or by L{karajo.web.hotpath})
        answered at once; C{None} for any other request, and on a cluster
        node, whose answer waits on the database (a Deferred: Klein's chain
        writes that one).
        """
        path = _webhook_path(request) if self._api._cluster is None else None
        if path is None:
            return None
        request.prepath += request.postpath
        request.postpath = []
        body = self._api.job_exec_run(request, path=path)
        if not isinstance(body, bytes):
            raise TypeError(f"the webhook handler answered {type(body).__name__}, not bytes")
        return body


#: C{POST /karajo/api/job_exec/run/<path>} split at its slashes.
_WEBHOOK_PREFIX = [b"karajo", b"api", b"job_exec", b"run"]


def _webhook_path(request: Any) -> str | None:
    """
    The C{<path>} of a webhook POST, as Klein's route would give it; C{None}
    for anything else, and for a path werkzeug would treat its own way (an
    empty segment: a double or trailing slash), which Klein then routes.
    """
    postpath = request.postpath
    if request.method != b"POST" or len(postpath) < 5 or postpath[:4] != _WEBHOOK_PREFIX:
        return None
    rest = postpath[4:]
    if b"" in rest:
        return None
    return b"/".join(rest).decode("utf-8")
