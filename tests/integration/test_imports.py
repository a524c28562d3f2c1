"""
No karajo module installs Twisted's global reactor when imported: only the
entry points pick it (C{karajo.tap}, C{karajo.make_service}), so a C{.tac}
file or a test can still install the asyncio reactor after importing
karajo.  Checked in a fresh interpreter, since under trial a reactor is
already installed.
"""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
import textwrap

from twisted.trial.unittest import TestCase

import karajo

_SCRIPT = textwrap.dedent(
    """
    import importlib
    import sys

    names = sys.argv[1:]
    for name in names:
        importlib.import_module(name)
        if "twisted.internet.reactor" in sys.modules:
            sys.exit(f"importing {name} installed the global reactor")
    from twisted.internet import asyncioreactor

    asyncioreactor.install()
    from twisted.internet import reactor

    print(type(reactor).__name__, len(names))
    """
)


def karajo_modules() -> list[str]:
    """Every module of the karajo package, found by walking its directory."""
    found = ["karajo"]
    for info in pkgutil.walk_packages(karajo.__path__, "karajo."):
        found.append(info.name)
    return sorted(found)


class ImportsInstallNoReactor(TestCase):
    def test_walk_finds_every_module(self) -> None:
        """The walk sees subpackages too (a walk that found nothing would prove nothing)."""
        names = karajo_modules()
        for expected in ("karajo.config", "karajo.notify", "karajo.web.api", "karajo.web.site",
                         "karajo.server", "karajo.tap"):
            self.assertIn(expected, names)
        files = sum(
            name.endswith(".py")
            for _root, _dirs, names_ in os.walk(karajo.__path__[0])
            for name in names_
        )
        self.assertEqual(len(names), files)

    def test_asyncio_reactor_after_importing_everything(self) -> None:
        """Import every karajo module, then install the asyncio reactor."""
        names = karajo_modules()
        done = subprocess.run(
            [sys.executable, "-c", _SCRIPT, *names],
            capture_output=True, text=True, timeout=120,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stdout.split(), ["AsyncioSelectorReactor", str(len(names))])


class SingleProcessImportsNoPsycopg(TestCase):
    def test_psycopg_only_with_the_cluster_store(self) -> None:
        """
        The single-process server and the cluster protocol import no psycopg
        (an extra); only the PostgreSQL store does.
        """
        script = textwrap.dedent(
            """
            import sys
            import karajo.tap, karajo.server, karajo.cli, karajo.clusterstore
            import karajo.clusterschema
            before = "psycopg" in sys.modules
            import karajo.pgstore
            print(before, "psycopg" in sys.modules)
            """
        )
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stdout.split(), ["False", "True"])
