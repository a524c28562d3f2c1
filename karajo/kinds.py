"""
The two kinds of job and every name each goes by (pure: the config, the
paths, the services and the web all speak of kinds, so it sits below them).
"""

from __future__ import annotations

import enum

__all__ = ["JobKind"]

class JobKind(enum.StrEnum):
    """
    The two kinds of job, and every name a kind goes by: its config
    section, its directories, its API path segment and its label on the
    dashboard.  The value (C{job}, C{job_http}) is the word in log lines,
    directory names under C{var/} and the dashboard's C{kind=} parameter.
    """

    JOB = "job"
    JOB_HTTP = "job_http"

    @property
    def section(self) -> str:
        """The config section: C{[job "NAME"]} or C{[job.http "NAME"]}."""
        return "job" if self is JobKind.JOB else "job.http"

    @property
    def config_dir(self) -> str:
        """The directory of extra config files under C{etc/karajo/}."""
        return "job.d" if self is JobKind.JOB else "job_http.d"

    @property
    def directory(self) -> str:
        """A job's directory name under C{var/lib}, C{var/log}, C{var/run}."""
        return self.value

    @property
    def api(self) -> str:
        """The API path segment: C{/karajo/api/job_exec/...}, C{/karajo/api/job_http/...}."""
        return "job_exec" if self is JobKind.JOB else "job_http"

    @property
    def table(self) -> str:
        """The map of these jobs: in L{Environment}, the server and the API's JSON."""
        return "jobs" if self is JobKind.JOB else "http_jobs"

    @property
    def label(self) -> str:
        """The kind in words, as the dashboard shows it."""
        return "job" if self is JobKind.JOB else "HTTP job"
