"""
Any awaitable as a L{Deferred}.

Code jobs (C{Job.call}) and API handlers may return a coroutine, a
Deferred, or any other awaitable (an object with C{__await__}, as some
libraries return).  C{ensureDeferred} takes only the first two and raises
C{NotACoroutineError} for the rest; L{as_deferred} takes them all, by
awaiting the value inside a coroutine of its own.  No reactor is named:
what the awaitable waits on must be something Twisted's coroutine runner
understands (a Deferred, or nothing).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, ensureDeferred

__all__ = ["as_deferred"]

T = TypeVar("T")


def as_deferred(awaitable: Awaitable[T]) -> Deferred[T]:
    """C{awaitable}'s outcome as a Deferred (a Deferred is returned as it is)."""
    if isinstance(awaitable, Deferred):
        return awaitable
    if inspect.iscoroutine(awaitable):
        return ensureDeferred(awaitable)

    async def wait() -> Any:
        return await awaitable

    return ensureDeferred(wait())
