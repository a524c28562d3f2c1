"""
C{twistd karajo}: options and the service maker.

The entry point for twistd, and so (with L{karajo.make_service} for C{.tac}
files) the only module that picks the global reactor: twistd has installed
the one asked for (C{-r}) before L{makeService} imports it.  Config errors are found in
L{Options.postOptions}, before twistd daemonizes, and are printed as
C{FILE:LINE: reason} with no traceback.
"""

from __future__ import annotations

import os
import signal
import sys

from twisted.application.service import IService
from twisted.logger import Logger
from twisted.python import usage

from karajo.config import DEFAULT_CONFIG, Loaded, load_environment
from karajo.errors import ConfigError, StartupError
from karajo.scrub import scrub_environment


class Options(usage.Options):
    synopsis = "[--config FILE]"
    longdesc = "Run the karajo job runner on the configuration in FILE."
    optParameters = [
        ["config", "c", DEFAULT_CONFIG, "The main configuration file."],
    ]

    loaded: Loaded
    #: the C{$VAR} credentials read at start-up, kept for a reload: they
    #: are no longer in the daemon's environment after the scrub
    credentials: dict[str, str]

    def postOptions(self) -> None:
        try:
            self.loaded = load_environment(self["config"])
        except ConfigError as e:
            for warning in e.warnings:
                sys.stderr.write(f"karajo: warning: {warning}\n")
            sys.stderr.write(f"karajo: {e}\n")
            raise SystemExit(1) from None
        self.credentials = {
            name: os.environ[name] for name in self.loaded.credential_vars if name in os.environ
        }
        # Read once: a job running as this user must not find them in
        # /proc/$PPID/environ (see karajo.scrub for what this cannot do).
        scrub_environment(self.loaded.credential_vars)


def _stop_cleanly_on_sigterm(reactor) -> None:
    """
    SIGTERM is how systemd and operators ask for a normal stop: stop the
    services (which cancel runs and finalise their logs) and exit 0, rather
    than twistd's default of re-raising the signal after shutdown.
    """

    def handler(signum, frame) -> None:
        reactor.callFromThread(reactor.stop)

    signal.signal(signal.SIGTERM, handler)
    # From here on SIGTERM means a clean stop with exit status 0 (a SIGTERM
    # in the instant before is still a clean stop, reported as a signal).
    Logger().info("karajo is ready")


def _reload_on_sighup(reactor, service, reloader) -> None:
    """
    SIGHUP re-reads the configuration (docs/behaviour.md, "Reloading";
    C{ExecReload} of the systemd unit): the reload runs on the reactor
    thread, its file reads off it.  Installed with the service, so a
    SIGHUP during the start-up never kills the daemon (the default
    action); such a reload waits until every job is started.
    """

    def reload() -> None:
        # A start that failed ends the daemon anyway.
        service.when_ready().addCallbacks(lambda _: reloader.reload(), lambda _: None)

    def handler(signum, frame) -> None:
        reactor.callFromThread(reload)

    signal.signal(signal.SIGHUP, handler)


def _report_startup_errors() -> None:
    """
    A L{StartupError} (raised while twistd builds or starts the service)
    ends the process with status 1 and its one-line message, not a
    traceback; everything else keeps Python's report.
    """
    default = sys.excepthook

    def hook(kind, value, traceback) -> None:
        if issubclass(kind, StartupError):
            sys.stderr.write(f"karajo: {value}\n")
        else:
            default(kind, value, traceback)

    sys.excepthook = hook


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    from karajo.reload import Reloader
    from karajo.server import build_service

    _report_startup_errors()
    service = build_service(options.loaded, reactor)
    reloader = Reloader(
        service, os.path.abspath(options["config"]), {**os.environ, **options.credentials}
    )
    _reload_on_sighup(reactor, service, reloader)

    def not_started(failure) -> None:
        # Logged by the service; the daemon must not run on without its jobs.
        sys.stderr.write(f"karajo: cannot read the jobs' state: {failure.getErrorMessage()}\n")
        reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
        reactor.stop()

    # "ready" once every job has its state back (read off the reactor thread).
    reactor.callWhenRunning(
        lambda: service.when_ready().addCallbacks(
            lambda _: _stop_cleanly_on_sigterm(reactor), not_started
        )
    )
    return service
