"""
Every place karajo reaches into Twisted (or a library built on it) past its
public API, in one module.

A Twisted upgrade may rename or reshape any of these without notice: each
hook below says why it exists and what breaks when it changes, and
C{tests/test_twisted_private.py} has one test per hook that fails loudly,
here and nowhere else, when the hooked name disappears or changes shape.
Nothing else in karajo may name a private Twisted attribute (one starting
with C{_}); use what this module offers instead.

The hooks:

  1. L{SpawnHookProcess}: C{twisted.internet.process.Process.
     _trySpawnInsteadOfFork}, overridden so a command starts straight as
     the leader of a new group (C{posix_spawn} with C{setpgroup}, or
     C{setsid}).  If it changes,
     L{spawn_hook_usable} says so and commands fall back to C{setsid(1)}
     (half a millisecond slower per command, nothing else changes).
  2. L{raise_listen_errors}: C{StreamServerEndpointService.
     _raiseSynchronously}, so a listen that fails (address in use) stops
     the start-up with exit status 1 instead of being logged while the
     daemon runs on without its HTTP side.
  3. L{quiet_connections}: C{HTTPConnectionPool._factory}, replaced by a
     subclass of C{twisted.web.client._HTTP11ClientFactory} that does not
     log "Starting factory" / "Stopping factory" (two info lines per run
     of every JobHttp).  If it changes, only the log gets noisier.
  4. L{request_gone}: C{Request._disconnected}, whether the client went
     away before a page rendered asynchronously was written (writing then
     raises).  C{notifyFinish} would need a callback per page.
  5. L{HTTPChannelHooks}: C{HTTPChannel._respondToBadRequestAndDisconnect},
     C{_send100Continue}, C{_receivedHeaderSize}, C{_handlingRequest},
     C{__first_line} (read, and reset after a request answered the short
     way) and C{LineReceiver._buffer}, under public names, for
     L{karajo.web.limits.LimitedChannel}: the JSON 400/431 answer with a
     lingering close, no "100 Continue" for a body already refused, the
     408 only for a client that had started a request, and the webhook's
     short way (L{karajo.web.hotpath}) only where Twisted's parser waits for
     a new request.  If they change, malformed requests get Twisted's bare
     400, or the request-timeout answer is wrong; if the parser's state
     names change, L{HTTPChannelHooks.at_request_start} says no and every
     webhook goes Twisted's way (slower, nothing else changes).
  6. L{reactor_bound_late}: C{klein} and C{twisted.mail.smtp} run
     C{from twisted.internet import reactor} when imported, which installs
     the default reactor: importing karajo's web or mail code would then
     decide the reactor for a C{.tac} file or a test.  They are imported
     with a stand-in that finds the global reactor when first used.  If
     they change how they import it, the import test in
     C{tests/test_twisted_private.py} fails (the stand-in is never used).
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.process import Process
from twisted.web import http
from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory

__all__ = [
    "HTTPChannelHooks",
    "SpawnHookProcess",
    "raise_listen_errors",
    "reactor_bound_late",
    "quiet_connections",
    "request_gone",
    "spawn_hook_usable",
]

# --- 1. the spawn hook ------------------------------------------------------

#: The parameters of C{Process._trySpawnInsteadOfFork} this module was written for.
SPAWN_HOOK_PARAMETERS = ["self", "path", "uid", "gid", "executable", "args", "environment", "kwargs"]


class SpawnHookProcess(Process):
    """
    A Twisted process whose child is started by C{spawn(executable, args,
    environment, fdmap) -> pid} once Twisted has made its pipes, instead of
    by Twisted's own fork or C{posix_spawnp}.

    Subclasses set C{spawn}; use only where L{spawn_hook_usable} is true.
    """

    spawn: Callable[[str, list[str], Mapping[str, str], Mapping[int, int]], int]

    def _trySpawnInsteadOfFork(
        self, path: Any, uid: Any, gid: Any, executable: str, args: list[str],
        environment: Mapping[str, str], kwargs: dict[str, Any],
    ) -> bool:
        assert path is None and uid is None and gid is None
        # Process reads these two after the hook returns True: the child's
        # pid, and -1 for "still running".
        self.pid = self.spawn(executable, args, environment, kwargs["fdmap"])
        self.status = -1
        return True


@functools.cache
def _spawn_hook_unchanged() -> bool:
    hook = getattr(Process, "_trySpawnInsteadOfFork", None)
    return (
        hasattr(os, "posix_spawn")
        and hook is not None
        and list(inspect.signature(hook).parameters) == SPAWN_HOOK_PARAMETERS
    )


def spawn_hook_usable(reactor: object) -> bool:
    """Whether a L{SpawnHookProcess} can be started on C{reactor}."""
    return isinstance(reactor, PosixReactorBase) and _spawn_hook_unchanged()


# --- 2. listen errors at start-up -------------------------------------------


def raise_listen_errors(service: StreamServerEndpointService) -> None:
    """
    Make C{service.privilegedStartService} raise when the listen fails at
    once, rather than log the failure and carry on.
    """
    service._raiseSynchronously = True


# --- 3. the HTTP client's connection factory --------------------------------


class _QuietClientFactory(_HTTP11ClientFactory):
    noisy = False


def quiet_connections(pool: HTTPConnectionPool) -> None:
    """Connections of C{pool} log no "Starting factory" / "Stopping factory" lines."""
    pool._factory = _QuietClientFactory


# --- 4. a request whose client left -----------------------------------------


def request_gone(request: Any) -> bool:
    """Whether C{request}'s connection was lost: nothing may be written to it."""
    return bool(request._disconnected)


# --- 5. the HTTP channel ----------------------------------------------------


class HTTPChannelHooks(http.HTTPChannel):
    """
    C{HTTPChannel} with the private parts karajo uses under public names.

    A subclass overrides L{refuse_malformed_request} and L{may_continue};
    by default both behave as Twisted does.
    """

    def header_bytes_received(self) -> int:
        """Bytes of the current request's head parsed so far (0 before its request line)."""
        return int(self._receivedHeaderSize)

    def has_unparsed_data(self) -> bool:
        """Whether received bytes wait for the end of their line."""
        return bool(self._buffer)

    def at_request_start(self) -> bool:
        """
        Whether the parser waits for the first byte of a new request:
        nothing of one read yet, no request being answered, the connection
        still persistent.  False when Twisted's state names changed.
        """
        return bool(
            self.line_mode
            and not self._buffer
            and self._receivedHeaderSize == 0
            and self.persistent
            and not self.requests
            and not getattr(self, "_handlingRequest", True)
            and getattr(self, "_HTTPChannel__first_line", 0)
        )

    def short_request_answered(self) -> None:
        """
        A request read and answered without Twisted's parser (the webhook's
        short way) ended: the parser's state is put back as Twisted's own
        end of a request does, so the stray CRLF a client may send after a
        body is again forgiven once.
        """
        self._HTTPChannel__first_line = 1

    def refuse_malformed_request(self) -> None:
        """Answer a request Twisted's parser refused (by default Twisted's bare 400)."""
        super()._respondToBadRequestAndDisconnect()

    def may_continue(self) -> bool:
        """Whether an C{Expect: 100-continue} may be answered now."""
        return True

    def _respondToBadRequestAndDisconnect(self) -> None:
        self.refuse_malformed_request()

    def _send100Continue(self) -> None:
        if self.may_continue():
            super()._send100Continue()


# --- 6. modules that bind the global reactor at import ----------------------


class _GlobalReactor:
    """
    Stands for C{twisted.internet.reactor} in a module that names it at
    import; the real one is looked up (and the default installed, if none
    is yet) only when an attribute is used.
    """

    def __getattr__(self, name: str) -> Any:
        if "twisted.internet.reactor" not in sys.modules:
            import twisted.internet.reactor  # noqa: F401  (installs the default)
        return getattr(sys.modules["twisted.internet.reactor"], name)

    def __repr__(self) -> str:
        return "<the global reactor, looked up when used>"


@contextmanager
def reactor_bound_late() -> Iterator[None]:
    """
    While inside, C{from twisted.internet import reactor} gives a
    L{_GlobalReactor} instead of installing the default reactor.

    Only for importing a module that binds the reactor at import and uses
    it later (klein's C{Klein.run}, smtp's C{sendmail} default); karajo's
    own code never uses those.
    """
    import twisted.internet

    if "twisted.internet.reactor" in sys.modules:
        yield  # a reactor is installed: nothing to defer
        return
    stand_in = _GlobalReactor()
    # What "from twisted.internet import reactor" finds before it would
    # import (and so install) the module of that name.
    namespace = vars(twisted.internet)
    namespace["reactor"] = stand_in
    try:
        yield
    finally:
        if namespace.get("reactor") is stand_in:
            del namespace["reactor"]
