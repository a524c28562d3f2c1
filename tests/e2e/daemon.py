"""
Start the installed daemon as a real process, for end-to-end tests.

C{twistd} is the one beside the running interpreter, so the tests exercise
the plugin exactly as C{pip install .} put it in place.
"""

from __future__ import annotations

import os
import socket
import sys

from twisted.internet import defer, protocol, reactor
from twisted.internet.error import ProcessDone


def twistd() -> str:
    return os.path.join(os.path.dirname(sys.executable), "twistd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CollectingProtocol(protocol.ProcessProtocol):
    """Collect output and fire C{ended} with the exit code."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.ended: defer.Deferred[int] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out.extend(data)

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        code = 0 if reason.check(ProcessDone) else reason.value.exitCode
        if code is None:
            code = -(reason.value.signal or 0)
        self.ended.callback(code)


def start_twistd(config: str, cwd: str | None = None, env: dict | None = None):
    """Spawn C{twistd -n karajo --config CONFIG}; return (protocol, process)."""
    proto = CollectingProtocol()
    environ = dict(os.environ)
    environ.update(env or {})
    process = reactor.spawnProcess(
        proto,
        twistd(),
        [twistd(), "--pidfile=", "-n", "karajo", "--config", config],
        env=environ,
        path=cwd,
    )
    return proto, process


async def wait_listening(port: int, timeout: float) -> float:
    """Poll until 127.0.0.1:PORT accepts a connection; return the seconds it took."""
    from twisted.internet.task import deferLater

    start = reactor.seconds()
    while reactor.seconds() - start < timeout:
        with socket.socket() as s:
            # Loopback answers a connect at once (accept or refuse).
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return reactor.seconds() - start
        await deferLater(reactor, 0.05, lambda: None)
    raise TimeoutError(f"nothing listening on {port} after {timeout}s")
