"""
A cluster node's run begins and ends (docs/cluster.md, "How it works",
"Runs and logs"): a run begins only if its job runs on no other node (the
runner's C{gate}, a row update only one node can win); its begin, its log
as it grows (L{karajo.clusterlogs}) and its end with its final log are
written to the database through the node's ordered
L{karajo.outbox.Outbox}, and the database keeps as many runs per job as
C{log_retention}, like the disk.

Begins and ends are BATCHED: those of one reactor turn go in one statement
(C{begin_runs}, C{end_runs}), as the slot claims do; with a thousand
minutely jobs on a node, the runs of a minute begin after one round trip,
not a thousand in a row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from karajo.runrecord import LogName, RunRecord
from karajo.status import RunStatus

if TYPE_CHECKING:
    from karajo.cluster import ClusterService

__all__ = ["RunShipping"]

log = Logger()


class RunShipping:
    """
    The begin guard of every job's runner (L{gate}) and one of its
    listeners (L{run_started}, L{run_finished}).
    """

    def __init__(self, node: ClusterService) -> None:
        self._node = node
        #: local runs the cluster ended while this node was cut off
        self.abandoned: set[tuple[str, str, int]] = set()
        #: the ends on their way (their final logs being read)
        self._ends: list[defer.Deferred] = []
        #: the begins and ends of this reactor turn, sent at its end
        self._begins: list[tuple[str, RunRecord, defer.Deferred]] = []
        self._ended: list[tuple[str, RunRecord, bytes, Any, defer.Deferred]] = []
        self._flush_call: IDelayedCall | None = None

    def gate(self, runner: Any, counter: int, trigger: str | None,
             attempt: int) -> defer.Deferred[bool]:
        """
        The runner's C{gate}: the run begins only if the job runs on no
        other node.  While the database is away the run (accepted before)
        goes on and its begin waits in the outbox.
        """
        node = self._node
        kind = str(runner.job.kind)
        record = RunRecord(runner.job.id, counter, RunStatus.RUNNING, node.clock.seconds(),
                           None, trigger, attempt, node.me)
        d: defer.Deferred = defer.Deferred()
        self._begins.append((kind, record, d))
        self._soon()

        def decided(result: object) -> bool:
            if result is False:
                log.warn("{job}: run {counter} not begun: the job runs on another node",
                         job=runner.name, counter=counter)
                return False
            return True

        return d.addCallback(decided)

    def run_started(self, runner: Any, record: RunRecord) -> None:
        """Mirror the run; ship its log as it grows."""
        node = self._node
        kind = str(runner.job.kind)
        node.mirror.put(kind, record)
        feed = runner.store.reserve(record.counter)
        feed.tap = node.logs.tap((kind, record.job_id, record.counter), runner.store.max_bytes)

    def run_finished(self, runner: Any, record: RunRecord) -> None:
        """Ship the run's end with its final log, then prune the database like the disk."""
        node = self._node
        kind = str(runner.job.kind)
        node.logs.drop((kind, record.job_id, record.counter))
        if (kind, record.job_id, record.counter) in self.abandoned:
            self.abandoned.discard((kind, record.job_id, record.counter))
            return
        node.mirror.put(kind, record)
        d = runner.store.read_in_thread(record.counter)

        def ship(found: tuple[LogName, bytes] | None) -> defer.Deferred:
            body = found[1] if found is not None else b""
            ended: defer.Deferred = defer.Deferred()
            self._ended.append((kind, record, body, runner, ended))
            self._soon()
            return ended

        d.addCallback(ship)
        d.addErrback(lambda f: log.failure("{job}: shipping run {counter} failed", f,
                                           job=runner.name, counter=record.counter))
        self._ends.append(d)

        def shipped(result: object) -> object:
            self._ends.remove(d)
            return result

        d.addBoth(shipped)

    def _soon(self) -> None:
        if self._flush_call is None:
            self._flush_call = self._node.clock.callLater(0, self._flush)

    def _flush(self) -> None:
        """The begins and ends of the turn: one write each, in the outbox's order."""
        self._flush_call = None
        node = self._node
        begins, self._begins = self._begins, []
        ended, self._ended = self._ended, []
        if begins:
            runs = [(kind, record) for kind, record, _ in begins]
            sent = node.outbox.put(lambda: node.store.begin_runs(node.me, runs))

            def answered(result: object) -> None:
                # One answer per run; held (the database away) or dropped: no answer.
                each = result if isinstance(result, list) else [result] * len(begins)
                for (_, _, d), began in zip(begins, each, strict=True):
                    d.callback(began)

            sent.addCallback(answered)
        if ended:
            batch = [(kind, record, body) for kind, record, body, _, _ in ended]
            sent = node.outbox.put(lambda: node.store.end_runs(batch))
            for kind, _, _, runner, _ in ended:
                self._prune(kind, runner)

            def written(result: object) -> None:
                for *_, d in ended:
                    d.callback(result)

            sent.addCallback(written)

    def ends(self) -> defer.Deferred:
        """Fires when the ends on their way are in the outbox (never fails)."""
        return defer.DeferredList(list(self._ends), consumeErrors=True)

    def _prune(self, kind: str, runner: Any) -> None:
        node = self._node
        job_id = runner.job.id
        old = node.mirror.forget_old((kind, job_id), runner.job.log_retention)
        if old:
            node.outbox.put(lambda: node.store.forget_runs(kind, job_id, old))
