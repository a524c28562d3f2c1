"""
A cluster node's timer fires (docs/cluster.md, "How it works"): every
scheduled or interval slot is CLAIMED in the database before it runs, the
fires of one reactor turn in one statement, and only the node that wins
the claim runs the slot, so a slot runs once while nodes briefly disagree
about who owns a job.  Fires while the database is away are remembered as
missed (C{catch_up} decides when it is back); fires left to another owner
are remembered too, so the slots of a node found dead still run, once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from karajo.clusterstore import Unavailable
from karajo.errors import RunRefused
from karajo.status import Trigger

if TYPE_CHECKING:
    from karajo.cluster import ClusterService

__all__ = ["SlotClaims"]

log = Logger()

Key = tuple[str, str]


class SlotClaims:
    """The claims of a node's timer fires; L{fire} is every timer's C{gate}."""

    def __init__(self, node: ClusterService) -> None:
        self._node = node
        self._claims: list[tuple[Key, float, Callable[[], Any]]] = []
        self._claim_call: IDelayedCall | None = None
        #: the newest slot of each job skipped while the database was away
        self._missed: dict[Key, float] = {}
        #: the newest slot of each job left to the owner of the time
        self._skipped: dict[Key, tuple[float, str | None, Callable[[], Any]]] = {}

    def stop(self) -> None:
        if self._claim_call is not None and self._claim_call.active():
            self._claim_call.cancel()
        self._claim_call = None

    def fire(self, key: Key, slot: float, fire: Callable[[], Any]) -> None:
        """
        A timer's fire of C{slot} (its C{gate}): only the owner claims it,
        with every other fire of this reactor turn in one statement; a
        fire while the database is away is remembered as missed.
        """
        node = self._node
        owner = node.owner_of(*key)
        if owner != node.me:
            # Kept: should that owner turn out to be dead already, this node
            # may be the one to run the slot (L{take_over}).
            self._skipped[key] = (slot, owner, fire)
            return
        if not node.connected:
            self._missed[key] = slot
            log.info("{kind}/{job}: slot not run: the cluster database is unreachable",
                     kind=key[0], job=key[1])
            return
        self._claims.append((key, float(round(slot)), fire))
        if self._claim_call is None:
            self._claim_call = node.clock.callLater(0, self._claim)

    def _claim(self) -> None:
        self._claim_call = None
        batch, self._claims = self._claims, []
        if not batch:
            return
        slots = [(key[0], key[1], slot) for key, slot, _ in batch]
        d = self._node.store.claim_slots(self._node.me, slots)

        def won(claimed: set[tuple[str, str, float]]) -> None:
            for key, slot, fire in batch:
                if (key[0], key[1], slot) in claimed:
                    self._fire_won(key, fire)

        def failed(failure: Failure) -> None:
            failure.trap(Unavailable)
            self._node.lost()
            for key, slot, _ in batch:
                self._missed[key] = max(slot, self._missed.get(key, slot))

        d.addCallbacks(won, failed)
        d.addErrback(lambda f: log.failure("cluster: claiming slots failed", f))

    def _fire_won(self, key: Key, fire: Callable[[], Any]) -> None:
        def start(_: object = None) -> None:
            try:
                fire()
            except RunRefused as e:
                log.info("{kind}/{job}: claimed slot not run: {why}", kind=key[0], job=key[1],
                         why=str(e))

        counters = self._node.counters
        if counters.in_hand(key):
            start()
            return
        d = counters.ensure(key)
        d.addCallback(start)
        d.addErrback(lambda f: log.info("{kind}/{job}: claimed slot not run: {why}",
                                        kind=key[0], job=key[1], why=f.getErrorMessage()))

    def take_over(self, gone: set[str], horizon: float) -> None:
        """
        Nodes found dead: the slots they were due to run since they went
        silent (since C{horizon}) are claimed by their jobs' new owners, so
        a slot due while the dead node was not yet known dead still runs,
        once (the claim tells whether the dead node ran it before it died).
        """
        node = self._node
        for key, (slot, was, fire) in list(self._skipped.items()):
            if slot < horizon:
                del self._skipped[key]
            elif was in gone and node.owner_of(*key) == node.me:
                del self._skipped[key]
                log.info("{kind}/{job}: taking over a slot of lost node {node}",
                         kind=key[0], job=key[1], node=was)
                self.fire(key, slot, fire)

    def catch_up(self) -> None:
        """After an outage: each job's newest missed slot runs once if C{catch_up} allows."""
        node = self._node
        missed, self._missed = self._missed, {}
        now = node.clock.seconds()
        for key, slot in missed.items():
            runner = node.runners.get(key)
            if runner is None or node.owner_of(*key) != node.me:
                continue
            window = runner.job.catch_up.total_seconds()
            if window <= 0 or now - slot > window:
                log.info("{job}: a slot missed during the database outage is not caught up",
                         job=runner.name)
                continue
            log.info("{job}: catching up a slot missed during the database outage",
                     job=runner.name)
            self.fire(key, slot, functools.partial(
                runner.trigger, None, deferred=True, trigger=Trigger.CATCH_UP))
