"""
Wire a validated environment into one L{MultiService}.

Each job gets a child service (its timer and runner); the HTTP listener is
one more child.  Everything takes the reactor as a parameter.
"""

from __future__ import annotations

import sys

from attrs import evolve
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Site

from karajo.config import Loaded, generate_secret, listen_endpoint
from karajo.model import Environment, Job, JobHttp
from karajo.paths import Paths

log = Logger()


class JobService(Service):
    """One job's timer and runner (filled in by the scheduling and run issues)."""

    def __init__(self, job: Job | JobHttp, env: Environment) -> None:
        self.job = job
        self.env = env
        self.setName(f"{job.kind}/{job.id}")


class KarajoService(MultiService):
    """The whole server: one child per job plus the HTTP listener."""

    def __init__(self, env: Environment) -> None:
        super().__init__()
        self.env = env
        self.jobs: dict[str, JobService] = {}
        self.http_jobs: dict[str, JobService] = {}


class _Placeholder(Resource):
    isLeaf = True

    def __init__(self, env: Environment) -> None:
        super().__init__()
        self._env = env

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return f"{self._env.name}: karajo is running\n".encode()


def build_service(loaded: Loaded, reactor) -> KarajoService:
    """
    Build the server for C{loaded}: create the directory tree, fill in a
    generated secret when none is set, and add every child service.
    """
    env = loaded.environment
    for warning in loaded.warnings:
        log.warn("{warning}", warning=warning)
    if not env.secret:
        env = evolve(env, secret=generate_secret())
        # The operator needs this value to sign requests; it is printed once
        # to the terminal, never written to the log.
        sys.stderr.write(
            f"karajo: no secret is set; generated secret for this run: {env.secret}\n"
        )
        log.warn("no [karajo] secret set; a random one was generated for this run")

    paths = Paths(env.dir_base)
    service = KarajoService(env)
    for table, jobs in ((service.jobs, env.jobs), (service.http_jobs, env.http_jobs)):
        for job in jobs.values():
            paths.ensure(job.kind, job.id)
            child = JobService(job, env)
            child.setServiceParent(service)
            table[job.id] = child

    endpoint = serverFromString(reactor, listen_endpoint(env.listen_address))
    listener = StreamServerEndpointService(endpoint, Site(_Placeholder(env)))
    listener.setName("http")
    listener.setServiceParent(service)
    return service
