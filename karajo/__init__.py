"""
karajo: a cron-like job runner managed over HTTP.

For people who configure karajo from Python (docs/behaviour.md, "Building a server from Python")::

    from karajo import Environment, Job, make_service

    def hello(log, request):
        log.write("Hello world from code\\n")

    env = Environment(dir_base="/srv/karajo", secret="s3cret", jobs={
        "hello-code": Job(path="/hello-code", call=hello),
    })
    service = make_service(env)      # a twisted.application MultiService

See C{examples/karajo_example.tac} for a complete C{twistd -ny} file.
"""

from __future__ import annotations

from karajo.config import Loaded, load_environment, validate
from karajo.errors import ConfigError
from karajo.model import Environment, Job, JobHttp, Notif, TriggerRequest, User
from karajo.version import __version__


def make_service(env: Environment, reactor=None):
    """
    Validate a code-built (or extended) environment and build its server,
    exactly as C{twistd karajo} builds one from files.

    With no C{reactor} the global one is used (installing the default if
    none is yet): a C{.tac} file that wants another installs it before
    calling this.  Importing karajo never installs one.

    @raise ConfigError: the environment is not valid.
    """
    from karajo.server import build_service

    if reactor is None:
        from twisted.internet import reactor
    environment, warnings = validate(env)
    return build_service(Loaded(environment, warnings), reactor)


__all__ = [
    "ConfigError",
    "Environment",
    "Job",
    "JobHttp",
    "Loaded",
    "Notif",
    "TriggerRequest",
    "User",
    "__version__",
    "load_environment",
    "make_service",
    "validate",
]
