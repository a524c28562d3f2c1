"""
The seam between a cluster node's logic (L{karajo.cluster}) and the
database it shares with the other nodes: the L{ClusterStore} protocol and
the values that cross it (docs/cluster.md).

Pure: no psycopg, and Twisted only for the C{Deferred} in the types, so
the node logic is unit-tested against an in-memory store with the same
semantics (C{tests/clusterfake.py}) and the PostgreSQL one
(L{karajo.pgstore}) is imported only when a C{[cluster]} is configured.

Every method returns a Deferred that fails with L{Unavailable} when the
database cannot be reached now; the node then acts as docs/cluster.md,
"Database outage", says.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import attrs

from karajo.model import TriggerRequest
from karajo.runrecord import RunRecord

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

__all__ = [
    "CHANNELS",
    "RECONNECTED",
    "Answer",
    "ClusterStore",
    "Forwarded",
    "NodeInfo",
    "StoredRun",
    "Unavailable",
]

#: The NOTIFY channels: a forwarded request (payload C{"ID NODE"}: the
#: request's id and the node it is for), its answer (C{ID}), a run
#: begun/ended/shipped (C{KIND/ID/COUNTER}), a node joined or left (its
#: name), a job paused or resumed (C{KIND/ID}).
CHANNELS = ("karajo_request", "karajo_answer", "karajo_run", "karajo_node", "karajo_pause")
#: What L{ClusterStore.listen}'s callback hears after a lost LISTEN
#: connection is back (and listening again); payload C{""}.
RECONNECTED = "karajo_reconnected"


class Unavailable(Exception):
    """The database cannot be reached now (connection lost, timeout)."""


@attrs.frozen
class NodeInfo:
    """One node as the database knows it (times: Unix seconds of the database's clock)."""

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
    A request forwarded to a job's owner.  C{action}: C{run} (a webhook,
    with C{request}), C{run_now}, C{pause}, C{resume}, C{cancel}.
    C{to_node}: the owner the asking node saw; only that node takes it.
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
    What the owner did with a L{Forwarded}: C{outcome} is C{started},
    C{queued}, C{ok} (pause, resume, cancel done), or C{refused:WHY} with
    WHY one of C{busy}, C{paused}, C{stopping}, C{starting},
    C{not_running}, C{not_found}; C{counter} is the accepted run's.
    """

    outcome: str
    counter: int | None = None
    message: str = ""


class ClusterStore(Protocol):
    """The shared state of a cluster; see the module docstring."""

    def migrate(self) -> Deferred[None]:
        """Create or upgrade the schema (under the advisory lock)."""

    def heartbeat(self, me: NodeInfo) -> Deferred[list[NodeInfo]]:
        """Upsert C{me} (C{last_seen} = the database's now, alive); every node."""

    def reap(self, node_timeout: float, me: str) -> Deferred[list[StoredRun]]:
        """
        Mark the nodes not seen for C{node_timeout} dead (one reaper wins
        each), end their running runs C{failed} with a line naming the
        lost node appended to the stored log; those runs.
        """

    def restarted(self, me: str) -> Deferred[list[StoredRun]]:
        """End C{me}'s own leftover running runs C{failed} (it restarted)."""

    def reserve_counters(self, kind: str, job_id: str, n: int) -> Deferred[range]:
        """The next C{n} counters of the job, never handed out again."""

    def claim_slots(
        self, me: str, slots: Sequence[tuple[str, str, float]]
    ) -> Deferred[set[tuple[str, str, float]]]:
        """Claim C{(kind, job_id, slot)}s at once; the ones won (never won twice)."""

    def last_slot(self, kind: str, job_id: str) -> Deferred[float | None]:
        """The newest slot claimed for the job."""

    def begin_run(self, me: str, kind: str, record: RunRecord) -> Deferred[bool]:
        """Record a run begun on C{me}; C{False}: the job runs on another node."""

    def end_run(self, kind: str, record: RunRecord, log: bytes) -> Deferred[None]:
        """Record a run's end and final log; frees the job, drops its chunks."""

    def append_logs(self, chunks: Sequence[tuple[str, str, int, int, bytes]]) -> Deferred[None]:
        """Live log bytes: C{(kind, job_id, counter, offset, data)}s in one statement."""

    def runs(
        self, kind: str | None = None, job_id: str | None = None
    ) -> Deferred[list[StoredRun]]:
        """Every stored run (of one kind, of one job)."""

    def run(self, kind: str, job_id: str, counter: int) -> Deferred[StoredRun | None]:
        """One stored run."""

    def read_log(self, kind: str, job_id: str, counter: int, offset: int = 0) -> Deferred[bytes]:
        """A run's log from C{offset}: the final body, or the chunks so far."""

    def forget_runs(self, kind: str, job_id: str, counters: Sequence[int]) -> Deferred[None]:
        """Delete runs retention pruned."""

    def set_paused(self, kind: str, job_id: str, paused: bool) -> Deferred[None]:
        """Keep a job's pause (a new owner inherits it); NOTIFY C{karajo_pause}."""

    def paused_jobs(self) -> Deferred[set[tuple[str, str]]]:
        """The C{(kind, job_id)}s paused."""

    def seen_request(self, key: bytes, expires: float) -> Deferred[bool]:
        """C{True} the first time C{key} is seen (cluster-wide replay guard)."""

    def forward(self, me: str, fwd: Forwarded) -> Deferred[int]:
        """Store a forwarded request, NOTIFY C{karajo_request}; its id."""

    def take(self, me: str, request_id: int) -> Deferred[Forwarded | None]:
        """Take a forwarded request for C{me}; C{None} when taken already."""

    def answer(self, request_id: int, answer: Answer) -> Deferred[None]:
        """Store the answer, NOTIFY C{karajo_answer}."""

    def answer_of(self, request_id: int) -> Deferred[Answer | None]:
        """The answer of a forwarded request, if there is one yet."""

    def listen(self, channel_callback: Callable[[str, str], None]) -> None:
        """
        Hear C{(channel, payload)} of L{CHANNELS} on the reactor thread;
        after a reconnect, C{(RECONNECTED, "")}.
        """

    def close(self) -> Deferred[None]:
        """Close every connection."""
