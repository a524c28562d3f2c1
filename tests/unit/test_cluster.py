"""
Cluster nodes (L{karajo.cluster}, docs/cluster.md) on one in-memory store
(C{tests/clusterfake.py}) and one L{MemoryReactorClock}: each node is a
real server (L{build_service}, code jobs, its own C{dir_base}) with its
API, so what is checked is what a client of any node sees.  The
PostgreSQL store has its own tests; the three-process end-to-end tests
come later.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from karajo.cluster import FORWARD_WAIT, ClusterService
from karajo.clusterstore import RECONNECTED, Forwarded
from karajo.config import Loaded, validate
from karajo.errors import ClusterUnavailable
from karajo.model import Cluster, Environment, Job
from karajo.ownership import owner
from karajo.server import build_service
from karajo.signature import sign
from karajo.status import RunStatus
from karajo.users import Sessions
from karajo.web.api import KarajoAPI
from karajo.web.errors import describe
from tests.clusterfake import FakeDatabase, FakeStore

T0 = 1_800_000_000.0  # a minute boundary
SECRET = "cluster-secret"
NODES = ("a", "b", "c")


def owned_by(node: str, nodes: tuple[str, ...] = NODES, kind: str = "job") -> str:
    """The name of a job C{node} owns among C{nodes}."""
    for i in range(1000):
        if owner(nodes, kind, f"j{i}") == node:
            return f"j{i}"
    raise AssertionError("no such job")


class Node:
    """One karajo node: a server with an API, on the shared clock and database."""

    def __init__(self, test: ClusterTestCase, name: str, jobs: dict[str, Job],
                 digest_extra: int = 1) -> None:
        self.name = name
        self.test = test
        self.store = FakeStore(test.db, route=test.route)
        base = os.path.join(test.base, name)
        os.makedirs(base, exist_ok=True)
        env, warnings = validate(Environment(
            dir_base=base, secret=SECRET, listen_address="127.0.0.1:0",
            max_job_running=digest_extra * 10, jobs=jobs,
            cluster=Cluster(database="fake", node=name, heartbeat=timedelta(seconds=2),
                            node_timeout=timedelta(seconds=15)),
        ))
        self.service = build_service(
            Loaded(env, warnings), reactor=test.clock,
            run_in_thread=lambda f, *a: defer.maybeDeferred(f, *a), cluster_store=self.store,
        )
        self.service.removeService(self.service.getServiceNamed("http"))
        self.cluster: ClusterService = self.service.cluster
        self.api = KarajoAPI(self.service, test.clock,
                             Sessions({}, test.clock, check=lambda p, h: defer.succeed(False)))

    def start(self) -> Node:
        self.service.startService()
        return self

    def stop(self) -> None:
        if self.service.running:
            d = self.service.stopService()
            self.test.clock.advance(FORWARD_WAIT + 1)
            self.test.successResultOf(d)

    def runner(self, job_id: str) -> Any:
        return self.service.jobs[job_id].runner

    def request(self, method: str, path: str, body: bytes = b"",
                headers: dict | None = None) -> tuple[int, dict, Any]:
        """One request to this node's API; returns (status, headers, JSON), the clock run on."""
        stub = StubTreq(self.api.resource())
        d = stub.request(method, f"http://karajo.test{path}", data=body or None,
                         headers=headers or None)
        got: list[Any] = []
        d.addBoth(got.append)
        for _ in range(int(FORWARD_WAIT * 8) + 2):
            stub.flush()
            if got:
                break
            self.test.clock.advance(0.125)
        [response] = got
        self.test.clock.advance(0)  # the turn's batched writes (a run's begin) go out
        content = stub.content(response)
        stub.flush()
        raw = self.test.successResultOf(content)
        headers_out = {k.decode().lower(): v[0].decode()
                       for k, v in response.headers.getAllRawHeaders()}
        return response.code, headers_out, json.loads(raw)

    def hook(self, job_id: str, body: bytes | None = None) -> tuple[int, dict, Any]:
        body = body if body is not None else b'{"n": %d}' % self.test.next()
        return self.request("POST", f"/karajo/api/job_exec/run/{job_id}", body,
                            {"X-Karajo-Sign": sign(SECRET, body),
                             "Content-Type": "application/json"})

    def manage(self, action: str, job_id: str) -> tuple[int, dict, Any]:
        body = urlencode([("_karajo_epoch", str(int(self.test.clock.seconds()))),
                          ("id", job_id), ("n", str(self.test.next()))]).encode()
        return self.request("POST", f"/karajo/api/job_exec/{action}", body,
                            {"X-Karajo-Sign": sign(SECRET, body),
                             "Content-Type": "application/x-www-form-urlencoded"})


class ClusterTestCase(unittest.TestCase):
    #: whether the store routes forwarded requests by to_node
    route = True

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.clock.advance(T0 - 30)
        self.db = FakeDatabase(self.clock)
        self.base = os.path.abspath(self.mktemp())
        #: every run a job's callable made: (node, job, counter, trigger)
        self.ran: list[tuple[str, str, int, str | None]] = []
        #: the Deferreds of runs held open, by (node, job)
        self.held: dict[tuple[str, str], defer.Deferred] = {}
        self.hold: set[str] = set()
        self.nodes: list[Node] = []
        self._n = 0

    def tearDown(self) -> None:
        for node in self.nodes:
            for d in list(self.held.values()):
                if not d.called:
                    d.callback(None)
            node.stop()

    def next(self) -> int:
        self._n += 1
        return self._n

    def job(self, name: str, **kw: Any) -> Job:
        def call(log: Any, request: Any) -> Any:
            record = log._log.record  # the RunLog under the text log
            node = record.node
            self.ran.append((node, record.job_id, record.counter, record.trigger))
            log.write(f"ran on {node}\n".encode())
            if name in self.hold:
                d = self.held[(node, name)] = defer.Deferred()
                return d
            return None

        return Job(name=name, call=call, path=f"/{name}", **kw)

    def start(self, jobs: list[Job], names: tuple[str, ...] = NODES) -> list[Node]:
        table = {job.name: job for job in jobs}
        nodes = [Node(self, name, table).start() for name in names]
        self.nodes += nodes
        self.settle()
        return nodes

    def settle(self, seconds: float = 2.0) -> None:
        """Let heartbeats (and their notifications) go round."""
        for _ in range(int(seconds * 8)):
            self.clock.advance(0.125)  # exact in binary: no drift against callLater

    def release(self, node: str, job: str) -> None:
        d = self.held.pop((node, job))
        d.callback(None)
        self.clock.advance(0)

    def runs_of(self, job: str) -> list[tuple[str, int, str | None]]:
        return [(n, c, t) for n, j, c, t in self.ran if j == job]

    def dashboard(self, node: Node) -> bytes:
        from twisted.web.resource import Resource

        from karajo.web.ui import WebUI

        root = Resource()
        root.putChild(b"karajo", WebUI(node.service, node.api._sessions).resource())
        stub = StubTreq(root)
        d = stub.get("http://k/karajo/app/")
        stub.flush()
        self.clock.advance(0)
        response = self.successResultOf(d)
        content = stub.content(response)
        for _ in range(10):
            stub.flush()
            self.clock.advance(0)
        return self.successResultOf(content)


class MembershipTests(ClusterTestCase):
    def test_nodes_see_each_other_and_agree_on_owners(self) -> None:
        a, b, c = self.start([self.job("x")])
        for node in (a, b, c):
            self.assertEqual(node.cluster.alive, NODES)
            self.assertTrue(node.cluster.connected)
        self.assertEqual({n.cluster.owner_of("job", "x") for n in (a, b, c)},
                         {owner(NODES, "job", "x")})

    def test_environment_lists_the_nodes(self) -> None:
        a, b = self.start([self.job("x")], names=("a", "b"))
        code, _, doc = a.request("GET", "/karajo/api/environment")
        self.assertEqual(code, 200)
        cluster = doc["data"]["cluster"]
        self.assertEqual(cluster["node"], "a")
        self.assertEqual([n["name"] for n in cluster["nodes"]], ["a", "b"])
        self.assertTrue(all(n["alive"] for n in cluster["nodes"]))
        self.assertEqual(cluster["config_mismatch"], [])
        self.assertEqual({n["config_digest"] for n in cluster["nodes"]}, {a.cluster.digest})

    def test_digest_mismatch_is_shown(self) -> None:
        a = Node(self, "a", {"x": self.job("x")}).start()
        b = Node(self, "b", {"x": self.job("x")}, digest_extra=2).start()
        self.nodes += [a, b]
        self.settle()
        self.assertEqual(a.cluster.mismatched(), ["b"])
        _, _, doc = a.request("GET", "/karajo/api/environment")
        self.assertEqual(doc["data"]["cluster"]["config_mismatch"], ["b"])
        self.assertIn(b"started from another configuration than this node (a): b",
                      self.dashboard(a))
        self.db.up = False
        self.settle(2)
        self.assertIn(b"Node a cannot reach the cluster database", self.dashboard(a))

    def test_dashboard_without_warning(self) -> None:
        a, b = self.start([self.job("x")], names=("a", "b"))
        self.assertNotIn(b"cluster-warning", self.dashboard(a))


class ClaimTests(ClusterTestCase):
    def test_every_slot_once_over_three_minutes(self) -> None:
        """Twelve minutely jobs on three nodes: each slot runs once, on the job's owner."""
        jobs = [self.job(f"j{i}", schedule="minutely") for i in range(12)]
        self.start(jobs)
        self.settle(3 * 60)
        for i in range(12):
            runs = self.runs_of(f"j{i}")
            self.assertEqual(len(runs), 3, runs)
            self.assertEqual({n for n, _, _ in runs}, {owner(NODES, "job", f"j{i}")})
            self.assertEqual([c for _, c, _ in runs], [1, 2, 3])
        # One claim statement per node and slot, not one per job.
        self.assertLessEqual(self.db.statements.count("claim_slots"), 3 * 3)

    def test_exactly_once_while_nodes_disagree(self) -> None:
        """Every node believing it owns every job: the claims still let one run each slot."""
        jobs = [self.job(f"j{i}", schedule="minutely") for i in range(6)]
        nodes = self.start(jobs)
        for node in nodes:
            node.cluster._seen = lambda nodes, node=node: None  # frozen views
            node.cluster.alive = (node.name,)
            node.cluster._owners.clear()
        self.settle(2 * 60)
        for i in range(6):
            runs = self.runs_of(f"j{i}")
            self.assertEqual(len(runs), 2, runs)
            counters = [c for _, c, _ in runs]
            self.assertEqual(len(set(counters)), 2)

    def test_counters_from_blocks_never_reused(self) -> None:
        """Counters of one job taken on three nodes and after a restart: all distinct, rising."""
        nodes = self.start([self.job("x")])
        taken = []
        for node in nodes:
            self.successResultOf(node.cluster.counters.ensure(("job", "x")))
            taken += [node.cluster.counters.take(("job", "x")) for _ in range(3)]
        nodes[0].stop()
        again = Node(self, "a", {"x": self.job("x")}).start()
        self.nodes.append(again)
        self.settle()
        self.successResultOf(again.cluster.counters.ensure(("job", "x")))
        later = again.cluster.counters.take(("job", "x"))
        self.assertEqual(len(set(taken + [later])), len(taken) + 1)
        self.assertGreater(later, max(taken))

    def test_counters_above_the_logs_a_node_had_alone(self) -> None:
        """A node whose disk has logs up to #40 (it ran alone) gets counters above them."""
        (a,) = self.start([self.job("x")], names=("a",))
        a.runner("x").counter = 40
        self.successResultOf(a.cluster.counters.ensure(("job", "x")))
        self.assertEqual(a.cluster.counters.take(("job", "x")), 41)

    def test_counters_rise_as_ownership_moves(self) -> None:
        """a runs #1, is cut off and taken for dead, b runs the next; back, a goes on above."""
        job = owned_by("a", ("a", "b"))
        a, b = self.start([self.job(job)], names=("a", "b"))
        self.assertEqual(a.hook(job)[0], 200)
        a.store.cut = True
        self.settle(20)
        self.assertEqual(b.hook(job)[0], 200)
        a.store.cut = False
        self.settle(3)
        self.assertEqual(b.cluster.owner_of("job", job), "a")
        self.assertEqual(b.hook(job)[0], 200)
        counters = [(n, c) for n, c, _ in self.runs_of(job)]
        self.assertEqual([n for n, _ in counters], ["a", "b", "a"])
        self.assertEqual([c for _, c in counters], sorted(c for _, c in counters))

    def test_no_counter_in_hand_is_503(self) -> None:
        (a,) = self.start([self.job("x")], names=("a",))
        self.db.up = False
        err = self.assertRaises(ClusterUnavailable, a.cluster.counters.take, ("job", "x"))
        status, name, _, headers = describe(err)
        self.assertEqual((status, name), (503, "ERR_CLUSTER_UNAVAILABLE"))
        self.assertIn((b"retry-after", b"5"), headers)


class BatchTests(ClusterTestCase):
    def test_runs_of_one_turn_begin_and_end_in_one_statement_each(self) -> None:
        """Eight minutely jobs on one node: the runs of a minute begin in one statement, end in one."""
        jobs = [self.job(f"j{i}", schedule="minutely") for i in range(8)]
        self.start(jobs, names=("a",))
        before = len(self.db.statements)
        self.settle(30)  # past the minute T0
        statements = self.db.statements[before:]
        self.assertEqual(sorted(j for _, j, _, _ in self.ran), [f"j{i}" for i in range(8)])
        self.assertEqual((statements.count("begin_runs"), statements.count("begin_run")), (1, 0))
        self.assertEqual((statements.count("end_runs"), statements.count("end_run")), (1, 0))
        for i in range(8):
            self.assertEqual(self.db.runs[("job", f"j{i}", 1)].record.status, RunStatus.SUCCESS)
            self.assertIsNone(self.db.job("job", f"j{i}").running_node)

    def test_a_job_running_elsewhere_is_refused_in_a_batch(self) -> None:
        """In one batch, each run gets its own answer: one job held by another node is not begun."""
        jobs = [self.job(f"j{i}", schedule="minutely") for i in range(3)]
        self.start(jobs, names=("a",))
        self.db.job("job", "j1").running_node = "elsewhere"
        self.settle(30)
        self.assertEqual(sorted(j for _, j, _, _ in self.ran), ["j0", "j2"])
        self.assertEqual(self.db.job("job", "j1").running_node, "elsewhere")


class ForwardTests(ClusterTestCase):
    def test_webhook_on_another_node(self) -> None:
        """Sent to a non-owner, a webhook runs on the owner and is answered like a local one."""
        job = owned_by("a", ("a", "b"))
        self.hold.add(job)
        a, b = self.start([self.job(job)], names=("a", "b"))
        code, _, doc = b.hook(job)
        self.assertEqual(code, 200, doc)
        self.assertEqual(doc["message"], "job started")
        self.assertEqual(doc["data"]["run"]["counter"], 1)
        self.assertEqual(doc["data"]["run"]["status"], "running")
        self.assertEqual(self.runs_of(job), [("a", 1, "webhook")])
        code, _, doc = b.hook(job)
        self.assertEqual((code, doc["data"]["run"]["status"]), (200, "queued"))
        code, _, doc = b.hook(job)
        self.assertEqual((code, doc["name"]), (429, "ERR_JOB_ALREADY_RUN"))
        # The log of a's run, read on b (from the database, within a second).
        self.clock.advance(1.1)
        code, _, doc = b.request("GET", f"/karajo/api/job_exec/log?id={job}&counter=1")
        self.assertEqual(code, 200, doc)
        self.assertIn(b"ran on a", __import__("base64").b64decode(doc["data"]["content"]))
        self.release("a", job)
        self.settle(1)
        self.assertEqual([r[:2] for r in self.runs_of(job)], [("a", 1), ("a", 2)])

    def test_replay_refused_cluster_wide(self) -> None:
        job = owned_by("a", ("a", "b"))
        a, b = self.start([self.job(job)], names=("a", "b"))
        body = b'{"_karajo_epoch": %d}' % int(self.clock.seconds())
        self.assertEqual(a.hook(job, body)[0], 200)
        code, _, doc = b.hook(job, body)
        self.assertEqual((code, doc["name"]), (403, "ERR_REQUEST_REPLAYED"))

    def test_pause_resume_cancel_across_nodes(self) -> None:
        job = owned_by("a", ("a", "b"))
        self.hold.add(job)
        a, b = self.start([self.job(job)], names=("a", "b"))
        code, _, doc = b.manage("run_now", job)
        self.assertEqual((code, doc["data"]["run"]["counter"]), (200, 1))
        code, _, doc = b.manage("cancel", job)
        self.assertEqual(code, 200, doc)
        self.settle(1)
        self.assertEqual([r.status for r in a.runner(job).records()], ["canceled"])
        self.assertEqual(b.manage("cancel", job)[2]["name"], "ERR_JOB_NOT_RUNNING")
        code, _, doc = b.manage("pause", job)
        self.assertEqual((code, doc["data"]["status"]), (200, "paused"))
        self.assertTrue(a.runner(job).paused)
        code, _, doc = b.hook(job)
        self.assertEqual((code, doc["name"]), (412, "ERR_JOB_PAUSED"))
        self.assertEqual(a.manage("resume", job)[0], 200)
        self.settle(1)
        self.assertFalse(b.runner(job).paused)
        self.assertEqual(b.hook(job)[0], 200)

    def test_pause_is_inherited_by_a_new_owner(self) -> None:
        job = owned_by("a", ("a", "b"))
        a, b = self.start([self.job(job, schedule="minutely")], names=("a", "b"))
        self.assertEqual(b.manage("pause", job)[0], 200)
        self.db.nodes.pop("a")
        a.stop()
        self.settle(20)
        self.assertEqual(b.cluster.owner_of("job", job), "b")
        self.assertTrue(b.runner(job).paused)
        self.settle(60)
        self.assertEqual(self.runs_of(job), [])

    def test_owner_silent_is_503(self) -> None:
        job = owned_by("a", ("a", "b"))
        a, b = self.start([self.job(job)], names=("a", "b"))
        a.store.cut = True  # a hears nothing from now on
        code, headers, doc = b.hook(job)
        self.assertEqual((code, doc["name"]), (503, "ERR_CLUSTER_UNAVAILABLE"))
        self.assertEqual(headers["retry-after"], "5")


class UnroutedForwardTests(ClusterTestCase):
    """A store that tells every node of every forwarded request (no to_node)."""

    route = False

    def test_the_asking_node_leaves_its_request_to_the_owner(self) -> None:
        job = owned_by("a", ("a", "b"))
        # b listens first: it hears its own request before a does
        b, a = self.start([self.job(job)], names=("b", "a"))
        code, _, doc = b.hook(job)
        self.assertEqual((code, doc["data"]["run"]["counter"]), (200, 1))
        self.assertEqual(self.runs_of(job), [("a", 1, "webhook")])

    def test_three_nodes_answered_and_run_once(self) -> None:
        """Passed on at most once: answered, run once (maybe off its owner), no endless relay."""
        job = owned_by("c")
        a, b, c = self.start([self.job(job)])
        code, _, doc = b.hook(job)
        self.assertEqual((code, doc["data"]["run"]["counter"]), (200, 1))
        self.settle(2)
        self.assertEqual(len(self.runs_of(job)), 1)
        self.assertLess(self.db.statements.count("forward"), 4)

    def test_a_non_owner_that_took_it_passes_it_on(self) -> None:
        job = owned_by("a", ("a", "b"))
        a, b = self.start([self.job(job)], names=("a", "b"))
        d = defer.ensureDeferred(
            b.cluster.requests.pass_on(Forwarded(7, "job", job, "run", None, None, "x"), "a"))
        self.settle(1)
        answer = self.successResultOf(d)
        self.assertEqual((answer.outcome, answer.counter), ("started", 1))
        self.assertEqual(self.runs_of(job), [("a", 1, "manual")])


class ChainTests(ClusterTestCase):
    def test_chain_starts_on_the_chained_jobs_owner(self) -> None:
        first, then = owned_by("a", ("a", "b")), owned_by("b", ("a", "b"))
        a, b = self.start([self.job(first, on_success=(then,)), self.job(then)],
                          names=("a", "b"))
        self.assertEqual(b.hook(first)[0], 200)
        self.settle(1)
        self.assertEqual(self.runs_of(first), [("a", 1, "webhook")])
        self.assertEqual(self.runs_of(then), [("b", 1, "chain")])


class MirrorTests(ClusterTestCase):
    def test_every_node_shows_every_run(self) -> None:
        job = owned_by("a", ("a", "b"))
        self.hold.add(job)
        a, b = self.start([self.job(job)], names=("a", "b"))
        a.hook(job)
        self.settle(1)
        [record] = b.runner(job).records()
        self.assertEqual((record.counter, record.status, record.node), (1, "running", "a"))
        _, _, doc = b.request("GET", f"/karajo/api/job_exec?id={job}")
        self.assertEqual(doc["data"]["logs"][0]["node"], "a")
        self.release("a", job)
        self.settle(1)
        [record] = b.runner(job).records()
        self.assertEqual(record.status, "success")
        self.assertEqual(b.runner(job).last_status, "success")

    def test_a_run_asked_for_before_its_begin_is_written_is_found(self) -> None:
        """
        A follower may ask another node for a run the owner has accepted but
        not yet written: it is looked for again for up to BEGIN_WAIT seconds;
        a run that never comes is unknown after that.
        """
        from twisted.internet.defer import ensureDeferred

        from karajo.clustermirror import BEGIN_WAIT

        job = owned_by("a", ("a", "b"))
        self.hold.add(job)
        a, b = self.start([self.job(job)], names=("a", "b"))
        early = ensureDeferred(b.cluster.mirror.read_log("job", job, 1))
        never = ensureDeferred(b.cluster.mirror.read_log("job", job, 99))
        self.assertNoResult(early)
        a.hook(job)
        self.settle(1)
        name, _ = self.successResultOf(early)
        self.assertEqual((name.counter, name.status), (1, None))
        self.assertNoResult(never)
        self.settle(BEGIN_WAIT)
        self.assertIsNone(self.successResultOf(never))
        self.release("a", job)
        self.settle(1)

    def test_a_run_on_another_node_shows_running(self) -> None:
        """The job's status on every node (API, dashboard card) is running while it runs anywhere."""
        job = owned_by("a", ("a", "b"))
        self.hold.add(job)
        a, b = self.start([self.job(job)], names=("a", "b"))
        _, _, doc = b.request("GET", f"/karajo/api/job_exec?id={job}")
        self.assertEqual(doc["data"]["status"], "started")
        a.hook(job)
        self.settle(1)
        self.assertFalse(b.runner(job).executing)
        for node in (a, b):
            _, _, doc = node.request("GET", f"/karajo/api/job_exec?id={job}")
            self.assertEqual(doc["data"]["status"], "running", node.name)
        self.assertIn(b"st-running", self.dashboard(b))
        self.release("a", job)
        self.settle(1)
        _, _, doc = b.request("GET", f"/karajo/api/job_exec?id={job}")
        self.assertEqual(doc["data"]["status"], "success")
        self.assertNotIn(b"st-running", self.dashboard(b))

    def test_live_log_within_a_second(self) -> None:
        job = owned_by("a", ("a", "b"))
        self.hold.add(job)
        a, b = self.start([self.job(job)], names=("a", "b"))
        a.hook(job)
        self.assertEqual(self.db.chunks, {})
        self.clock.advance(1.0)
        body = self.successResultOf(b.cluster.store.read_log("job", job, 1))
        self.assertIn(b"=== BEGIN", body)
        self.assertIn(b"ran on a", body)


    def test_events_of_a_run_on_another_node(self) -> None:
        """Followed on b, a's running log arrives within about a second, then its end."""
        job = owned_by("a", ("a", "b"))
        self.hold.add(job)
        a, b = self.start([self.job(job)], names=("a", "b"))
        a.hook(job)
        self.settle(1)
        feed = self.successResultOf(defer.ensureDeferred(b.cluster.remote_feed("job", job, 1)))
        pieces: list[str] = []
        ended: list[str] = []

        class Follower:
            def piece(self, offset: int, text: str) -> None:
                pieces.append(text)

            def ended(self, status: str) -> None:
                ended.append(status)

            def ping(self) -> None:
                pass

            def dropped(self) -> None:
                pass

        feed.subscribe(Follower())
        self.settle(1.5)
        self.assertIn("ran on a", "".join(pieces))
        self.assertEqual(ended, [])
        self.release("a", job)
        self.settle(2.5)
        self.assertIn("=== DONE", "".join(pieces))
        self.assertEqual(ended, ["success"])


class FailoverTests(ClusterTestCase):
    def test_dead_nodes_run_failed_then_retried_on_the_new_owner(self) -> None:
        nodes3 = NODES
        job = owned_by("a", nodes3)
        self.hold.add(job)
        a, b, c = self.start([self.job(job, retry=1, retry_delay=timedelta(seconds=5))])
        a.hook(job)
        self.settle(1)
        a.store.cut = True  # kill -9: a is heard no more
        lost_at = self.clock.seconds()
        self.settle(15 + 2 + 1)
        dead = [n for n in self.db.nodes.values() if not n.alive]
        self.assertEqual([n.name for n in dead], ["a"])
        stored = self.db.runs[("job", job, 1)].record
        self.assertEqual((stored.status, stored.node), (RunStatus.FAILED, "a"))
        self.assertIn(b"!!! node a was lost (not heard from for 15s)",
                      self.db.logs[("job", job, 1)])
        new_owner = owner(("b", "c"), "job", job)
        for node in (b, c):
            self.assertEqual(node.cluster.owner_of("job", job), new_owner)
        self.assertLessEqual(self.clock.seconds() - lost_at, 15 + 2 + 1)
        self.settle(6)
        retries = [r for r in self.runs_of(job) if r[2] == "retry"]
        self.assertEqual(len(retries), 1, self.runs_of(job))
        self.assertEqual(retries[0][0], new_owner)
        self.assertGreater(retries[0][1], 1)
        # Every node lists the failed run naming its node.
        other = b if new_owner == "c" else c
        records = {r.counter: r for r in other.runner(job).records()}
        self.assertEqual((records[1].status, records[1].node), ("failed", "a"))

    def test_dead_node_noticed_within_node_timeout(self) -> None:
        """
        A node dead right after its heartbeat is marked dead when its lease
        runs out (15 s after that heartbeat), not at the others' next
        heartbeat after it (up to 2 s later).
        """
        a, b, c = self.start([self.job("x")])
        # Just after a heartbeat of everyone (they beat together, every 2 s).
        self.settle(2 - 0.125 * 7)
        last = self.db.nodes["a"].last_seen
        a.store.cut = True
        while self.db.nodes["a"].alive:
            self.clock.advance(0.125)
            self.assertLess(self.clock.seconds() - last, 20)
        self.assertLessEqual(self.clock.seconds() - last, 15 + 0.25)

    def test_every_node_sees_the_death_at_once(self) -> None:
        """
        The node that did not win the reap learns of the death from its
        notification, not at its next heartbeat: every node agrees on the
        new owners within a moment.
        """
        a, b, c = self.start([self.job("x")])
        self.settle(2 - 0.125 * 7)
        a.store.cut = True
        while self.db.nodes["a"].alive:
            self.clock.advance(0.125)
        self.clock.advance(0.125)
        self.assertEqual((b.cluster.alive, c.cluster.alive), (("b", "c"), ("b", "c")))

    def test_slots_move_to_the_others(self) -> None:
        job = owned_by("a", NODES)
        a, b, c = self.start([self.job(job, schedule="minutely")])
        a.store.cut = True
        a.stop()
        self.settle(60 + 20)
        [(node, _, trigger)] = self.runs_of(job)
        self.assertEqual((node, trigger), (owner(("b", "c"), "job", job), "schedule"))

    def test_slot_due_before_the_death_is_noticed_runs_once(self) -> None:
        """The owner dies 5 s before a slot: the new owner runs that slot once, late."""
        job = owned_by("a", NODES)
        a, b, c = self.start([self.job(job, schedule="minutely")])
        self.settle(T0 - 5 - self.clock.seconds())
        a.store.cut = True
        self.settle(25)
        new_owner = owner(("b", "c"), "job", job)
        self.assertEqual(self.runs_of(job), [(new_owner, 1, "schedule")])
        self.settle(60)
        self.assertEqual([r[0] for r in self.runs_of(job)], [new_owner, new_owner])

    def test_clean_stop_leaves_and_the_others_take_over_at_once(self) -> None:
        """A node stopped cleanly is gone for the others at their next heartbeat."""
        job = owned_by("a", ("a", "b"))
        a, b = self.start([self.job(job)], names=("a", "b"))
        a.hook(job)
        before = len(self.db.statements)
        a.stop()  # its clock runs FORWARD_WAIT + 1 s: well under node_timeout (15 s)
        mine = self.db.statements[before:]
        self.assertIn("leave", mine)
        self.assertFalse(self.db.nodes["a"].alive)
        self.assertEqual(b.cluster.alive, ("b",))
        self.assertEqual(b.cluster.owner_of("job", job), "b")
        self.assertEqual(self.db.runs[("job", job, 1)].record.status, RunStatus.SUCCESS)
        status, _, body = b.hook(job)
        self.assertEqual(status, 200, body)
        counter = body["data"]["run"]["counter"]  # above a's block: a gap, never reused
        self.assertEqual(self.runs_of(job), [("a", 1, "webhook"), ("b", counter, "webhook")])
        # Not reaped as lost later either.
        self.settle(20)
        self.assertNotIn(b"was lost", self.db.logs[("job", job, 1)])

    def test_a_stopping_node_leaves_after_its_ends(self) -> None:
        """The leave is written after the run's end: the run ends canceled, not failed."""
        job = owned_by("a", ("a",))
        self.hold.add(job)
        (a,) = self.start([self.job(job)], names=("a",))
        a.hook(job)
        self.assertTrue(a.runner(job).executing)
        before = len(self.db.statements)
        a.stop()
        mine = self.db.statements[before:]
        self.assertEqual(mine[-2:], ["end_runs", "leave"])
        self.assertEqual(self.db.runs[("job", job, 1)].record.status, RunStatus.CANCELED)
        self.assertNotIn(b"stopped during this run", self.db.logs[("job", job, 1)])

    def test_cut_off_node_cancels_what_the_others_ended(self) -> None:
        job = owned_by("a", ("a", "b"))
        self.hold.add(job)
        a, b = self.start([self.job(job)], names=("a", "b"))
        a.hook(job)
        a.store.cut = True
        self.settle(20)
        self.assertEqual(self.db.runs[("job", job, 1)].record.status, RunStatus.FAILED)
        self.assertTrue(a.runner(job).executing)  # a does not know yet
        a.store.cut = False
        self.settle(3)
        self.assertFalse(a.runner(job).executing)
        self.assertEqual([r.status for r in a.runner(job).store.records()], ["canceled"])
        stored = self.db.runs[("job", job, 1)].record
        self.assertEqual((stored.status, stored.node), (RunStatus.FAILED, "a"))
        self.assertIn(b"node a was lost", self.db.logs[("job", job, 1)])
        self.assertEqual([r.status for r in a.runner(job).records()], ["failed"])

    def test_restart_ends_own_leftover_runs(self) -> None:
        job = owned_by("a", ("a",))
        self.hold.add(job)
        (a,) = self.start([self.job(job)], names=("a",))
        a.hook(job)
        # a dies with its run (its process is gone: nothing of it runs on)
        a.store.cut = True
        a.cluster.stopService()
        self.db.listeners.remove(a.store)
        self.nodes.remove(a)
        del self.held[("a", job)]
        again = Node(self, "a", {job: self.job(job)}).start()
        self.nodes.append(again)
        self.settle()
        stored = self.db.runs[("job", job, 1)].record
        self.assertEqual(stored.status, RunStatus.FAILED)
        self.assertIn(b"node a restarted", self.db.logs[("job", job, 1)])


class OutageTests(ClusterTestCase):
    def test_outage_then_reconcile(self) -> None:
        """
        Database away: the running run finishes, no slot starts, triggers
        get 503 with Retry-After; back: the run's end and log reach the
        database, a job with catch_up runs its missed slot once, one
        without does not.
        """
        held = owned_by("a", ("a",))
        self.hold.add(held)
        jobs = [self.job(held), self.job("late", schedule="minutely", catch_up=timedelta(minutes=5)),
                self.job("plain", schedule="minutely")]
        (a,) = self.start(jobs, names=("a",))
        a.hook(held)
        self.db.up = False
        self.settle(1)
        self.assertFalse(a.cluster.connected)
        code, headers, doc = a.hook(held)
        self.assertEqual((code, doc["name"], headers["retry-after"]),
                         (503, "ERR_CLUSTER_UNAVAILABLE", "5"))
        self.assertEqual(a.manage("pause", held)[0], 503)
        self.release("a", held)
        self.settle(60)  # the minute boundary goes by
        self.assertEqual(self.runs_of("late") + self.runs_of("plain"), [])
        # Reads keep answering from the mirror.
        code, _, doc = a.request("GET", f"/karajo/api/job_exec?id={held}")
        self.assertEqual((code, doc["data"]["logs"][0]["status"]), (200, "success"))
        self.assertEqual(self.db.runs[("job", held, 1)].record.status, RunStatus.RUNNING)
        self.db.up = True
        self.settle(3)
        self.assertTrue(a.cluster.connected)
        self.assertEqual(self.db.runs[("job", held, 1)].record.status, RunStatus.SUCCESS)
        self.assertIn(b"ran on a", self.db.logs[("job", held, 1)])
        self.assertEqual([t for _, _, t in self.runs_of("late")], ["catch_up"])
        self.assertEqual(self.runs_of("plain"), [])
        self.settle(60)
        self.assertEqual([t for _, _, t in self.runs_of("plain")], ["schedule"])
        self.assertEqual(len(a.cluster.outbox), 0)

    def test_runs_told_while_not_listening_are_read_again(self) -> None:
        """
        A run that ended while a node's listening connection was away (its
        notification lost) is read again when the listener is back: the
        node does not list it running for ever.
        """
        job = owned_by("a", ("a", "b"))
        self.hold.add(job)
        a, b = self.start([self.job(job)], names=("a", "b"))
        a.hook(job)
        self.settle(1)
        self.assertEqual(b.runner(job).mirror()[-1].status, RunStatus.RUNNING)
        deliver = b.store.deliver
        b.store.deliver = lambda channel, payload: None  # the listener is away
        self.release("a", job)
        self.settle(1)
        self.assertEqual(self.db.runs[("job", job, 1)].record.status, RunStatus.SUCCESS)
        self.assertEqual(b.runner(job).mirror()[-1].status, RunStatus.RUNNING)
        b.store.deliver = deliver
        deliver(RECONNECTED, "")
        self.settle(1)
        self.assertEqual(b.runner(job).mirror()[-1].status, RunStatus.SUCCESS)

    def test_no_reaping_right_after_an_outage(self) -> None:
        """After the database is back, nobody is reaped before node_timeout of connection."""
        a, b = self.start([self.job("x")], names=("a", "b"))
        self.db.up = False
        self.settle(30)
        self.db.up = True
        self.settle(4)
        self.assertTrue(all(n.alive for n in self.db.nodes.values()))
        self.assertEqual(a.cluster.alive, ("a", "b"))


class SinglePathTests(unittest.SynchronousTestCase):
    def test_run_without_cluster_has_no_hooks(self) -> None:
        clock = MemoryReactorClock()
        env, warnings = validate(Environment(
            dir_base=os.path.abspath(self.mktemp()), secret=SECRET,
            jobs={"x": Job(call=lambda log, req: None, schedule="minutely")},
        ))
        service = build_service(Loaded(env, warnings), reactor=clock,
                                run_in_thread=lambda f, *a: defer.maybeDeferred(f, *a))
        svc = service.jobs["x"]
        self.assertIsNone(service.cluster)
        self.assertEqual((svc.runner.counters, svc.runner.gate, svc.runner.mirror,
                          svc.timer.gate, svc.runner.store.node), (None,) * 5)
