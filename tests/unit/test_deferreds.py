"""
Tests of L{karajo.deferreds.as_deferred}, and of the two places that take
whatever a user's code returns: code jobs (L{karajo.work.CallableWork})
and API handlers (L{karajo.web.api.endpoint}).  A non-coroutine awaitable
used to fail there with C{NotACoroutineError}.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from karajo.deferreds import as_deferred
from karajo.errors import RunFailed
from karajo.model import Job
from karajo.web.api import PUBLIC, endpoint
from karajo.work import CallableWork


class Ready:
    """An awaitable that is not a coroutine and does not wait."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, Any]:
        return self.value
        yield  # a generator: awaiting it yields nothing


class Later:
    """An awaitable that is not a coroutine and waits on a Deferred."""

    def __init__(self) -> None:
        self.d: Deferred[Any] = Deferred()

    def __await__(self) -> Generator[Any, None, Any]:
        return (yield from self.d.__await__())


class Failing:
    def __await__(self) -> Generator[Any, None, Any]:
        raise ValueError("broken")
        yield


class AsDeferred(SynchronousTestCase):
    def test_plain_awaitable(self) -> None:
        """An object with __await__ gives its value."""
        self.assertEqual(self.successResultOf(as_deferred(Ready(7))), 7)

    def test_waits(self) -> None:
        """The Deferred fires when what the awaitable waits on does."""
        later = Later()
        d = as_deferred(later)
        self.assertNoResult(d)
        later.d.callback("done")
        self.assertEqual(self.successResultOf(d), "done")

    def test_failure(self) -> None:
        """An exception from the awaitable fails the Deferred."""
        self.failureResultOf(as_deferred(Failing()), ValueError)

    def test_coroutine_and_deferred(self) -> None:
        """Coroutines go through ensureDeferred; a Deferred is returned as it is."""
        async def coro() -> int:
            return 3

        self.assertEqual(self.successResultOf(as_deferred(coro())), 3)
        d = succeed(4)
        self.assertIs(as_deferred(d), d)


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.data: list[bytes] = []

    def line(self, text: str) -> None:
        self.lines.append(text)

    def write(self, data: bytes) -> None:
        self.data.append(data)


class CodeJobs(SynchronousTestCase):
    def test_awaitable_result(self) -> None:
        """A code job returning a non-coroutine awaitable runs to success when it is done."""
        later = Later()

        def call(log: Any, request: Any) -> Later:
            log.write("started\n")
            return later

        d = CallableWork(Job(name="j", call=call)).run(_Log(), 1, None)  # type: ignore[arg-type]
        self.assertNoResult(d)
        later.d.callback(None)
        self.assertIsNone(self.successResultOf(d))

    def test_awaitable_failure(self) -> None:
        """Its exception fails the run with the exception's message."""
        d = CallableWork(Job(name="j", call=lambda log, request: Failing())).run(
            _Log(), 1, None  # type: ignore[arg-type]
        )
        failure = self.failureResultOf(d, RunFailed)
        self.assertIn("broken", str(failure.value))


class _API:
    def __init__(self) -> None:
        self.errors: list[BaseException] = []

    def _error_failure(self, failure: Any, request: Any) -> bytes:
        self.errors.append(failure.value)
        return b"error"


class Handlers(SynchronousTestCase):
    def test_awaitable_result(self) -> None:
        """An API handler returning a non-coroutine awaitable answers with its value."""
        handler = endpoint(PUBLIC)(lambda self, request: Ready(b"body"))
        self.assertEqual(self.successResultOf(handler(_API(), object())), b"body")

    def test_awaitable_failure(self) -> None:
        """Its exception goes to the error envelope."""
        api = _API()
        handler = endpoint(PUBLIC)(lambda self, request: Failing())
        self.assertEqual(self.successResultOf(handler(api, object())), b"error")
        self.assertIsInstance(api.errors[0], ValueError)
