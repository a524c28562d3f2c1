"""
The run policies' keys (docs/configuration.md, "Run policies"): values,
defaults, where each is accepted, and every config error with its file
and line.
"""

from __future__ import annotations

import os
from datetime import timedelta

from twisted.trial.unittest import SynchronousTestCase

from karajo.config import load_environment
from karajo.errors import ConfigError
from karajo.model import MAX_RETRY_DELAY, Job
from tests.helpers import config_tree


class PolicyKeyTests(SynchronousTestCase):
    def load(self, main: str, files: dict[str, str] | None = None):
        path = config_tree(self.mktemp(), main, files)
        return load_environment(path, environ={}).environment

    def error(self, main: str, files: dict[str, str] | None = None) -> ConfigError:
        path = config_tree(self.mktemp(), main, files)
        return self.assertRaises(ConfigError, load_environment, path, {})

    def test_defaults(self) -> None:
        """Without the keys: no retry, 1m delay, queue, no catch-up, no random delay, no timeout, no chain."""
        env = self.load('[job "a"]\ncommand = true\n[job.http "h"]\nhttp_url = /x\n')
        for job in (env.jobs["a"], env.http_jobs["h"]):
            self.assertEqual(job.retry, 0)
            self.assertEqual(job.retry_delay, timedelta(minutes=1))
            self.assertEqual(job.overlap, "queue")
            self.assertEqual(job.catch_up, timedelta(0))
            self.assertEqual(job.random_delay, timedelta(0))
            self.assertIsNone(job.timeout)
        self.assertEqual(env.jobs["a"].on_success, ())
        self.assertEqual(env.jobs["a"].on_failed, ())

    def test_values_in_both_kinds(self) -> None:
        """The keys marked † are read in [job] and [job.http] alike."""
        keys = (
            "retry = 3\nretry_delay = 30s\noverlap = replace\ncatch_up = 2h\n"
            "random_delay = 5m\ntimeout = 10s\n"
        )
        env = self.load(
            f'[job "a"]\ncommand = true\n{keys}[job.http "h"]\nhttp_url = /x\n{keys}'
        )
        for job in (env.jobs["a"], env.http_jobs["h"]):
            self.assertEqual(job.retry, 3)
            self.assertEqual(job.retry_delay, timedelta(seconds=30))
            self.assertEqual(job.overlap, "replace")
            self.assertEqual(job.catch_up, timedelta(hours=2))
            self.assertEqual(job.random_delay, timedelta(minutes=5))
            self.assertEqual(job.timeout, timedelta(seconds=10))

    def test_chains_repeat(self) -> None:
        """on_success/on_failed are repeatable lists of job IDs."""
        env = self.load(
            '[job "a"]\ncommand = true\non_success = b\non_success = c\non_failed = c\n'
            '[job "b"]\ncommand = true\n[job "c"]\ncommand = true\n'
        )
        self.assertEqual(env.jobs["a"].on_success, ("b", "c"))
        self.assertEqual(env.jobs["a"].on_failed, ("c",))

    def test_chain_keys_not_in_job_http(self) -> None:
        """A [job.http] has no chains: the key is warned about and ignored."""
        path = config_tree(
            self.mktemp(), '[job.http "h"]\nhttp_url = /x\non_success = h\n'
        )
        loaded = load_environment(path, environ={})
        self.assertTrue(any("unknown key 'on_success'" in w for w in loaded.warnings))

    def test_bad_values(self) -> None:
        """Each bad value is an error at its own line (the main file's line 3 is [job])."""
        cases = [
            ("retry = -1", "retry: must be between 0 and 100"),
            ("retry = 101", "retry: must be between 0 and 100"),
            ("retry = many", "retry"),
            ("retry_delay = 0s", "retry_delay: must be positive"),
            ("retry_delay = soon", "retry_delay"),
            ("overlap = drop", "overlap: 'drop' is not one of queue, skip, replace"),
            ("catch_up = -1s", "catch_up: must not be negative"),
            ("random_delay = -1s", "random_delay: must not be negative"),
            ("timeout = 0s", "timeout: must be positive"),
        ]
        for kind, head in (("job", "command = true"), ("job.http", "http_url = /x")):
            for line, reason in cases:
                err = self.error(f'[{kind} "a"]\n{head}\n{line}\n')
                self.assertEqual(err.line, 5, (kind, line, str(err)))
                self.assertIn(reason, str(err))

    def test_unknown_chain_target(self) -> None:
        """A chain to an ID no [job] has is an error at the key's line."""
        err = self.error('[job "a"]\ncommand = true\non_failed = nobody\n')
        self.assertEqual(err.line, 5)
        self.assertIn("on_failed: no [job] has the ID 'nobody'", err.reason)

    def test_chain_to_job_http_refused(self) -> None:
        """Chains name [job]s only: a [job.http] ID is unknown."""
        err = self.error('[job "a"]\ncommand = true\non_success = h\n[job.http "h"]\nhttp_url = /x\n')
        self.assertIn("no [job] has the ID 'h'", err.reason)

    def test_cycle_names_files_and_lines(self) -> None:
        """A cycle across files is an error naming each link's file and line."""
        base = os.path.abspath(self.mktemp())
        path = config_tree(base, "", {
            "job.d/a.conf": '[job "a"]\ncommand = true\non_success = b\n',
            "job.d/b.conf": '[job "b"]\ncommand = true\n\non_failed = a\n',
        })
        err = self.assertRaises(ConfigError, load_environment, path, {})
        a = os.path.join(base, "etc", "karajo", "job.d", "a.conf")
        b = os.path.join(base, "etc", "karajo", "job.d", "b.conf")
        self.assertEqual((err.filename, err.line), (a, 3))
        self.assertIn("chain cycle a -> b -> a", err.reason)
        self.assertIn(f"a on_success at {a}:3", err.reason)
        self.assertIn(f"b on_failed at {b}:4", err.reason)

    def test_self_chain_is_a_cycle(self) -> None:
        err = self.error('[job "a"]\ncommand = true\non_failed = a\n')
        self.assertEqual(err.line, 5)
        self.assertIn("chain cycle a -> a", err.reason)

    def test_diamond_is_no_cycle(self) -> None:
        """Two paths to one job are fine: only a way back is a cycle."""
        env = self.load(
            '[job "a"]\ncommand = true\non_success = b\non_success = c\n'
            '[job "b"]\ncommand = true\non_success = d\n'
            '[job "c"]\ncommand = true\non_success = d\n[job "d"]\ncommand = true\n'
        )
        self.assertEqual(sorted(env.jobs), ["a", "b", "c", "d"])


class RetryWaitTests(SynchronousTestCase):
    def test_doubles(self) -> None:
        job = Job(name="a", retry_delay=timedelta(minutes=1))
        self.assertEqual(
            [job.retry_wait(k) for k in (1, 2, 3)],
            [timedelta(minutes=1), timedelta(minutes=2), timedelta(minutes=4)],
        )

    def test_capped_at_an_hour(self) -> None:
        job = Job(name="a", retry_delay=timedelta(minutes=20))
        self.assertEqual(job.retry_wait(2), timedelta(minutes=40))
        self.assertEqual(job.retry_wait(3), MAX_RETRY_DELAY)
        self.assertEqual(job.retry_wait(100), timedelta(hours=1))
        self.assertEqual(Job(name="b", retry_delay=timedelta(hours=2)).retry_wait(1),
                         timedelta(hours=1))
