"""
The directory tree under C{dir_base} (SPEC section 1).

One place computes every path so that nothing is ever written outside
C{dir_base}, and the layout stays the one the original uses.
"""

from __future__ import annotations

import os

from attrs import frozen


@frozen
class Paths:
    """Paths of one server, rooted at an absolute C{dir_base}."""

    dir_base: str

    @property
    def etc(self) -> str:
        return os.path.join(self.dir_base, "etc", "karajo")

    def work_dir(self, kind: str, job_id: str) -> str:
        """Where a job's commands run (C{kind} is C{job} or C{job_http})."""
        return os.path.join(self.dir_base, "var", "lib", "karajo", kind, job_id)

    def log_dir(self, kind: str, job_id: str) -> str:
        return os.path.join(self.dir_base, "var", "log", "karajo", kind, job_id)

    def state_file(self, kind: str, job_id: str) -> str:
        return os.path.join(self.dir_base, "var", "run", "karajo", kind, job_id)

    def ensure(self, kind: str, job_id: str) -> None:
        """
        Create a job's directories, private to the daemon's user (0700):
        logs and working files may hold anything a job prints.
        """
        os.makedirs(os.path.join(self.dir_base, "var"), mode=0o700, exist_ok=True)
        for path in (
            self.work_dir(kind, job_id),
            self.log_dir(kind, job_id),
            os.path.dirname(self.state_file(kind, job_id)),
        ):
            os.makedirs(path, mode=0o700, exist_ok=True)
