"""
Tests for C{[cluster]} (docs/cluster.md): the config keys and their checks,
the configuration digest (L{karajo.digest}), job ownership
(L{karajo.ownership}) and the reload's restart warning.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta

import attrs
from twisted.trial.unittest import SynchronousTestCase

from karajo.config import load_environment
from karajo.digest import config_digest
from karajo.errors import ConfigError
from karajo.model import Cluster, Environment, Job, JobHttp
from karajo.ownership import owner
from karajo.reload import plan
from tests.helpers import config_tree


class ClusterConfigTests(SynchronousTestCase):
    def load(self, main: str, environ=None):
        path = config_tree(self.mktemp(), main)
        return load_environment(path, environ=environ or {}), path

    def error(self, main: str, environ=None) -> ConfigError:
        path = config_tree(self.mktemp(), main)
        return self.assertRaises(ConfigError, load_environment, path, environ or {})

    def test_without_cluster(self) -> None:
        """No [cluster]: a single server, as always."""
        loaded, _ = self.load("")
        self.assertIsNone(loaded.environment.cluster)

    def test_keys_and_defaults(self) -> None:
        loaded, _ = self.load("[cluster]\ndatabase = postgresql://db/karajo\nnode = a-1\n")
        cluster = loaded.environment.cluster
        self.assertEqual(cluster.database, "postgresql://db/karajo")
        self.assertEqual(cluster.node, "a-1")
        self.assertEqual(cluster.heartbeat, timedelta(seconds=2))
        self.assertEqual(cluster.node_timeout, timedelta(seconds=15))
        loaded, _ = self.load("[cluster]\ndatabase = x\nheartbeat = 1s\nnode_timeout = 5s\n")
        self.assertEqual(loaded.environment.cluster.heartbeat, timedelta(seconds=1))
        self.assertEqual(loaded.environment.cluster.node_timeout, timedelta(seconds=5))

    def test_node_defaults_to_host_name(self) -> None:
        import socket

        loaded, _ = self.load("[cluster]\ndatabase = x\n")
        self.assertEqual(loaded.environment.cluster.node, socket.gethostname().split(".")[0])

    def test_database_from_environment(self) -> None:
        """$NAME reads the variable (scrubbed later); the value is never in a repr."""
        loaded, _ = self.load("[cluster]\ndatabase = $KARAJO_DATABASE_URL\nnode = a\n",
                              environ={"KARAJO_DATABASE_URL": "postgresql://u:pw@db/k"})
        self.assertEqual(loaded.environment.cluster.database, "postgresql://u:pw@db/k")
        self.assertIn("KARAJO_DATABASE_URL", loaded.credential_vars)
        self.assertNotIn("pw", repr(loaded.environment))

    def test_errors_name_file_and_line(self) -> None:
        err = self.error("[cluster]\nnode = a\n")
        self.assertEqual(err.line, 3)
        self.assertIn("needs database", err.reason)
        err = self.error("[cluster]\ndatabase = $NOPE\nnode = a\n")
        self.assertEqual((err.line, err.reason), (4, "database: environment variable NOPE is not set"))
        err = self.error("[cluster]\ndatabase = x\nnode = a\nheartbeat = 5s\nnode_timeout = 10s\n")
        self.assertEqual(err.line, 7)
        self.assertIn("node_timeout: must be more than twice heartbeat", str(err))
        err = self.error("[cluster]\ndatabase = x\nnode = a b\n")
        self.assertEqual(err.line, 5)
        err = self.error("[cluster]\ndatabase = x\nnode = a\nheartbeat = 0s\n")
        self.assertEqual((err.line, err.reason), (6, "heartbeat: must be positive"))

    def test_cluster_without_secret_warned(self) -> None:
        loaded, path = self.load("[cluster]\ndatabase = x\nnode = a\n")
        self.assertIn(f"{path}:3: [cluster] without [karajo] secret", "\n".join(loaded.warnings))
        loaded, _ = self.load("secret = s\n[cluster]\ndatabase = x\nnode = a\n")
        self.assertEqual(loaded.warnings, ())

    def test_unknown_key_warned(self) -> None:
        loaded, path = self.load("[cluster]\ndatabase = x\nnode = a\nnodes = 3\n")
        self.assertIn(f"{path}:6: unknown key 'nodes' in [cluster], ignored", loaded.warnings)

    def test_reload_needs_restart(self) -> None:
        """A changed [cluster] is kept until a restart, and said so without the database."""
        one = Environment(cluster=Cluster(database="postgresql://u:secret@db", node="a"))
        two = attrs.evolve(one, cluster=Cluster(database="postgresql://u:other@db", node="a"))
        steps = plan(one, two)
        self.assertEqual(steps.env.cluster, one.cluster)
        self.assertEqual(len(steps.restart), 1)
        self.assertIn("[cluster] changed", steps.restart[0])
        self.assertNotIn("secret", steps.restart[0])
        self.assertNotIn("other", steps.restart[0])
        self.assertEqual(plan(one, one).restart, ())


class DigestTests(SynchronousTestCase):
    env = Environment(
        secret="s", cluster=Cluster(database="x", node="a"),
        jobs={"j": Job(name="j", commands=("true",), schedule="minutely")},
        http_jobs={"h": JobHttp(name="h", http_url="/x")},
    )

    def test_what_counts(self) -> None:
        base = config_digest(self.env)
        self.assertRegex(base, "^[0-9a-f]{64}$")
        same = [
            attrs.evolve(self.env, listen_address=":1", dir_base="/elsewhere"),
            attrs.evolve(self.env, cluster=Cluster(database="y", node="b")),
        ]
        for env in same:
            self.assertEqual(config_digest(env), base)
        differs = [
            attrs.evolve(self.env, max_job_running=2),
            attrs.evolve(self.env, secret="t"),
            attrs.evolve(self.env, jobs={"j": Job(name="j", commands=("false",),
                                                  schedule="minutely")}),
            attrs.evolve(self.env, cluster=Cluster(database="x", node="a",
                                                   heartbeat=timedelta(seconds=1))),
        ]
        for env in differs:
            self.assertNotEqual(config_digest(env), base)

    def test_same_files_same_digest(self) -> None:
        """Two nodes read from the same files, differing only in node and dir_base."""
        digests = set()
        for node in ("a", "b"):
            path = config_tree(self.mktemp(), f"""
                secret = s
                [cluster]
                database = x
                node = {node}
                [job "j"]
                schedule = minutely
                command = true
            """)
            digests.add(config_digest(load_environment(path, environ={}).environment))
        self.assertEqual(len(digests), 1)


class OwnershipTests(SynchronousTestCase):
    def test_deterministic_and_spread(self) -> None:
        nodes = ["a", "b", "c"]
        owners = [owner(nodes, "job", f"j{i}") for i in range(300)]
        self.assertEqual(owners, [owner(reversed(nodes), "job", f"j{i}") for i in range(300)])
        for node in nodes:
            self.assertGreater(owners.count(node), 60)
        self.assertIsNone(owner([], "job", "j"))

    def test_only_a_lost_nodes_jobs_move(self) -> None:
        before = {i: owner(["a", "b", "c"], "job", f"j{i}") for i in range(300)}
        after = {i: owner(["a", "c"], "job", f"j{i}") for i in range(300)}
        for i in range(300):
            if before[i] != "b":
                self.assertEqual(after[i], before[i])
            else:
                self.assertIn(after[i], ("a", "c"))

    def test_kinds_are_distinct(self) -> None:
        nodes = [f"n{i}" for i in range(8)]
        self.assertNotEqual(
            [owner(nodes, "job", f"j{i}") for i in range(50)],
            [owner(nodes, "job_http", f"j{i}") for i in range(50)],
        )


class NoClusterImportTests(SynchronousTestCase):
    def test_single_server_imports_no_cluster(self) -> None:
        """Loading and building a single server imports neither the cluster nor psycopg."""
        import subprocess

        import karajo

        top = os.path.dirname(os.path.dirname(os.path.abspath(karajo.__file__)))
        code = (
            "import sys; from karajo.server import build_service; "
            "from karajo.config import load_environment; "
            "bad = [m for m in ('karajo.cluster', 'karajo.pgstore', 'psycopg') "
            "if m in sys.modules]; print(bad)"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, env={**os.environ, "PYTHONPATH": top})
        self.assertEqual(out.stdout.strip(), "[]")


class CheckTests(SynchronousTestCase):
    def test_digest_warnings(self) -> None:
        from karajo.cluster import digest_warnings

        nodes = [("b", True, "f" * 64), ("a", True, "0" * 64), ("c", False, "e" * 64)]
        [warning] = digest_warnings("0" * 64, nodes)
        self.assertIn("node b runs another configuration", warning)
        self.assertEqual(digest_warnings("0" * 64, nodes[1:]), [])

    def test_karajo_check_shows_the_cluster(self) -> None:
        """Without a reachable database: the digest, and why the nodes are not read."""
        import io
        from contextlib import redirect_stdout

        from karajo.cli import main

        path = config_tree(self.mktemp(), """
            [cluster]
            database = postgresql://u:topsecret@127.0.0.1:1/none
            node = n1
        """)
        out = io.StringIO()
        with redirect_stdout(out):
            self.assertEqual(main(["check", "--config", path]), 0)
        text = out.getvalue()
        self.assertRegex(text, r"\[cluster\] node 'n1', config digest [0-9a-f]{64}")
        self.assertIn("nodes: not read from the database", text)
        self.assertNotIn("topsecret", text)
