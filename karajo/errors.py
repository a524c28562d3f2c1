"""
The exceptions that cross layers: raised in one, answered in another.

  - L{ConfigError}: the config files and L{karajo.validate} refuse a value;
    C{karajo check}, the tap and code callers print it.  A config problem
    must point the operator at the exact place to fix, so it carries the
    file and line it comes from and renders as C{FILE:LINE: reason}.
  - L{StartupError}: the server cannot start (a directory, an address);
    the tap prints it and exits non-zero.
  - L{RunRefused} (L{JobPaused}, L{JobBusy}, L{ServerStopping}): the runner
    refuses a trigger; the API maps each to its status in
    L{karajo.web.errors}, a timer fire just skips.
  - L{ClusterUnavailable}: a cluster node cannot reach its database; the
    API answers 503 with C{Retry-After}.
  - L{RunFailed}: a run's work failed in a way it explains; the runner
    writes the message into the log.

The HTTP API's own errors live in L{karajo.web.errors}.
"""

from __future__ import annotations


class ConfigError(Exception):
    """
    A configuration file (or code-built environment) is not acceptable.

    C{str(err)} is C{FILE:LINE: reason}, or C{FILE: reason} when no line
    applies (for example a missing file).
    """

    def __init__(self, filename: str, line: int | None, reason: str) -> None:
        self.filename = filename
        self.line = line
        self.reason = reason
        #: warnings found before the error (an unknown key may explain it:
        #: C{passwd} for C{password}); shown with it
        self.warnings: tuple[str, ...] = ()
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.filename}: {self.reason}"
        return f"{self.filename}:{self.line}: {self.reason}"


class StartupError(Exception):
    """
    karajo cannot start: a directory it cannot create, an address it cannot
    listen on.  C{str(err)} is the whole message for the operator; the
    process exits non-zero (so a supervisor sees the failure) without a
    traceback.
    """


class RunRefused(Exception):
    """A trigger was not accepted; the HTTP layer maps each kind to a status."""


class JobPaused(RunRefused):
    """The job is paused: triggers are refused until it is resumed."""


class JobBusy(RunRefused):
    """The job is running and one more run is already queued."""


class ServerStopping(RunRefused):
    """The server is shutting down and starts nothing new."""


class ServerStarting(RunRefused):
    """
    The job's logs and run records are still being read at start-up: a run
    now could take a counter that is already used.
    """


class ClusterUnavailable(RunRefused):
    """
    A cluster node cannot reach its database (or a job's owner did not
    answer in time): it cannot prove a run would be the only one, so it
    starts nothing and the caller is told to try again (docs/cluster.md).
    """


class RunFailed(Exception):
    """A run's work failed; C{message} goes into the log after C{!!!}."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


#: The owner's refusal of a forwarded request, by the error a local call
#: raised -> its word in the answer (C{refused:WORD}); the asking node
#: raises the same error again (L{karajo.web.api}).  The words cross the
#: database between nodes.
REFUSAL_WORDS: dict[type[Exception], str] = {
    JobBusy: "busy",
    JobPaused: "paused",
    ServerStopping: "stopping",
    ServerStarting: "starting",
    ClusterUnavailable: "unavailable",
}
