"""
A whole karajo server: the job services of L{karajo.service} and the HTTP
site of L{karajo.web.site}, on one reactor.

The one module that joins the two layers: services know nothing of the
web, and the web only reads the services it is given.  It takes the
reactor as a parameter like everything below it; the entry points
(L{karajo.tap}, L{karajo.make_service}) pick it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import serverFromString

from karajo.config import Loaded, listen_endpoint
from karajo.notify import Notifier
from karajo.service import KarajoService, build_job_services, thread_runner
from karajo.twisted_private import raise_listen_errors
from karajo.web.site import build_site

__all__ = ["build_service"]


def build_service(
    loaded: Loaded,
    reactor: Any,
    run_in_thread: Callable[..., Any] | None = None,
    notifier: Notifier | None = None,
    cluster_store: Any = None,
) -> KarajoService:
    """
    The server for C{loaded}: every job's service, and the HTTP listener
    (the child named C{http}).

    @param run_in_thread: C{f, *args -> Deferred} off the reactor thread,
        for disk waits and bcrypt; by default C{reactor}'s own thread pool
        (L{thread_runner}).
    @param notifier: replaces the mail notifier built from the
        environment's notifs (tests).
    @param cluster_store: replaces the PostgreSQL store of a C{[cluster]}
        (tests).
    """
    if run_in_thread is None:
        run_in_thread = thread_runner(reactor)
    service = build_job_services(loaded, reactor, run_in_thread, notifier, cluster_store)
    endpoint = serverFromString(reactor, listen_endpoint(service.env.listen_address))
    listener = StreamServerEndpointService(
        endpoint, build_site(service, reactor, run_in_thread)
    )
    # A failed listen raises from privilegedStartService instead of being
    # logged while the daemon runs on without its HTTP side.
    raise_listen_errors(listener)
    listener.setName("http")
    listener.setServiceParent(service)
    return service
