"""
The directory tree under C{dir_base} (docs/configuration.md, "Files and directories").

One place computes every path so that nothing is ever written outside
C{dir_base}, and the layout stays the one the original uses.
"""

from __future__ import annotations

import os
import stat

from attrs import frozen

from karajo.kinds import JobKind


@frozen
class Paths:
    """Paths of one server, rooted at an absolute C{dir_base}."""

    dir_base: str

    def work_dir(self, kind: str, job_id: str) -> str:
        """Where a job's commands run (C{kind} is C{job} or C{job_http})."""
        return os.path.join(self.dir_base, "var", "lib", "karajo", kind, job_id)

    def log_dir(self, kind: str, job_id: str) -> str:
        return os.path.join(self.dir_base, "var", "log", "karajo", kind, job_id)

    def state_file(self, kind: str, job_id: str) -> str:
        return os.path.join(self.dir_base, "var", "run", "karajo", kind, job_id)

    def payload_file(self, kind: str, job_id: str) -> str:
        """
        The body of the webhook request a command job's run was triggered
        by (C{KARAJO_PAYLOAD_FILE}): beside the job's state, in the
        daemon's private C{var/}; there only while a run is going.
        """
        return self.state_file(kind, job_id) + ".payload"

    def ensure(self) -> None:
        """
        Create the tree's fixed directories, C{var/} private to the daemon's
        user (0700): logs and working files may hold anything a job prints.
        A job's own directories are made on its first run (a server with
        thousands of jobs must not start with thousands of mkdirs).
        """
        make_private_dirs(os.path.join(self.dir_base, "var"))
        for kind in JobKind:
            for path in (self.work_dir(kind, ""), self.log_dir(kind, ""),
                         os.path.dirname(self.state_file(kind, "x"))):
                make_private_dirs(path)


def make_private_dirs(path: str) -> None:
    """
    Create C{path} and its missing parents with mode 0700; existing ones are
    left as they are.  Cheap when C{path} exists (one C{stat}), which is the
    common case at every start-up, for every job.
    """
    path = os.path.abspath(path)
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for each in reversed(missing):
        try:
            os.mkdir(each, 0o700)
        except FileExistsError:
            pass


def open_making_dirs(path: str, flags: int, mode: int = 0o600) -> int:
    """
    C{os.open(path, flags, mode)}, and when C{path}'s directory is missing
    (C{FileNotFoundError} from a create), that directory made private
    (L{make_private_dirs}) and the open tried once more.  The run-time
    directories are made on first use this way, and again after an
    operator removed them, with no C{stat} before each open of a run.
    """
    try:
        return os.open(path, flags, mode)
    except FileNotFoundError:
        make_private_dirs(os.path.dirname(os.path.abspath(path)))
        return os.open(path, flags, mode)


def is_sole_file(st: os.stat_result) -> bool:
    """
    Whether what a descriptor opened in the tree is a plain file with one
    name: the only kind karajo writes or empties through a descriptor (a
    FIFO would block, and a second name would get the bytes too).
    """
    return stat.S_ISREG(st.st_mode) and st.st_nlink == 1
