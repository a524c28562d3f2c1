"""
A daemon's services and site on the real reactor, from its config files, on
a free loopback port: the integration tests' way to drive a configuration
through HTTP without spawning C{twistd}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from karajo.config import Loaded, load_environment
from karajo.server import build_service
from karajo.service import thread_runner
from karajo.web.site import build_site


async def serve(test: TestCase, config: str) -> tuple[Loaded, Any, str]:
    """
    Load C{config}, start its services (ready: every job's state read) and
    serve its site; stopped when C{test} ends.  Returns the loaded config,
    the service and the site's base URL.
    """
    loaded = load_environment(config)
    service = build_service(loaded, reactor)
    service.removeService(service.getServiceNamed("http"))
    service.startService()
    await service.when_ready()
    port = reactor.listenTCP(
        0, build_site(service, reactor, thread_runner(reactor)), interface="127.0.0.1"
    )

    async def stop() -> None:
        await port.stopListening()
        if service.running:
            await service.stopService()

    test.addCleanup(stop)
    return loaded, service, f"http://127.0.0.1:{port.getHost().port}"
