"""Tests for L{karajo.tap} and L{karajo.service}: the twistd plugin."""

from __future__ import annotations

import io
import os
import sys

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase

from karajo import tap
from karajo.config import load_environment
from karajo.server import build_service
from tests.helpers import config_tree


class PluginTests(SynchronousTestCase):
    def test_plugin_found(self) -> None:
        """twistd finds a ServiceMaker named karajo that points at karajo.tap."""
        from twisted.application.service import IServiceMaker

        makers = {p.tapname: p for p in getPlugins(IServiceMaker)}
        self.assertIn("karajo", makers)
        self.assertEqual(makers["karajo"].module, "karajo.tap")


class OptionsTests(SynchronousTestCase):
    def test_default_config(self) -> None:
        """--config defaults to /etc/karajo/karajo.conf."""
        self.assertEqual(tap.Options()["config"], "/etc/karajo/karajo.conf")

    def test_config_error_exits(self) -> None:
        """A config error prints FILE:LINE: reason and exits non-zero, no traceback."""
        base = self.mktemp()
        path = config_tree(base, '[job "x"]\ninterval = nope\ncommand = a\n')
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        exc = self.assertRaises(SystemExit, tap.Options().parseOptions, ["--config", path])
        self.assertEqual(exc.code, 1)
        self.assertTrue(err.getvalue().startswith(f"karajo: {os.path.abspath(path)}:4: interval"), err.getvalue())


class MakeServiceTests(SynchronousTestCase):
    def test_children(self) -> None:
        """One child per job and JobHttp, plus the HTTP listener."""
        base = self.mktemp()
        path = config_tree(
            base,
            'secret = x\n[job "a"]\ncommand = a\n[job "b"]\ncommand = b\n'
            '[job.http "c"]\nhttp_url = /x\n',
        )
        service = build_service(load_environment(path, {}), MemoryReactorClock())
        self.assertIsInstance(service, MultiService)
        names = sorted(child.name for child in service)
        self.assertEqual(names, ["http", "job/a", "job/b", "job_http/c"])
        self.assertIsInstance(service.getServiceNamed("http"), StreamServerEndpointService)
        IService(service)

    def test_directory_tree(self) -> None:
        """
        The fixed tree of docs/configuration.md ("Files and directories") is created under dir_base at start,
        var/ private to the daemon; a job's own directories come with its
        first run (see tests.test_run).
        """
        base = os.path.abspath(self.mktemp())
        path = config_tree(base, 'secret = x\n[job "a"]\ncommand = a\n[job.http "c"]\nhttp_url = /x\n')
        build_service(load_environment(path, {}), MemoryReactorClock())
        for rel in (
            "var/lib/karajo/job",
            "var/log/karajo/job",
            "var/run/karajo/job",
            "var/lib/karajo/job_http",
            "var/log/karajo/job_http",
            "var/run/karajo/job_http",
        ):
            self.assertTrue(os.path.isdir(os.path.join(base, rel)), rel)
        self.assertEqual(os.stat(os.path.join(base, "var")).st_mode & 0o777, 0o700)

    def test_generated_secret(self) -> None:
        """An empty secret is replaced by 32 letters/digits, printed once to the terminal."""
        base = self.mktemp()
        path = config_tree(base, "")
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        service = build_service(load_environment(path, {}), MemoryReactorClock())
        secret = service.env.secret
        self.assertEqual(len(secret), 32)
        self.assertTrue(secret.isalnum())
        self.assertIn(secret, err.getvalue())
