"""
The cluster view of a node with C{[cluster]} (docs/cluster.md): the
dashboard's cluster panel and the page C{/karajo/app/cluster}, with their
templates C{templates/cluster_panel.html} and C{templates/cluster.html}.

Every node is listed: alive or dead, its heartbeat's age, the runs it has
going (links to their pages, from this node's mirror of every run), its
karajo version and its configuration digest; this node is marked.  Alive
nodes started from another configuration than this node's are named in a
warning, on both the panel and the page: the jobs would differ from node
to node.  A single server has no cluster and shows none of this.

cluster.js keeps both current from the environment's C{cluster} (the API
the dashboard already polls), rebuilding rows the same way as here.
"""

from __future__ import annotations

from typing import Any

from twisted.web.template import Element, Tag, renderer, tags

from karajo.kinds import JobKind
from karajo.status import RunStatus
from karajo.web.pages import time_tag
from karajo.web.views import JobView
from karajo.web.words import plural

__all__ = ["DIGEST_SHOWN", "ClusterPage", "ClusterPanel", "ClusterView", "NodeRow"]

#: leading hex digits of a configuration digest shown (the whole one on hover)
DIGEST_SHOWN = 12


class NodeRow:
    """One node as the cluster view shows it."""

    __slots__ = ("name", "alive", "last_seen", "version", "digest", "me", "differs", "runs")

    def __init__(self, node: Any, me: bool, differs: bool,
                 runs: list[tuple[JobView, int]]) -> None:
        self.name: str = node.name
        self.alive: bool = node.alive
        self.last_seen: float = node.last_seen
        self.version: str = node.version
        self.digest: str = node.config_digest
        self.me = me
        self.differs = differs
        #: the runs going on there: (job, counter), by job then counter
        self.runs = runs


class ClusterView:
    """
    What the pages show of the cluster, read from this node's
    L{karajo.cluster.ClusterService} when a page is rendered.

    @param views: the jobs, whose records say where each running run runs.
    """

    def __init__(self, cluster: Any, views: list[JobView]) -> None:
        self.me: str = cluster.me
        self.connected: bool = cluster.connected
        self.digest: str = cluster.digest
        #: alive nodes of another configuration than this node's
        self.mismatch: list[str] = cluster.mismatched()
        nodes = dict(cluster.nodes)
        # Before its first heartbeat was answered, this node is not listed yet.
        nodes.setdefault(self.me, cluster.me_info())
        running: dict[str, list[tuple[JobView, int]]] = {}
        for view in views:
            for record in view.records:
                if record.status is RunStatus.RUNNING and record.node:
                    running.setdefault(record.node, []).append((view, record.counter))
        self.nodes = [
            NodeRow(n, n.name == self.me, n.name in self.mismatch, running.get(n.name, []))
            for n in sorted(nodes.values(), key=lambda n: n.name)
        ]

    @property
    def alive(self) -> int:
        return sum(1 for n in self.nodes if n.alive)


def _summary(view: ClusterView) -> list[Any]:
    dead = len(view.nodes) - view.alive
    return [plural(len(view.nodes), "node"), f": {view.alive} alive, {dead} dead"]


def _warnings(view: ClusterView) -> list[Tag]:
    """The warnings both the panel and the page show (cluster.js writes the same)."""
    out = []
    if view.mismatch:
        names = ", ".join(view.mismatch)
        out.append(tags.p(
            tags.strong("Configuration differs: "),
            f"nodes started from another configuration than this node ({view.me}): {names}. "
            "Start every node from the same files.",
            id="cluster-warning", **{"class": "warn", "data-nodes": " ".join(view.mismatch)},
        ))
    if not view.connected:
        out.append(tags.p(
            tags.strong("Database unreachable: "),
            f"Node {view.me} cannot reach the cluster database: no scheduled run starts here, "
            "triggers are answered 503 until it is back. What this page shows may be out of date.",
            id="cluster-offline", **{"class": "warn"},
        ))
    return out


def _data(tag: Tag, view: ClusterView) -> None:
    """What cluster.js needs to rebuild rows as the server does."""
    tag.attributes.update({
        "id": "cluster", "data-me": view.me, "data-digest-shown": str(DIGEST_SHOWN),
        # the environment's job maps and their kinds, for the links to runs
        "data-tables": " ".join(f"{kind.table}:{kind}" for kind in JobKind),
    })


class ClusterPanel(Element):
    """The dashboard's cluster panel: nodes alive and dead, this node, warnings."""

    def __init__(self, loader: Any, view: ClusterView) -> None:
        super().__init__(loader)
        self.view = view

    @renderer
    def panel(self, request: Any, tag: Tag) -> Tag:
        _data(tag, self.view)
        return tag.fillSlots(
            me=self.view.me,
            summary=_summary(self.view),
            dead=[tags.li(tags.span("dead", **{"class": "status st-dead"}), " ", n.name,
                          **{"data-node": n.name})
                  for n in self.view.nodes if not n.alive],
            warnings=_warnings(self.view),
        )


class ClusterPage(Element):
    """The page of the cluster: every node in a table, and the warnings."""

    def __init__(self, loader: Any, view: ClusterView, now: float) -> None:
        super().__init__(loader)
        self.view = view
        self.now = now

    @renderer
    def page(self, request: Any, tag: Tag) -> Tag:
        _data(tag, self.view)
        # the server's clock: heartbeat ages count from it, not from the browser's
        tag.attributes["data-now"] = f"{self.now * 1000:.0f}"
        return tag.fillSlots(
            me=self.view.me,
            summary=_summary(self.view),
            warnings=_warnings(self.view),
            rows=[self._row(n) for n in self.view.nodes],
        )

    def _row(self, n: NodeRow) -> Tag:
        classes = ["node"] + (["me"] if n.me else []) + ([] if n.alive else ["dead"])
        name: list[Any] = [tags.span(n.name, **{"class": "node-name"})]
        if n.me:
            name += [" ", tags.span("this node", **{"class": "me-badge"})]
        state = "alive" if n.alive else "dead"
        runs: Any = tags.span("none", **{"class": "none"})
        if n.runs:
            runs = tags.ul([tags.li(tags.a(f"{view.name} #{counter}",
                                           href=view.run_href(counter),
                                           **{"class": "run st-running"}))
                            for view, counter in n.runs], **{"class": "runs node-runs"})
        digest: list[Any] = [tags.code(n.digest[:DIGEST_SHOWN], title=n.digest)]
        if n.differs:
            digest += [" ", tags.span("differs", **{"class": "differs"})]
        return tags.tr(
            tags.th(name, scope="row"),
            tags.td(tags.span(state, **{"class": f"status st-{state}"}), **{"data-field": "state"}),
            tags.td(time_tag(n.last_seen, "last_seen", **{"class": "rel"}),
                    **{"data-field": "heartbeat"}),
            tags.td(tags.span(str(len(n.runs)), **{"class": "count"}), " ", runs,
                    **{"data-field": "running"}),
            tags.td(n.version, **{"data-field": "version"}),
            tags.td(digest, **{"data-field": "digest"}),
            **{"class": " ".join(classes), "data-node": n.name},
        )
