"""
Which node of a cluster owns a job (docs/cluster.md, "One owner per job").

Rendezvous hashing: the owner of C{kind/id} is the alive node with the
highest C{sha256(node + "\\0" + kind + "/" + id)}.  Every node computes
it from the same list of alive nodes (read at its heartbeat), with no
coordination; when a node leaves, only the jobs it owned move (each to
the node that was second for it), and a node that joins takes about its
share.  Pure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["owner", "score"]


def score(node: str, kind: str, job_id: str) -> bytes:
    """The weight of C{node} for one job; the highest wins."""
    return hashlib.sha256(f"{node}\0{kind}/{job_id}".encode()).digest()


def owner(nodes: Iterable[str], kind: str, job_id: str) -> str | None:
    """The owner of C{kind/job_id} among C{nodes}; C{None} when there are none."""
    best: tuple[bytes, str] | None = None
    for node in nodes:
        candidate = (score(node, kind, job_id), node)
        if best is None or candidate > best:
            best = candidate
    return best[1] if best is not None else None
