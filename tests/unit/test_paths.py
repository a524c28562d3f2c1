"""
Tests for L{karajo.paths}: the tree under C{dir_base} (docs/configuration.md),
written out literally, and the private directories made in it.
"""

from __future__ import annotations

import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from karajo import paths as pathsmod
from karajo.paths import Paths, make_private_dirs


class LayoutTests(SynchronousTestCase):
    """The layout is the original's: scripts and backups rely on it."""

    def test_paths(self) -> None:
        p = Paths("/srv/k")
        self.assertEqual(p.work_dir("job", "a"), "/srv/k/var/lib/karajo/job/a")
        self.assertEqual(p.work_dir("job_http", "b"), "/srv/k/var/lib/karajo/job_http/b")
        self.assertEqual(p.log_dir("job", "a"), "/srv/k/var/log/karajo/job/a")
        self.assertEqual(p.log_dir("job_http", "b"), "/srv/k/var/log/karajo/job_http/b")
        self.assertEqual(p.state_file("job", "a"), "/srv/k/var/run/karajo/job/a")
        self.assertEqual(p.state_file("job_http", "b"), "/srv/k/var/run/karajo/job_http/b")

    def test_frozen_value(self) -> None:
        self.assertEqual(Paths("/a"), Paths("/a"))
        with self.assertRaises(AttributeError):
            Paths("/a").dir_base = "/b"  # type: ignore[misc]


class PrivateDirTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        # With umask 0 the mode asked for is the mode a directory gets.
        self.addCleanup(os.umask, os.umask(0))

    def mode(self, path: str) -> int:
        return stat.S_IMODE(os.stat(path).st_mode)

    def test_ensure(self) -> None:
        """var/ and the fixed directories below it exist, 0700; no job directories yet."""
        Paths(self.base).ensure()
        expected = [
            "var",
            "var/lib", "var/lib/karajo", "var/lib/karajo/job", "var/lib/karajo/job_http",
            "var/log", "var/log/karajo", "var/log/karajo/job", "var/log/karajo/job_http",
            "var/run", "var/run/karajo", "var/run/karajo/job", "var/run/karajo/job_http",
        ]
        found = sorted(
            os.path.relpath(os.path.join(root, d), self.base)
            for root, dirs, _ in os.walk(self.base)
            for d in dirs
        )
        self.assertEqual(found, sorted(expected))
        for rel in expected:
            self.assertEqual(self.mode(os.path.join(self.base, rel)), 0o700, rel)

    def test_ensure_twice(self) -> None:
        Paths(self.base).ensure()
        Paths(self.base).ensure()
        self.assertEqual(self.mode(os.path.join(self.base, "var")), 0o700)

    def test_parents_made_private(self) -> None:
        """Every missing parent is 0700, not only the last directory."""
        target = os.path.join(self.base, "a", "b", "c")
        make_private_dirs(target)
        for path in (self.base, os.path.join(self.base, "a"), os.path.join(self.base, "a", "b"), target):
            self.assertEqual(self.mode(path), 0o700, path)

    def test_existing_left_alone(self) -> None:
        """An existing directory keeps its mode (the operator chose it)."""
        os.makedirs(os.path.join(self.base, "a"), 0o755)
        make_private_dirs(os.path.join(self.base, "a", "b"))
        self.assertEqual(self.mode(os.path.join(self.base, "a")), 0o755)
        self.assertEqual(self.mode(os.path.join(self.base, "a", "b")), 0o700)
        make_private_dirs(os.path.join(self.base, "a"))
        self.assertEqual(self.mode(os.path.join(self.base, "a")), 0o755)

    def test_relative_path(self) -> None:
        """A relative path is taken from the working directory."""
        os.makedirs(self.base)
        cwd = os.getcwd()
        os.chdir(self.base)
        self.addCleanup(os.chdir, cwd)
        make_private_dirs(os.path.join("x", "y"))
        self.assertEqual(self.mode(os.path.join(self.base, "x", "y")), 0o700)

    def test_created_meanwhile(self) -> None:
        """A directory another process creates between the check and mkdir is fine."""
        real_mkdir = os.mkdir
        made: list[str] = []

        def racing_mkdir(path: str, mode: int = 0o777) -> None:
            real_mkdir(path, 0o750)  # the other process wins
            made.append(path)
            real_mkdir(path, mode)  # raises FileExistsError

        self.patch(pathsmod.os, "mkdir", racing_mkdir)
        make_private_dirs(os.path.join(self.base, "a"))
        self.assertEqual(made, [self.base, os.path.join(self.base, "a")])
        self.assertEqual(self.mode(os.path.join(self.base, "a")), 0o750)


class OpenMakingDirsTests(SynchronousTestCase):
    """open_making_dirs: the directory made private only when the open finds it missing."""

    FLAGS = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC

    def test_missing_directory_made(self) -> None:
        base = os.path.abspath(self.mktemp())
        path = os.path.join(base, "run", "job", "j.pgid")
        os.close(pathsmod.open_making_dirs(path, self.FLAGS))
        for directory in (base, os.path.dirname(path)):
            self.assertEqual(stat.S_IMODE(os.stat(directory).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode) & 0o077, 0)

    def test_existing_directory_not_looked_at(self) -> None:
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        made: list[str] = []
        self.patch(pathsmod, "make_private_dirs", made.append)
        os.close(pathsmod.open_making_dirs(os.path.join(base, "f"), self.FLAGS))
        self.assertEqual(made, [])

    def test_other_errors_raised(self) -> None:
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        with self.assertRaises(IsADirectoryError):
            pathsmod.open_making_dirs(base, self.FLAGS)


class SoleFileTests(SynchronousTestCase):
    """is_sole_file: a plain file with one name, nothing else."""

    def test_kinds(self) -> None:
        base = self.mktemp()
        os.makedirs(base)
        plain = os.path.join(base, "plain")
        with open(plain, "wb"):
            pass
        fifo = os.path.join(base, "fifo")
        os.mkfifo(fifo)
        self.assertTrue(pathsmod.is_sole_file(os.stat(plain)))
        self.assertFalse(pathsmod.is_sole_file(os.stat(fifo)))
        self.assertFalse(pathsmod.is_sole_file(os.stat(base)))
        os.link(plain, os.path.join(base, "second name"))
        self.assertFalse(pathsmod.is_sole_file(os.stat(plain)))
