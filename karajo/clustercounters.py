"""
A cluster node's run counters (docs/cluster.md, "How it works"): counters
are cluster-wide, reserved in the database in blocks per job by the node
that runs the job, and handed out to its runner without a round trip, so
C{$ID.$N} names one run in the whole cluster.  A block left unused (the
job moved, the node was cut off) is a gap; a number is never used twice.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

from twisted.internet import defer

from karajo.clusterstore import Unavailable
from karajo.errors import ClusterUnavailable

if TYPE_CHECKING:
    from karajo.cluster import ClusterService

__all__ = ["COUNTER_BLOCK", "CounterBlocks"]

#: Counters reserved at once per job; the next block is fetched at half.
COUNTER_BLOCK = 8

Key = tuple[str, str]


class CounterBlocks:
    """The counters a node holds for the jobs it runs, by job."""

    def __init__(self, node: ClusterService) -> None:
        self._node = node
        self._blocks: dict[Key, collections.deque[int]] = {}
        self._refilling: dict[Key, defer.Deferred[None]] = {}

    def in_hand(self, key: Key) -> bool:
        return bool(self._blocks.get(key))

    def drop_moved(self) -> None:
        """
        Counters in hand of jobs now run elsewhere are dropped (a gap):
        kept, they would come back older than the new owner's.
        """
        for key in [k for k in self._blocks if self._node.owner_of(*k) != self._node.me]:
            del self._blocks[key]

    def clear(self) -> None:
        """Cut off, this node may have been taken for dead and its jobs run elsewhere."""
        self._blocks.clear()

    def take(self, key: Key) -> int:
        """
        The next counter of the job from its reserved block (the runner's
        C{counters}; synchronous); the next block is fetched at half.
        """
        block = self._blocks.get(key)
        if not block:
            self._refill(key).addErrback(lambda f: f.trap(ClusterUnavailable))
            raise ClusterUnavailable("no run counter in hand; the cluster database is away")
        counter = block.popleft()
        if len(block) <= COUNTER_BLOCK // 2:
            self._refill(key).addErrback(lambda f: f.trap(ClusterUnavailable))
        return counter

    def ensure(self, key: Key) -> defer.Deferred[None]:
        """Fires once the job has a counter in hand (fails with L{ClusterUnavailable})."""
        if self._blocks.get(key):
            return defer.succeed(None)
        return self._refill(key)

    def _refill(self, key: Key) -> defer.Deferred[None]:
        busy = self._refilling.get(key)
        if busy is not None:
            waiter: defer.Deferred[None] = defer.Deferred()

            def relay(result: object) -> object:
                if self._blocks.get(key):
                    waiter.callback(None)
                else:
                    waiter.errback(ClusterUnavailable("no run counter in hand; try again"))
                return result

            busy.addBoth(relay)
            return waiter
        d = self._refilling[key] = defer.ensureDeferred(self._reserve(key))

        def done(result: object) -> object:
            self._refilling.pop(key, None)
            return result

        return d.addBoth(done)

    async def _reserve(self, key: Key) -> None:
        runner = self._node.runners.get(key)
        floor = max([runner.counter if runner is not None else 0,
                     *self._node.mirror.counters(key)])
        try:
            # Above the counters this node used before (it ran alone, or a
            # block of an earlier ownership): never reused.
            block = await self._node.store.reserve_counters(key[0], key[1], COUNTER_BLOCK, floor)
        except Unavailable:
            self._node.lost()
            raise ClusterUnavailable("the cluster database is unreachable") from None
        queue = self._blocks.setdefault(key, collections.deque())
        queue.extend(c for c in block if c > floor)
