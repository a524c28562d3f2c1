"""
L{karajo.model.JobKind}: the one vocabulary for the two kinds of job.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from karajo.model import Job, JobHttp, JobKind


class JobKindTests(SynchronousTestCase):
    def test_names(self) -> None:
        """Each kind's config section, directories, API segment and label."""
        facts = {
            kind: (str(kind), kind.section, kind.config_dir, kind.directory, kind.api,
                   kind.table, kind.label)
            for kind in JobKind
        }
        self.assertEqual(facts, {
            JobKind.JOB: ("job", "job", "job.d", "job", "job_exec", "jobs", "job"),
            JobKind.JOB_HTTP: ("job_http", "job.http", "job_http.d", "job_http", "job_http",
                               "http_jobs", "HTTP job"),
        })

    def test_jobs_know_their_kind(self) -> None:
        """A job's kind is the enum, and reads as its value in text."""
        self.assertIs(Job(name="a").kind, JobKind.JOB)
        self.assertIs(JobHttp(name="b").kind, JobKind.JOB_HTTP)
        self.assertEqual(f"{JobHttp(name='b').kind}/x", "job_http/x")
        self.assertEqual(JobKind("job_http"), JobKind.JOB_HTTP)
