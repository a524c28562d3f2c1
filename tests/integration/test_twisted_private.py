"""
Tests of L{karajo.twisted_private}: one per hook into Twisted's private
API, each failing loudly when the hooked name disappears or changes shape,
so that a Twisted upgrade breaks here and nowhere else.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap

from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer, reactor
from twisted.internet.error import CannotListenError, ConnectionLost
from twisted.internet.process import Process
from twisted.internet.protocol import Factory
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import http
from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory
from twisted.web.test.requesthelper import DummyChannel

from karajo import twisted_private
from karajo.twisted_private import (
    SPAWN_HOOK_PARAMETERS,
    HTTPChannelHooks,
    quiet_connections,
    raise_listen_errors,
    request_gone,
    spawn_hook_usable,
)


class SpawnHook(SynchronousTestCase):
    """Hook 1: C{Process._trySpawnInsteadOfFork}."""

    def test_hook_has_its_shape(self) -> None:
        """The method exists with the parameters L{SpawnHookProcess} overrides."""
        hook = getattr(Process, "_trySpawnInsteadOfFork", None)
        self.assertIsNotNone(hook, "Twisted no longer has Process._trySpawnInsteadOfFork")
        self.assertEqual(list(inspect.signature(hook).parameters), SPAWN_HOOK_PARAMETERS)

    def test_called_by_process(self) -> None:
        """Process._fork still asks the hook before forking."""
        self.assertIn("self._trySpawnInsteadOfFork(", inspect.getsource(Process._fork))

    def test_usable_on_this_reactor(self) -> None:
        """On Linux's reactor the session spawn is used, not the setsid(1) fallback."""
        self.assertTrue(spawn_hook_usable(reactor))


class _FailingEndpoint:
    def listen(self, factory: object) -> defer.Deferred[None]:
        return defer.fail(CannotListenError("127.0.0.1", 1, OSError(98, "Address in use")))


class ListenErrors(SynchronousTestCase):
    """Hook 2: C{StreamServerEndpointService._raiseSynchronously}."""

    def test_attribute_exists(self) -> None:
        """The flag is still a class attribute, off by default."""
        self.assertIs(StreamServerEndpointService._raiseSynchronously, False)

    def test_failed_listen_raises(self) -> None:
        """With the flag set, a listen that fails at once raises from privilegedStartService."""
        service = StreamServerEndpointService(_FailingEndpoint(), Factory())
        raise_listen_errors(service)
        self.assertRaises(CannotListenError, service.privilegedStartService)


class PoolFactory(SynchronousTestCase):
    """Hook 3: C{HTTPConnectionPool._factory}."""

    def test_attribute_exists(self) -> None:
        """The pool still builds its connections from C{_factory}."""
        self.assertIs(HTTPConnectionPool._factory, _HTTP11ClientFactory)
        self.assertIn("self._factory(", inspect.getsource(HTTPConnectionPool._newConnection))

    def test_quiet(self) -> None:
        """The replacement is Twisted's factory, without the log lines."""
        pool = HTTPConnectionPool(reactor, persistent=False)
        quiet_connections(pool)
        self.assertTrue(issubclass(pool._factory, _HTTP11ClientFactory))
        self.assertFalse(pool._factory.noisy)


class RequestGone(SynchronousTestCase):
    """Hook 4: C{Request._disconnected}."""

    def test_follows_connection_lost(self) -> None:
        """False while connected, True once the connection is lost."""
        self.assertIs(http.Request._disconnected, False)
        request = http.Request(DummyChannel())
        self.assertFalse(request_gone(request))
        request.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(request_gone(request))


class _Channel(HTTPChannelHooks):
    refused = 0
    continue_allowed = True

    def refuse_malformed_request(self) -> None:
        self.refused += 1
        self.transport.loseConnection()

    def may_continue(self) -> bool:
        return self.continue_allowed


def _channel() -> tuple[_Channel, StringTransport]:
    channel = _Channel()
    channel.requestFactory = http.Request  # type: ignore[assignment]
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


class ChannelHooks(SynchronousTestCase):
    """Hook 5: the private parts of C{HTTPChannel} and C{LineReceiver}."""

    def test_names_exist(self) -> None:
        """Every hooked name is still there, with no parameters but self."""
        for name in ("_respondToBadRequestAndDisconnect", "_send100Continue"):
            method = getattr(http.HTTPChannel, name, None)
            self.assertIsNotNone(method, f"Twisted no longer has HTTPChannel.{name}")
            self.assertEqual(list(inspect.signature(method).parameters), ["self"], name)
        self.assertEqual(http.HTTPChannel._receivedHeaderSize, 0)
        self.assertEqual(http.HTTPChannel._HTTPChannel__first_line, 1)
        self.assertFalse(http.HTTPChannel()._handlingRequest)
        self.assertEqual(LineReceiver._buffer, b"")

    def test_malformed_request(self) -> None:
        """A request line Twisted refuses reaches refuse_malformed_request."""
        channel, transport = _channel()
        channel.dataReceived(b"NOT A REQUEST LINE AT ALL\r\n")
        self.assertEqual(channel.refused, 1)

    def test_header_bytes(self) -> None:
        """header_bytes_received counts the head; has_unparsed_data sees a partial line."""
        channel, transport = _channel()
        self.assertEqual(channel.header_bytes_received(), 0)
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\nX-Partial")
        self.assertGreater(channel.header_bytes_received(), 0)
        self.assertTrue(channel.has_unparsed_data())

    def test_at_request_start(self) -> None:
        """
        True only where the parser waits for a new request: not within a
        head, not while a request is answered, and again after its answer.
        """
        channel, transport = _channel()
        self.assertTrue(channel.at_request_start())
        channel.dataReceived(b"GET / HTTP/1.1\r\n")
        self.assertFalse(channel.at_request_start())
        channel.dataReceived(b"Host: x\r\n\r\n")
        self.assertFalse(channel.at_request_start())
        request = channel.requests[0]
        request.finish()
        self.assertTrue(channel.at_request_start())
        channel.dataReceived(b"G")
        self.assertFalse(channel.at_request_start())
        channel, transport = _channel()
        channel.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
        channel.requests[0].finish()
        self.assertFalse(channel.at_request_start())  # not persistent any more

    def test_short_request_answered(self) -> None:
        """After a stray CRLF, the reset lets Twisted forgive the next one too."""
        channel, transport = _channel()
        channel.dataReceived(b"\r\n")
        self.assertEqual(channel._HTTPChannel__first_line, 2)
        channel.short_request_answered()
        channel.dataReceived(b"\r\n")
        self.assertEqual((channel.refused, channel._HTTPChannel__first_line), (0, 2))
        channel.dataReceived(b"\r\n")
        self.assertEqual(channel.refused, 1)  # twice in a row: Twisted's 400

    def test_no_continue(self) -> None:
        """may_continue False: no interim 100 Continue is written."""
        head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
        channel, transport = _channel()
        channel.continue_allowed = False
        channel.dataReceived(head)
        self.assertNotIn(b"100 Continue", transport.value())
        channel, transport = _channel()
        channel.dataReceived(head)
        self.assertIn(b"100 Continue", transport.value())


_LATE_BINDING = textwrap.dedent(
    """
    import sys
    from karajo.twisted_private import _GlobalReactor, reactor_bound_late
    with reactor_bound_late():
        import klein._app
        import twisted.mail.smtp
    assert "twisted.internet.reactor" not in sys.modules, "an import installed the reactor"
    for module in (klein._app, twisted.mail.smtp):
        assert isinstance(module.reactor, _GlobalReactor), module.__name__
    import twisted.internet
    assert "reactor" not in vars(twisted.internet)
    from twisted.internet import asyncioreactor
    asyncioreactor.install()
    from twisted.internet import reactor
    assert type(reactor).__name__ == "AsyncioSelectorReactor", reactor
    assert klein._app.reactor.callLater.__self__ is reactor
    assert twisted.mail.smtp.reactor.callLater.__self__ is reactor
    print("ok")
    """
)


class ReactorBoundLate(TestCase):
    """Hook 6: klein and twisted.mail.smtp bind the reactor at import."""

    def test_stand_in(self) -> None:
        """
        In a fresh interpreter: both modules get the stand-in, no reactor is
        installed, and the stand-in then finds the one installed later.
        """
        done = subprocess.run(
            [sys.executable, "-c", _LATE_BINDING], capture_output=True, text=True, timeout=60
        )
        self.assertEqual((done.returncode, done.stdout.strip()), (0, "ok"), done.stderr)

    def test_installed_reactor_untouched(self) -> None:
        """With a reactor installed (as here, under trial), nothing is replaced."""
        import twisted.internet

        before = vars(twisted.internet).get("reactor")
        with twisted_private.reactor_bound_late():
            from twisted.internet import reactor as inside
        self.assertIs(inside, reactor)
        self.assertIs(vars(twisted.internet).get("reactor"), before)
