"""
The outgoing HTTP clients of a server: JobHttp runs and webhook
notifications both send through one L{HttpClients} (TLS verified with
service-identity and the platform's trust roots, or, for an
C{http_insecure} job or notif, not verified), each request on its own
connection (see L{HttpClients} for why none is kept).
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import CertificateOptions
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HostnameCachingHTTPSPolicy,
    HTTPConnectionPool,
)
from twisted.web.iweb import IBodyProducer, IPolicyForHTTPS
from zope.interface import implementer

from karajo.twisted_private import quiet_connections

__all__ = ["USER_AGENT", "HttpClients"]

#: The User-Agent of every request karajo sends.
USER_AGENT = b"karajo"


@implementer(IBodyProducer)
class _BytesProducer:
    """
    A request body already in memory, written at once.

    treq's default turns bytes into a L{FileBodyProducer}, which runs on the
    global cooperator (and so the global reactor); a payload of a few bytes
    needs none of that.
    """

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> defer.Deferred[None]:
        consumer.write(self._body)
        return defer.succeed(None)

    def stopProducing(self) -> None:
        pass

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass


def _body_producer(data: Any) -> IBodyProducer:
    if isinstance(data, bytes):
        return _BytesProducer(data)
    return IBodyProducer(data)


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedCreator:
    """TLS to one host without any certificate check; SNI is still sent."""

    def __init__(self, context: SSL.Context, hostname: bytes) -> None:
        self._context = context
        name = hostname.decode("ascii", "replace")
        self._sni = None if isIPAddress(name) or isIPv6Address(name) else hostname

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        if self._sni:
            connection.set_tlsext_host_name(self._sni)
        return connection


@implementer(IPolicyForHTTPS)
class _InsecurePolicy:
    """The C{http_insecure} policy: encrypt, but trust any certificate."""

    def __init__(self) -> None:
        self._context: SSL.Context | None = None

    def creatorForNetloc(self, hostname: bytes, port: int) -> _UnverifiedCreator:
        if self._context is None:
            self._context = CertificateOptions(verify=False).getContext()
        return _UnverifiedCreator(self._context, hostname)


class HttpClients:
    """
    The HTTP clients of every JobHttp of the server: one agent that
    verifies TLS (service-identity, the default L{BrowserLikePolicyForHTTPS})
    and, for C{http_insecure} jobs, one that skips certificate checks.

    Connections are not kept between requests.  A JobHttp fires every 30 s
    or more, longer than most servers keep an idle connection (nginx 75 s,
    Apache and Node 5 s), and Twisted re-sends only idempotent requests when
    a kept connection turns out closed: a POST or PUT run would then fail
    with "connection closed" although the server was fine.  A fresh
    connection per run costs a handshake and makes every run independent
    (no TLS session or connection of an insecure job is ever reused by a
    verifying one).

    Each L{client} is a fresh L{HTTPClient}, so no cookie set by one
    response is sent by a later run or another job.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        pool = HTTPConnectionPool(reactor, persistent=False)
        # Twisted logs "Starting factory"/"Stopping factory" for every
        # connection: two lines per run of every JobHttp, at info level.
        quiet_connections(pool)
        self._verified = Agent(
            reactor, contextFactory=HostnameCachingHTTPSPolicy(BrowserLikePolicyForHTTPS()),
            pool=pool,
        )
        self._insecure = Agent(reactor, contextFactory=_InsecurePolicy(), pool=pool)

    def client(self, insecure: bool) -> HTTPClient:
        """A client over the verifying agent, or the non-verifying one."""
        agent = self._insecure if insecure else self._verified
        return HTTPClient(agent, data_to_body_producer=_body_producer)
