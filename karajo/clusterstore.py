"""
What a cluster node asks of the shared database: the L{ClusterStore}
protocol and the values that cross it (docs/cluster.md).

The node logic (L{karajo.cluster}) is written and unit-tested against this
protocol with an in-memory fake; L{karajo.pgstore} implements it on
PostgreSQL.  Every method returns a L{Deferred} (the database is never
waited for on the reactor thread) that fails with L{Unavailable} when the
database cannot be reached now; any other failure is a bug.

Times are Unix seconds.  A slot is the Unix time a timer fire was due
(rounded to the second by the node, so every node names it alike).  Atomic
operations (L{ClusterStore.claim_slots}, L{ClusterStore.reap},
L{ClusterStore.take}, L{ClusterStore.begin_run},
L{ClusterStore.seen_request}) are decided by the database: when several
nodes ask at once, exactly one wins.

Channels told through L{ClusterStore.listen} (payloads are text):
C{karajo_request} (C{"ID NODE"}: a forwarded request's id and the node it
is for, L{Forwarded.to_node}), C{karajo_answer} (its id),
C{karajo_run} (C{kind/id/counter}: a run began, ended, got log bytes or was
forgotten), C{karajo_node} (a node's name: it joined, came back or was
found dead), C{karajo_pause} (C{kind/id}), and C{karajo_reconnected} (empty
payload: the listening connection was lost and is back; whatever was sent
meanwhile was missed, so re-read what matters).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import attrs
from twisted.internet.defer import Deferred

from karajo.model import TriggerRequest
from karajo.runrecord import RunRecord

__all__ = [
    "CHANNELS",
    "RECONNECTED",
    "Answer",
    "ClusterStore",
    "Forwarded",
    "NodeInfo",
    "StoredRun",
    "Unavailable",
    "run_payload",
]

#: The channels a store listens on.
CHANNELS = ("karajo_request", "karajo_answer", "karajo_run", "karajo_node", "karajo_pause")
#: The pseudo-channel told after the listening connection came back.
RECONNECTED = "karajo_reconnected"


class Unavailable(Exception):
    """The database cannot be reached now (connection lost, refused, timed out)."""


@attrs.frozen
class NodeInfo:
    """
    One node as the cluster sees it.

    @ivar last_seen: the database's clock at its last heartbeat (ignored
        when the node sends its own: the database sets it).
    @ivar running: how many runs it executes now.
    @ivar started: when the node process started (its own clock).
    """

    name: str
    alive: bool
    last_seen: float
    running: int
    version: str
    config_digest: str
    started: float


@attrs.frozen
class StoredRun:
    """A run as the cluster knows it: its job's kind and its record (C{node} filled)."""

    kind: str
    record: RunRecord


@attrs.frozen
class Forwarded:
    """
    A request forwarded to a job's owner.

    @ivar id: given by the store (L{ClusterStore.forward} ignores the one passed).
    @ivar action: C{run}, C{run_now}, C{pause}, C{resume} or C{cancel}.
    @ivar to_node: the node the asking node sees as the job's owner: only
        that node takes the request (L{ClusterStore.take}), and the
        C{karajo_request} payload names it so that no other node tries.
    """

    id: int
    kind: str
    job_id: str
    action: str
    trigger: str | None
    request: TriggerRequest | None
    from_node: str
    to_node: str = ""


@attrs.frozen
class Answer:
    """
    The owner's answer to a forwarded request.

    @ivar outcome: C{started}, C{queued}, C{ok}, C{refused}, C{paused},
        C{stopping}, ...: what a local call would have said.
    """

    outcome: str
    counter: int | None
    message: str


def run_payload(kind: str, job_id: str, counter: int) -> str:
    """The C{karajo_run} payload naming one run."""
    return f"{kind}/{job_id}/{counter}"


class ClusterStore(Protocol):
    """The shared state of a cluster; see the module docstring."""

    def migrate(self) -> Deferred[None]:
        """Create or upgrade the schema (safe when several nodes start at once)."""

    def heartbeat(self, me: NodeInfo) -> Deferred[list[NodeInfo]]:
        """Upsert C{me} (alive, C{last_seen} = database now); return every node."""

    def reap(self, node_timeout: float, me: str) -> Deferred[list[StoredRun]]:
        """
        Mark alive nodes (other than C{me}) not seen for C{node_timeout}
        seconds dead; end their running runs C{failed}, a line naming the
        lost node appended to the stored log, and free their jobs.  Returns
        those runs (only the one reaper that won sees them).
        """

    def restarted(self, me: str) -> Deferred[list[StoredRun]]:
        """End C{me}'s own leftover running runs C{failed} (a node starting again)."""

    def leave(self, me: str) -> Deferred[list[StoredRun]]:
        """
        C{me} stops cleanly, its runs ended and their ends written: it is
        marked not alive at once (the others take its jobs at their next
        heartbeat, not after C{node_timeout}); a run of it still running
        in the database (an end that was lost) is ended C{failed} and
        returned, its job freed.
        """

    def reserve_counters(
        self, kind: str, job_id: str, n: int, after: int = 0
    ) -> Deferred[range]:
        """
        Reserve the next C{n} counters of a job, all greater than C{after}
        (the highest counter the node knows, e.g. from its logs on disk
        before the cluster was set up).  Never gives a number twice.
        """

    def claim_slots(
        self, me: str, slots: Sequence[tuple[str, str, float]]
    ) -> Deferred[set[tuple[str, str, float]]]:
        """
        Claim C{(kind, job_id, slot)}s in one statement; return those won.
        Claiming again a slot C{me} already holds wins again: after
        L{Unavailable} the claim may have been stored, and claiming again
        later (catch-up) tells.
        """

    def last_slot(self, kind: str, job_id: str) -> Deferred[float | None]:
        """The newest slot claimed for a job, by any node."""

    def begin_run(self, me: str, kind: str, record: RunRecord) -> Deferred[bool]:
        """
        Store a run as running on C{me} (its C{node} is set to C{me});
        C{False}: the job runs on another node.  C{me} may begin again (a
        retry after a lost answer, its next run): C{True}.
        """

    def begin_runs(
        self, me: str, runs: Sequence[tuple[str, RunRecord]]
    ) -> Deferred[list[bool]]:
        """
        L{begin_run} of C{(kind, record)}s in one statement (the runs that
        start in one reactor turn, e.g. at a minute boundary): one answer
        each, in order.
        """

    def end_run(self, kind: str, record: RunRecord, log: bytes) -> Deferred[None]:
        """
        Store a run's end and final log (overwriting what a reaper wrote, if
        it came back late) and drop its live chunks; frees its job if
        C{record.node} still holds it with this counter.
        """

    def end_runs(self, runs: Sequence[tuple[str, RunRecord, bytes]]) -> Deferred[None]:
        """L{end_run} of C{(kind, record, log)}s in one statement (runs ending together)."""

    def append_logs(self, chunks: Sequence[tuple[str, str, int, int, bytes]]) -> Deferred[None]:
        """
        Store live log bytes C{(kind, job_id, counter, offset, data)} of
        running runs, in one statement (a chunk already stored is ignored).
        """

    def runs(self, kind: str | None = None, job_id: str | None = None) -> Deferred[list[StoredRun]]:
        """Every stored run (of one kind, of one job), by kind, job and counter."""

    def run(self, kind: str, job_id: str, counter: int) -> Deferred[StoredRun | None]:
        """One stored run, or C{None}."""

    def read_log(self, kind: str, job_id: str, counter: int, offset: int = 0) -> Deferred[bytes]:
        """A run's log from byte C{offset}: its final body, or its live chunks."""

    def forget_runs(self, kind: str, job_id: str, counters: Sequence[int]) -> Deferred[None]:
        """Delete runs (retention), their logs and chunks."""

    def set_paused(self, kind: str, job_id: str, paused: bool) -> Deferred[None]:
        """Store a job's pause state (a new owner inherits it)."""

    def paused_jobs(self) -> Deferred[set[tuple[str, str]]]:
        """C{(kind, job_id)} of every paused job."""

    def seen_request(self, key: bytes, expires: float) -> Deferred[bool]:
        """C{True} the first time C{key} is seen cluster-wide (replay guard)."""

    def forward(self, me: str, fwd: Forwarded) -> Deferred[int]:
        """Store a request for a job's owner and tell it; returns the request's id."""

    def take(self, me: str, request_id: int) -> Deferred[Forwarded | None]:
        """
        Take a forwarded request for C{me} (its C{to_node}, or any node when
        that is empty); C{None} when it is not for C{me} or was taken.
        """

    def answer(self, request_id: int, answer: Answer) -> Deferred[None]:
        """Store the answer to a taken request and tell the asking node."""

    def answer_of(self, request_id: int) -> Deferred[Answer | None]:
        """The answer to a forwarded request, or C{None} while there is none."""

    def prune(self, now: float) -> Deferred[None]:
        """
        Bound the database: drop slots older than a day before C{now},
        replay keys expired at C{now} and forwarded requests older than an
        hour.  The node calls it now and then (every few minutes).
        """

    def listen(self, channel_callback: Callable[[str, str], None]) -> None:
        """
        Call C{channel_callback(channel, payload)} on the reactor thread for
        every notification on L{CHANNELS}; after the listening connection
        was lost and came back, C{(RECONNECTED, "")}.
        """

    def close(self) -> Deferred[None]:
        """Stop listening and close every connection."""
