"""
Acting on a job where it lives (docs/cluster.md, "How it works"): a
webhook, run_now, pause, resume or cancel that reaches a node that does
not own the job is FORWARDED to its owner through the database; the owner
acts and answers, and the asking node answers its client with that answer
(L{FORWARD_WAIT} at most, else L{ClusterUnavailable}: 503).  Also the
chains' relay and the cluster-wide replay guard of signed requests.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from karajo.clusterstore import Answer, Forwarded, Unavailable
from karajo.errors import (
    REFUSAL_WORDS,
    ClusterUnavailable,
    RunRefused,
)
from karajo.model import TriggerRequest
from karajo.runrecord import RunRecord
from karajo.status import Trigger

if TYPE_CHECKING:
    from karajo.cluster import ClusterService

__all__ = ["CANCEL", "FORWARD_WAIT", "PAUSE", "RESUME", "RETRY", "RUN", "Requests"]

log = Logger()

#: How long a node waits for a job's owner to answer a forwarded request.
FORWARD_WAIT = 5.0

#: Actions a node acts on for a job (its own, or forwarded to it).
RUN = "run"
PAUSE = "pause"
RESUME = "resume"
CANCEL = "cancel"
#: A run lost with a dead node: C{retry:ATTEMPT:FIRST} (the attempt lost,
#: the counter of the first attempt).
RETRY = "retry"



class Requests:
    """A node's requests to the owners of jobs, and the requests forwarded to it."""

    def __init__(self, node: ClusterService) -> None:
        self._node = node
        self._answers: dict[int, defer.Deferred[Answer]] = {}

    # --- notifications ---------------------------------------------------------

    def heard_request(self, payload: str) -> None:
        """C{karajo_request}: a request forwarded (to this node, unless it names another)."""
        request_id, _, node = payload.partition(" ")
        # Not this node's own request (a store whose payload names no node).
        if (node in (self._node.me, "") and request_id.isdigit()
                and int(request_id) not in self._answers):
            d = defer.ensureDeferred(self._serve(int(request_id)))
            d.addErrback(lambda f: log.failure("cluster: a forwarded request failed", f))

    def heard_answer(self, payload: str) -> None:
        """C{karajo_answer}: the answer to a request, maybe this node's."""
        if payload.isdigit() and int(payload) in self._answers:
            self._fetch_answer(int(payload))

    def reconnected(self) -> None:
        """Notifications were lost while the listening connection was away."""
        for waiting in list(self._answers):
            self._fetch_answer(waiting)

    # --- asking ------------------------------------------------------------------

    async def act(self, kind: str, job_id: str, action: str,
                  request: TriggerRequest | None = None, trigger: str | None = None) -> Answer:
        """
        Do C{action} (L{RUN}, L{PAUSE}, L{RESUME}, L{CANCEL}) on the job
        where it lives: here when this node owns it, else on its owner,
        whose answer this is.  Raises L{ClusterUnavailable} when the
        database is away or the owner does not answer in L{FORWARD_WAIT}.
        """
        node = self._node
        if not node.connected:
            raise ClusterUnavailable("the cluster database is unreachable; try again")
        owner = node.owner_of(kind, job_id)
        if owner is None:
            raise ClusterUnavailable("no cluster node is known alive yet; try again")
        if owner == node.me:
            return await self._act_here(kind, job_id, action, request, trigger)
        fwd = Forwarded(0, kind, job_id, action, trigger, request, node.me, owner)
        try:
            request_id = await node.store.forward(node.me, fwd)
        except Unavailable:
            node.lost()
            raise ClusterUnavailable("the cluster database is unreachable; try again") from None
        answer = await self._wait_answer(request_id, owner)
        runner = node.runners.get((kind, job_id))
        if answer.outcome == "ok" and runner is not None and action in (PAUSE, RESUME):
            runner.pause() if action == PAUSE else runner.resume()
        return answer

    def tell_owner(self, fwd: Forwarded) -> None:
        """Forward C{fwd} without waiting for its answer."""
        node = self._node
        node.outbox.put(lambda: node.store.forward(node.me, fwd))

    def _wait_answer(self, request_id: int, owner: str) -> defer.Deferred[Answer]:
        d: defer.Deferred[Answer] = defer.Deferred()
        self._answers[request_id] = d

        def late() -> None:
            if not d.called:
                self._answers.pop(request_id, None)
                d.errback(ClusterUnavailable(f"node {owner}, which runs this job, did not "
                                             "answer in time; try again"))

        call = self._node.clock.callLater(FORWARD_WAIT, late)

        def done(result: object) -> object:
            if call.active():
                call.cancel()
            return result

        return d.addBoth(done)

    def _fetch_answer(self, request_id: int) -> None:
        d = self._node.store.answer_of(request_id)

        def got(answer: Answer | None) -> None:
            waiter = self._answers.get(request_id)
            if answer is not None and waiter is not None and not waiter.called:
                del self._answers[request_id]
                waiter.callback(answer)

        d.addCallbacks(got, lambda f: f.trap(Unavailable))

    # --- serving -------------------------------------------------------------------

    async def _serve(self, request_id: int) -> None:
        """A request forwarded to this node: take it, act, answer."""
        node = self._node
        try:
            fwd = await node.store.take(node.me, request_id)
        except Unavailable:
            node.lost()
            return
        if fwd is None:
            return
        owner = node.owner_of(fwd.kind, fwd.job_id)
        if fwd.to_node != node.me and owner not in (node.me, None) and ">" not in fwd.from_node:
            # Taken by a node that does not run the job (a store that does
            # not route by to_node): passed on to the owner, once (a node
            # name has no ">"), its answer relayed.
            answer = await self.pass_on(fwd, owner)
        elif fwd.action.startswith(RETRY + ":"):
            _, attempt, first = fwd.action.split(":")
            node.retry_here((fwd.kind, fwd.job_id), int(attempt), int(first))
            answer = Answer("ok", None, "retry scheduled")
        else:
            answer = await self._act_here(fwd.kind, fwd.job_id, fwd.action, fwd.request,
                                          fwd.trigger)
        node.outbox.put(lambda: node.store.answer(request_id, answer))

    async def pass_on(self, fwd: Forwarded, owner: str) -> Answer:
        """A request this node took but does not own the job of: to its C{owner}."""
        node = self._node
        relay = attrs.evolve(fwd, from_node=f"{fwd.from_node}>{node.me}", to_node=owner)
        if fwd.action.startswith(RETRY + ":"):
            self.tell_owner(relay)
            return Answer("ok", None, f"passed on to {owner}")
        try:
            request_id = await node.store.forward(node.me, relay)
            return await self._wait_answer(request_id, owner)
        except Unavailable:
            node.lost()
            return Answer("refused:unavailable", None, "the cluster database is unreachable")
        except ClusterUnavailable as e:
            return Answer("refused:unavailable", None, str(e))

    async def _act_here(self, kind: str, job_id: str, action: str,
                        request: TriggerRequest | None, trigger: str | None = None) -> Answer:
        node = self._node
        runner = node.runners.get((kind, job_id))
        if runner is None:
            return Answer("refused:not_found", None, "job not found")
        try:
            if action == RUN:
                await node.counters.ensure((kind, job_id))
                accepted = runner.submit(request, trigger=trigger)
                return Answer(accepted.outcome, accepted.counter, f"job {accepted.outcome}")
            if action in (PAUSE, RESUME):
                runner.pause() if action == PAUSE else runner.resume()
                try:
                    await node.store.set_paused(kind, job_id, action == PAUSE)
                except Unavailable:
                    node.lost()
                    raise ClusterUnavailable("the cluster database is unreachable") from None
                return Answer("ok", None, "job paused" if action == PAUSE else "job resumed")
            if action == CANCEL:
                if runner.cancel():
                    return Answer("ok", None, "job canceled")
                return Answer("refused:not_running", None, "job is not running")
        except RunRefused as e:
            return Answer("refused:" + REFUSAL_WORDS.get(type(e), "unavailable"), None, str(e))
        return Answer("refused:unknown", None, f"unknown action {action!r}")

    # --- chains and the replay guard -------------------------------------------------

    def chain(self, job_id: str, record: RunRecord, by: str) -> None:
        """
        The chains' C{relay}: start chained job C{job_id} (trigger
        C{chain}) on its owner; a refusal is logged, as on a single server.
        """
        d = defer.ensureDeferred(self.act("job", job_id, RUN, None, Trigger.CHAIN))

        def done(answer: Answer) -> None:
            log.info("{job}: run {counter} {status}; chained job {target}: {outcome}",
                     job=by, counter=record.counter, status=str(record.status),
                     target=job_id, outcome=answer.outcome)

        d.addCallback(done)
        d.addErrback(lambda f: log.warn("{job}: run {counter} chains to {target}, which "
                                        "refused: {why}", job=by, counter=record.counter,
                                        target=job_id, why=f.getErrorMessage()))

    async def first_time(self, key: bytes, max_age: float) -> bool:
        """The cluster-wide replay guard: whether a signed request is new everywhere."""
        node = self._node
        digest = hashlib.sha256(key).digest()
        try:
            return await node.store.seen_request(digest, node.clock.seconds() + max_age)
        except Unavailable:
            node.lost()
            raise ClusterUnavailable("the cluster database is unreachable; try again") from None
