"""
L{karajo.pgstore.PgStore} against the PostgreSQL every test machine runs
(127.0.0.1:5432, or C{$KARAJO_TEST_DATABASE}); each test in a schema of its
own.  Races are real: several stores (each its own pool of connections,
as several nodes have) ask at once, and exactly one may win.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

import attrs
import psycopg
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from karajo.clusterschema import SCHEMA_VERSION
from karajo.clusterstore import Answer, Forwarded, NodeInfo, StoredRun
from karajo.model import TriggerRequest
from karajo.pgstore import PgStore, describe
from karajo.runrecord import RunRecord
from tests.pgserver import SHARED, schema_for_test


def node(name: str, running: int = 0) -> NodeInfo:
    return NodeInfo(name, True, 0.0, running, "1.0", "digest-" + name, 1000.0)


def running(job: str, counter: int, node: str | None = None) -> RunRecord:
    return RunRecord(job, counter, "running", started=time.time(), trigger="schedule", node=node)


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await task.deferLater(reactor, 0.02, lambda: None)


class StoreCase(unittest.TestCase):
    """Stores on one fresh schema; C{self.sql} runs a statement directly."""

    def setUp(self) -> defer.Deferred:
        self.schema, self.options, drop = schema_for_test()
        self.addCleanup(drop)
        self.job = "j" + uuid.uuid4().hex[:8]
        self.store = self.make_store()
        return self.store.migrate()

    def make_store(self) -> PgStore:
        store = PgStore(reactor, SHARED, options=self.options)
        self.addCleanup(store.close)
        return store

    def sql(self, query: str, params: Any = None) -> list[tuple]:
        with psycopg.connect(SHARED, autocommit=True, options=self.options) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def listen(self, store: PgStore | None = None) -> list[tuple[str, str]]:
        heard: list[tuple[str, str]] = []
        (store or self.store).listen(lambda channel, payload: heard.append((channel, payload)))
        return heard


class SchemaTests(StoreCase):
    async def test_migrate_again_and_at_once(self) -> None:
        """Three nodes starting at once on an empty schema: one creates, all succeed."""
        self.sql("DROP TABLE karajo_schema, karajo_node, karajo_job, karajo_slot, karajo_run,"
                 " karajo_log_chunk, karajo_request, karajo_replay")
        stores = [self.make_store() for _ in range(3)]
        await defer.gatherResults([s.migrate() for s in stores])
        await self.store.migrate()
        self.assertEqual(self.sql("SELECT version FROM karajo_schema"), [(SCHEMA_VERSION,)])

    async def test_newer_schema_refused(self) -> None:
        self.sql("UPDATE karajo_schema SET version = version + 1")
        with self.assertRaises(Exception) as caught:
            await self.store.migrate()
        self.assertIn("newer than this karajo", str(caught.exception))

    def test_every_where_has_an_index(self) -> None:
        """The planner finds an index for the look-ups the store makes (not a table scan)."""
        with psycopg.connect(SHARED, autocommit=True, options=self.options) as conn:
            conn.execute("SET enable_seqscan = off")
            for query in (
                "SELECT max(slot) FROM karajo_slot WHERE kind = 'job' AND job_id = 'x'",
                "SELECT 1 FROM karajo_slot WHERE slot < 5",
                "SELECT 1 FROM karajo_run WHERE node = 'n' AND status = 'running'",
                "SELECT 1 FROM karajo_job WHERE running_node = 'n'",
                "SELECT kind, job_id FROM karajo_job WHERE paused",
                "SELECT 1 FROM karajo_node WHERE alive AND last_seen < now()",
                "SELECT 1 FROM karajo_replay WHERE expires < 5",
                "SELECT 1 FROM karajo_request WHERE created < now()",
                "SELECT 1 FROM karajo_log_chunk WHERE kind = 'k' AND job_id = 'j' AND counter = 1",
            ):
                plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + query).fetchall())
                self.assertNotIn("Seq Scan", plan, query)


class NodeTests(StoreCase):
    async def test_heartbeat_lists_every_node_with_database_time(self) -> None:
        # Names of this test's own: notifications are database-wide, and
        # other tests may run at the same time.
        a_name, b_name = "a-" + self.job, "b-" + self.job
        heard = self.listen()
        await wait_for(lambda: self.store._listener._conn is not None)
        other = self.make_store()
        before = self.sql("SELECT extract(epoch FROM now())::float8")[0][0]
        await other.heartbeat(node(b_name))
        nodes = await self.store.heartbeat(node(a_name, running=2))
        self.assertEqual(sorted(n.name for n in nodes), [a_name, b_name])
        a = next(n for n in nodes if n.name == a_name)
        self.assertEqual((a.alive, a.running, a.version, a.config_digest, a.started),
                         (True, 2, "1.0", "digest-" + a_name, 1000.0))
        self.assertGreaterEqual(a.last_seen, before - 0.001)
        self.assertLess(a.last_seen, before + 5)
        mine = lambda: [h for h in heard if h[1] in (a_name, b_name)]  # noqa: E731
        await wait_for(lambda: len(mine()) == 2)
        # A renewal is not news.
        await self.store.heartbeat(node(a_name))
        await self.store.heartbeat(node(a_name))
        await task.deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(sorted(mine()), [("karajo_node", a_name), ("karajo_node", b_name)])

    async def test_reap_exactly_one_reaper_ends_the_runs(self) -> None:
        dead = "dead-" + self.job
        await self.store.heartbeat(node(dead))
        await self.store.heartbeat(node("alive"))
        self.assertTrue(await self.store.begin_run(dead, "job", running(self.job, 1)))
        await self.store.append_logs([("job", self.job, 1, 0, b"one\n"),
                                      ("job", self.job, 1, 4, b"two\n")])
        # Not yet dead.
        self.assertEqual(await self.store.reap(15.0, "alive"), [])
        self.sql("UPDATE karajo_node SET last_seen = now() - interval '20 seconds'"
                 " WHERE name = %s", (dead,))
        heard = self.listen()
        await wait_for(lambda: self.store._listener._conn is not None)
        stores = [self.make_store() for _ in range(3)]
        results = await defer.gatherResults([s.reap(15.0, "alive") for s in stores])
        winners = [r for r in results if r]
        self.assertEqual(len(winners), 1, results)
        [reaped] = winners[0]
        self.assertEqual((reaped.kind, reaped.record.counter, reaped.record.status,
                          reaped.record.node), ("job", 1, "failed", dead))
        self.assertIsNotNone(reaped.record.ended)
        log = await self.store.read_log("job", self.job, 1)
        self.assertEqual(
            log, f"one\ntwo\n!!! node {dead} was lost (not heard from for 15s)\n".encode()
        )
        self.assertEqual(self.sql("SELECT count(*) FROM karajo_log_chunk"), [(0,)])
        nodes = {n.name: n.alive for n in await self.store.heartbeat(node("alive"))}
        self.assertEqual(nodes, {dead: False, "alive": True})
        # The job is free for its new owner.
        self.assertTrue(await self.store.begin_run("alive", "job", running(self.job, 2)))
        # A dead node is reaped once: later reaps neither find it nor tell it again.
        self.assertEqual(await self.store.reap(15.0, "alive"), [])
        await wait_for(lambda: ("karajo_node", dead) in heard
                       and ("karajo_run", f"job/{self.job}/1") in heard)
        await self.store.reap(15.0, "alive")
        await task.deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(heard.count(("karajo_node", dead)), 1)
        # The reaper never reaps itself, however late its own lease.
        self.sql("UPDATE karajo_node SET last_seen = now() - interval '1 hour'")
        self.assertEqual(await self.store.reap(15.0, "alive"), [])

    async def test_restarted_ends_own_leftover_runs(self) -> None:
        await self.store.begin_run("n1", "job", running(self.job, 1))
        await self.store.begin_run("n2", "job", running(self.job + "x", 1))
        await self.store.append_logs([("job", self.job, 1, 0, b"half")])
        [run] = await self.store.restarted("n1")
        self.assertEqual((run.record.job_id, run.record.status), (self.job, "failed"))
        self.assertEqual(
            await self.store.read_log("job", self.job, 1),
            b"half!!! node n1 restarted during this run; marked failed at start-up\n",
        )
        self.assertEqual(await self.store.restarted("n1"), [])
        other = await self.store.run("job", self.job + "x", 1)
        self.assertEqual(other.record.status, "running")
        self.assertTrue(await self.store.begin_run("n3", "job", running(self.job, 2)))


    async def test_leave_marks_the_node_gone_at_once(self) -> None:
        """A node stopping cleanly: not alive for the others now, never reaped later."""
        me, other = "leaving-" + self.job, "staying-" + self.job
        await self.store.heartbeat(node(me))
        await self.store.heartbeat(node(other))
        # One run ended (its end written), one whose end was lost.
        self.assertTrue(await self.store.begin_run(me, "job", running(self.job, 1)))
        await self.store.end_run("job", attrs.evolve(running(self.job, 1, me), status="canceled",
                                                     ended=time.time()), b"canceled\n")
        self.assertTrue(await self.store.begin_run(me, "job", running(self.job + "x", 1)))
        await self.store.append_logs([("job", self.job + "x", 1, 0, b"half")])
        heard = self.listen()
        await wait_for(lambda: self.store._listener._conn is not None)
        [ended] = await self.make_store().leave(me)
        self.assertEqual((ended.record.job_id, ended.record.status, ended.record.node),
                         (self.job + "x", "failed", me))
        self.assertEqual(await self.store.read_log("job", self.job + "x", 1),
                         f"half!!! node {me} stopped during this run\n".encode())
        self.assertEqual((await self.store.run("job", self.job, 1)).record.status, "canceled")
        nodes = {n.name: n for n in await self.store.heartbeat(node(other))}
        self.assertEqual((nodes[me].alive, nodes[me].running), (False, 0))
        self.assertTrue(nodes[other].alive)
        await wait_for(lambda: ("karajo_node", me) in heard)
        # Its jobs are free; nobody reaps it later; leaving again changes nothing.
        self.assertTrue(await self.store.begin_run(other, "job", running(self.job + "x", 2)))
        self.sql("UPDATE karajo_node SET last_seen = now() - interval '1 hour' WHERE name = %s",
                 (me,))
        self.assertEqual(await self.store.reap(15.0, other), [])
        self.assertEqual(await self.store.leave(me), [])
        # Started again, it is alive again.
        nodes = {n.name: n for n in await self.store.heartbeat(node(me))}
        self.assertTrue(nodes[me].alive)


class SlotTests(StoreCase):
    async def test_claims_race_each_slot_won_once(self) -> None:
        """Three nodes claim the same 2,000 slots at once, each in one batch."""
        slots = [("job", f"{self.job}-{i}", 1_700_000_000.0 + 60 * (i % 5)) for i in range(2000)]
        stores = [self.make_store() for _ in range(3)]
        # In different orders: no deadlock between the nodes' statements.
        orders = [slots, slots[::-1], random.Random(7).sample(slots, len(slots))]
        won = await defer.gatherResults(
            [s.claim_slots(f"n{i}", orders[i]) for i, s in enumerate(stores)]
        )
        every = [slot for w in won for slot in w]
        self.assertEqual(sorted(every), sorted(slots))
        # The holder claiming again wins again; the others still lose.
        again = await stores[0].claim_slots("n0", slots)
        self.assertEqual(again, won[0])
        self.assertEqual(await stores[1].claim_slots("n1", list(won[0])), set())

    async def test_duplicates_in_one_batch_and_last_slot(self) -> None:
        self.assertIsNone(await self.store.last_slot("job", self.job))
        won = await self.store.claim_slots("n", [("job", self.job, 60.0), ("job", self.job, 60.0),
                                                 ("job", self.job, 120.0)])
        self.assertEqual(won, {("job", self.job, 60.0), ("job", self.job, 120.0)})
        self.assertEqual(await self.store.last_slot("job", self.job), 120.0)
        self.assertEqual(await self.store.claim_slots("n", []), set())

    async def test_counters_never_twice(self) -> None:
        stores = [self.make_store() for _ in range(3)]

        async def reserve(store: PgStore) -> list[int]:
            got: list[int] = []
            for _ in range(10):
                got.extend(await store.reserve_counters("job", self.job, 3))
            return got

        got = await defer.gatherResults([defer.ensureDeferred(reserve(s)) for s in stores])
        every = [n for g in got for n in g]
        self.assertEqual(sorted(every), list(range(1, 91)))
        # after= continues above what a node already has on disk.
        self.assertEqual(await self.store.reserve_counters("job", self.job, 2, after=500),
                         range(501, 503))
        self.assertEqual(await self.store.reserve_counters("job", self.job, 1, after=10),
                         range(503, 504))
        self.assertEqual(await self.store.reserve_counters("job", "fresh", 2, after=7),
                         range(8, 10))


class RunTests(StoreCase):
    async def test_begin_race_one_node_runs_the_job(self) -> None:
        stores = [self.make_store() for _ in range(3)]
        began = await defer.gatherResults(
            [s.begin_run(f"n{i}", "job", running(self.job, 10 + i)) for i, s in enumerate(stores)]
        )
        self.assertEqual(sorted(began), [False, False, True])
        winner = began.index(True)
        runs = await self.store.runs("job", self.job)
        self.assertEqual([(r.record.counter, r.record.node) for r in runs],
                         [(10 + winner, f"n{winner}")])
        # The same node may begin its next run; the others still may not.
        self.assertTrue(await stores[winner].begin_run(f"n{winner}", "job",
                                                       running(self.job, 20)))
        loser = (winner + 1) % 3
        self.assertFalse(await stores[loser].begin_run(f"n{loser}", "job", running(self.job, 21)))
        # An old run ending late does not free the job the newer run holds.
        old = RunRecord(self.job, 10 + winner, "success", 1.0, 2.0, "schedule", 1, f"n{winner}")
        await self.store.end_run("job", old, b"old\n")
        self.assertFalse(await stores[loser].begin_run(f"n{loser}", "job", running(self.job, 21)))
        done = RunRecord(self.job, 20, "success", 1.0, 2.0, "schedule", 1, f"n{winner}")
        await self.store.end_run("job", done, b"done\n")
        self.assertTrue(await stores[loser].begin_run(f"n{loser}", "job", running(self.job, 21)))

    async def test_begin_runs_in_one_batch_race(self) -> None:
        """Three nodes begin runs of the same 1,000 jobs at once, each in one batch."""
        jobs = [f"{self.job}-{i}" for i in range(1000)]
        stores = [self.make_store() for _ in range(3)]
        orders = [jobs, jobs[::-1], random.Random(7).sample(jobs, len(jobs))]
        answers = await defer.gatherResults([
            s.begin_runs(f"n{i}", [("job", running(job, 1)) for job in orders[i]])
            for i, s in enumerate(stores)
        ])
        # Answers in the order asked: back to the order of jobs.
        answers = [[a[orders[i].index(job)] for job in jobs] for i, a in enumerate(answers)]
        for k, job in enumerate(jobs):
            self.assertEqual(sum(a[k] for a in answers), 1, job)
        stored = {r.record.job_id: r.record.node for r in await self.store.runs("job")}
        self.assertEqual(
            stored, {job: f"n{[a[k] for a in answers].index(True)}" for k, job in enumerate(jobs)}
        )
        # Answers in order; the same job twice in a batch (its next run); nothing to begin.
        winner = [a[0] for a in answers].index(True)
        loser = (winner + 1) % 3
        mixed = await stores[winner].begin_runs(f"n{winner}", [
            ("job", running(jobs[0], 2)), ("job", running(self.job + "-new", 1)),
            ("job", running(jobs[0], 3)),
        ])
        self.assertEqual(mixed, [True, True, True])
        self.assertEqual(self.sql(
            "SELECT running_counter FROM karajo_job WHERE job_id = %s", (jobs[0],)), [(3,)])
        self.assertEqual(await stores[loser].begin_runs(f"n{loser}", [
            ("job", running(self.job + "-other", 1)), ("job", running(jobs[0], 4)),
        ]), [True, False])
        self.assertEqual(await self.store.begin_runs("n", []), [])

    async def test_live_chunks_then_final_log(self) -> None:
        heard = self.listen()
        await wait_for(lambda: self.store._listener._conn is not None)
        await self.store.begin_run("n", "job", running(self.job, 1))
        await self.store.append_logs([("job", self.job, 1, 0, b"hello "),
                                      ("job", self.job, 1, 6, b"world\n")])
        # A chunk sent twice (a retried flush) is stored once.
        await self.store.append_logs([("job", self.job, 1, 6, b"world\n")])
        self.assertEqual(await self.store.read_log("job", self.job, 1), b"hello world\n")
        self.assertEqual(await self.store.read_log("job", self.job, 1, 3), b"lo world\n")
        self.assertEqual(await self.store.read_log("job", self.job, 1, 8), b"rld\n")
        self.assertEqual(await self.store.read_log("job", self.job, 1, 12), b"")
        record = RunRecord(self.job, 1, "failed", 1.0, 3.0, "schedule", 1, "n")
        await self.store.end_run("job", record, b"hello world\nbye\n")
        self.assertEqual(await self.store.read_log("job", self.job, 1), b"hello world\nbye\n")
        self.assertEqual(await self.store.read_log("job", self.job, 1, 12), b"bye\n")
        self.assertEqual(self.sql("SELECT count(*) FROM karajo_log_chunk"), [(0,)])
        # Bytes of a run that ended are not stored.
        await self.store.append_logs([("job", self.job, 1, 16, b"late\n")])
        self.assertEqual(self.sql("SELECT count(*) FROM karajo_log_chunk"), [(0,)])
        self.assertEqual(await self.store.run("job", self.job, 1), StoredRun("job", record))
        self.assertEqual(await self.store.read_log("job", self.job, 99), b"")
        payload = f"job/{self.job}/1"
        await wait_for(lambda: heard.count(("karajo_run", payload)) >= 3)

    async def test_end_runs_in_one_batch(self) -> None:
        jobs = [f"{self.job}-{i}" for i in range(3)]
        began = await self.store.begin_runs("n", [("job", running(job, 1)) for job in jobs])
        self.assertEqual(began, [True] * 3)
        await self.store.append_logs([("job", job, 1, 0, b"live") for job in jobs])
        ends = [RunRecord(job, 1, "success", 1.0, 2.0, "schedule", 1, "n") for job in jobs]
        await self.store.end_runs([("job", ends[0], b"zero"), ("job", ends[1], b"one"),
                                   ("job", ends[2], b"old"), ("job", ends[2], b"two")])
        await self.store.end_runs([])
        self.assertEqual([await self.store.read_log("job", job, 1) for job in jobs],
                         [b"zero", b"one", b"two"])
        self.assertEqual([(await self.store.run("job", job, 1)).record for job in jobs], ends)
        self.assertEqual(self.sql("SELECT count(*) FROM karajo_log_chunk"), [(0,)])
        self.assertEqual(
            self.sql("SELECT count(*) FROM karajo_job WHERE running_node IS NOT NULL"), [(0,)]
        )

    async def test_runs_filters_and_forget(self) -> None:
        for kind, job, counter in [("job", self.job, 1), ("job", self.job, 2),
                                   ("job", self.job + "b", 1), ("job_http", self.job, 1)]:
            record = RunRecord(job, counter, "success", 1.0, 2.0, "manual", 1, "n")
            await self.store.end_run(kind, record, b"x")
        everything = await self.store.runs()
        self.assertEqual(
            [(r.kind, r.record.job_id, r.record.counter) for r in everything],
            [("job", self.job, 1), ("job", self.job, 2), ("job", self.job + "b", 1),
             ("job_http", self.job, 1)],
        )
        self.assertEqual(len(await self.store.runs("job")), 3)
        self.assertEqual(len(await self.store.runs("job", self.job)), 2)
        await self.store.forget_runs("job", self.job, [1])
        await self.store.forget_runs("job", self.job, [])
        self.assertEqual([r.record.counter for r in await self.store.runs("job", self.job)], [2])
        self.assertIsNone(await self.store.run("job", self.job, 1))


class RequestTests(StoreCase):
    async def test_forward_take_once_answer(self) -> None:
        heard = self.listen()
        await wait_for(lambda: self.store._listener._conn is not None)
        request = TriggerRequest("POST", "/hook", {"X-Karajo-Sign": "abc"}, b"\x00\xffbody")
        fwd = Forwarded(0, "job", self.job, "run", "webhook", request, "ignored")
        request_id = await self.store.forward("asker", fwd)
        stores = [self.make_store() for _ in range(3)]
        taken = await defer.gatherResults([s.take(f"n{i}", request_id)
                                           for i, s in enumerate(stores)])
        [got] = [t for t in taken if t is not None]
        self.assertEqual(got, Forwarded(request_id, "job", self.job, "run", "webhook", request,
                                        "asker"))
        self.assertIsNone(await self.store.answer_of(request_id))
        await self.store.answer(request_id, Answer("started", 7, ""))
        self.assertEqual(await self.store.answer_of(request_id), Answer("started", 7, ""))
        await wait_for(lambda: ("karajo_request", f"{request_id} ") in heard
                       and ("karajo_answer", str(request_id)) in heard)
        # A management action carries no request.
        bare = await self.store.forward("asker", Forwarded(0, "job", self.job, "pause", None,
                                                           None, "asker"))
        taken_bare = await self.store.take("n0", bare)
        self.assertEqual((taken_bare.action, taken_bare.request), ("pause", None))

    async def test_forwarded_to_one_node_only_it_takes(self) -> None:
        heard = self.listen()
        await wait_for(lambda: self.store._listener._conn is not None)
        fwd = Forwarded(0, "job", self.job, "cancel", None, None, "asker", to_node="owner")
        request_id = await self.store.forward("asker", fwd)
        self.assertIsNone(await self.store.take("other", request_id))
        taken = await self.store.take("owner", request_id)
        self.assertEqual(taken, attrs.evolve(fwd, id=request_id))
        self.assertIsNone(await self.store.take("owner", request_id))
        await wait_for(lambda: ("karajo_request", f"{request_id} owner") in heard)

    async def test_seen_request_once_cluster_wide(self) -> None:
        stores = [self.make_store() for _ in range(3)]
        firsts = await defer.gatherResults([s.seen_request(b"key-1", 2e9) for s in stores])
        self.assertEqual(sorted(firsts), [False, False, True])
        self.assertTrue(await self.store.seen_request(b"key-2", 2e9))

    async def test_pause_state_and_news(self) -> None:
        heard = self.listen()
        await wait_for(lambda: self.store._listener._conn is not None)
        await self.store.set_paused("job", self.job, True)
        await self.store.set_paused("job_http", self.job, True)
        await self.store.set_paused("job_http", self.job, False)
        await self.store.reserve_counters("job", "other", 1)
        self.assertEqual(await self.store.paused_jobs(), {("job", self.job)})
        await wait_for(lambda: heard.count(("karajo_pause", f"job_http/{self.job}")) == 2)

    async def test_prune_bounds_the_tables(self) -> None:
        now = 2_000_000_000.0
        day = 24 * 3600.0
        await self.store.claim_slots("n", [("job", self.job, now - 3 * day),
                                           ("job", self.job, now - 2 * day),
                                           ("job", self.job, now - 60),
                                           ("job", "monthly", now - 20 * day),
                                           ("job", "monthly", now - 40 * day)])
        await self.store.seen_request(b"old", now - 1)
        await self.store.seen_request(b"new", now + 1)
        old = await self.store.forward("n", Forwarded(0, "job", self.job, "pause", None, None, ""))
        new = await self.store.forward("n", Forwarded(0, "job", self.job, "pause", None, None, ""))
        self.sql("UPDATE karajo_request SET created = now() - interval '2 hours' WHERE id = %s",
                 (old,))
        await self.store.prune(now)
        self.assertEqual(
            sorted(self.sql("SELECT job_id, slot FROM karajo_slot")),
            [(self.job, now - 60), ("monthly", now - 20 * day)],
        )
        self.assertEqual(self.sql("SELECT key FROM karajo_replay"), [(b"new",)])
        self.assertEqual(self.sql("SELECT id FROM karajo_request"), [(new,)])


class DescribeTests(unittest.TestCase):
    def test_password_never_shown(self) -> None:
        for conninfo in ("postgresql://karajo:s3cret@db.example:5433/prod",
                         "host=db.example port=5433 dbname=prod user=karajo password=s3cret"):
            self.assertEqual(describe(conninfo), "host=db.example port=5433 dbname=prod user=karajo")

    def test_unreadable_url_not_quoted(self) -> None:
        with self.assertRaises(ValueError) as caught:
            PgStore(reactor, "host=db password=s3cret oops")
        self.assertNotIn("s3cret", str(caught.exception))
        self.assertNotIn("oops", str(caught.exception))
        self.assertEqual(describe("host=db password=s3cret oops"), "(unparsable database URL)")
