"""
What the job and run pages compute from a job's run records (L{karajo.web.views})
and draws (L{karajo.web.chart.history_chart}), and the curl template
(L{karajo.web.pages.curl_template}): pure, from fakes of a job's service.
"""

from __future__ import annotations

import datetime
from datetime import timedelta

from twisted.trial.unittest import SynchronousTestCase

from karajo.kinds import JobKind
from karajo.model import Job
from karajo.runrecord import RunRecord
from karajo.web.chart import history_chart
from karajo.web.pages import curl_template
from karajo.web.views import HISTORY_PAGE, JobView, Views, retry_chain


class FakeRunner:
    def __init__(self, job: Job, records: list[RunRecord]) -> None:
        self.job = job
        self.status = "success"
        self.last_run = None
        self.store = None
        self._records = records

    def records(self) -> list[RunRecord]:
        return list(self._records)


class FakeService:
    def __init__(self, job: Job, records: list[RunRecord], next_run: float | None) -> None:
        self.runner = FakeRunner(job, records)
        self.next_run = next_run


def records(statuses: str, job_id: str = "j") -> list[RunRecord]:
    """One record per letter (s success, f failed, c canceled, r running), an hour apart."""
    names = {"s": "success", "f": "failed", "c": "canceled", "r": "running"}
    return [RunRecord(job_id, n, names[letter], 1000.0 * n, None if letter == "r" else 1000.0 * n + n)
            for n, letter in enumerate(statuses, 1)]


def view(job: Job, statuses: str = "", next_run: float | None = None) -> JobView:
    svc = FakeService(job, records(statuses, job.id), next_run)
    return JobView(Views(None), JobKind.JOB, svc)


class PagesTests(SynchronousTestCase):
    def test_pages_newest_first(self) -> None:
        v = view(Job(name="j"), "s" * 120)
        self.assertEqual(v.pages(), 3)
        self.assertEqual([r.counter for r in v.page(1)], list(range(120, 70, -1)))
        self.assertEqual([r.counter for r in v.page(3)], list(range(20, 0, -1)))
        self.assertEqual(v.page(4), [])
        self.assertEqual(HISTORY_PAGE, 50)

    def test_no_runs_is_one_empty_page(self) -> None:
        v = view(Job(name="j"))
        self.assertEqual((v.pages(), v.page(1)), (1, []))

    def test_page_size_boundary(self) -> None:
        self.assertEqual(view(Job(name="j"), "s" * 50).pages(), 1)
        self.assertEqual(view(Job(name="j"), "s" * 51).pages(), 2)


class SuccessRateTests(SynchronousTestCase):
    def test_counts_the_newest_finished_runs(self) -> None:
        # the running run has no outcome yet; the 3 newest finished are f, s, c
        v = view(Job(name="j"), "ssssfscr")
        self.assertEqual(v.success_rate(3), (1, 3))
        self.assertEqual(v.success_rate(100), (5, 7))

    def test_none_finished(self) -> None:
        self.assertEqual(view(Job(name="j"), "r").success_rate(10), (0, 0))

    def test_last_failure(self) -> None:
        self.assertEqual(view(Job(name="j"), "sfsfs").last_failure, 4000.0)
        self.assertIsNone(view(Job(name="j"), "ssc").last_failure)


class NextFiresTests(SynchronousTestCase):
    def test_schedule_from_the_timers_next_run(self) -> None:
        start = datetime.datetime(2026, 1, 1, 10, 15, tzinfo=datetime.UTC).timestamp()
        v = view(Job(name="j", schedule="hourly@15"), next_run=start)
        self.assertEqual(v.next_fires(5, 0.0), [start + 3600 * k for k in range(5)])

    def test_paused_schedule_from_now(self) -> None:
        now = datetime.datetime(2026, 1, 1, 10, 20, tzinfo=datetime.UTC).timestamp()
        v = view(Job(name="j", schedule="daily@02:30", timezone="Europe/Paris"))
        first = datetime.datetime(2026, 1, 2, 1, 30, tzinfo=datetime.UTC).timestamp()
        self.assertEqual(v.next_fires(3, now), [first, first + 86400, first + 2 * 86400])

    def test_interval_steps(self) -> None:
        v = view(Job(name="j", interval=timedelta(minutes=30)), next_run=5000.0)
        self.assertEqual(v.next_fires(3, 0.0), [5000.0, 6800.0, 8600.0])
        self.assertEqual(view(Job(name="j", interval=timedelta(minutes=30))).next_fires(3, 0.0), [])

    def test_no_timer(self) -> None:
        self.assertEqual(view(Job(name="j")).next_fires(5, 0.0), [])


class HistoryChartTests(SynchronousTestCase):
    def test_bars_oldest_left_failures_marked(self) -> None:
        runs = view(Job(name="j"), "sfscr").page(1)
        svg = history_chart(runs)
        rects = [c for c in svg.children if getattr(c, "tagName", "") == "rect"]
        marks = [c for c in svg.children if getattr(c, "tagName", "") == "path"]
        self.assertEqual([r.attributes["data-counter"] for r in rects], ["1", "2", "3", "4", "5"])
        self.assertEqual([m.attributes["class"] for m in marks], ["mark st-failed", "mark st-canceled"])
        # the longest finished run (#4, 4 s) fills the chart's room (120 - 1 - 12)
        self.assertEqual(rects[3].attributes["height"], "107.0")
        self.assertEqual(rects[0].attributes["height"], "26.8")
        self.assertIn("2 failed or canceled", svg.attributes["aria-label"])


class CurlTemplateTests(SynchronousTestCase):
    def test_hmac(self) -> None:
        text = curl_template(Job(name="a", path="/a", secret="hunter2", header_sign="X-Sig"))
        assert text is not None
        self.assertNotIn("hunter2", text)
        self.assertIn('-hmac "$SECRET"', text)
        self.assertIn('curl -H "X-Sig: $SIGN" --json "$PAYLOAD" "$KARAJO_URL/karajo/api/job_exec/run/a"',
                      text)

    def test_github_and_sourcehut(self) -> None:
        text = curl_template(Job(name="a", path="/a", auth_kind="github"))
        assert text is not None
        self.assertIn('"X-Hub-Signature-256: sha256=$SIGN"', text)
        self.assertIsNone(curl_template(Job(name="a", path="/a", auth_kind="sourcehut")))


def run(counter: int, status: str, started: float | None, attempt: int = 1) -> RunRecord:
    trigger = "retry" if attempt > 1 else "webhook"
    return RunRecord("j", counter, status, started,
                     None if status == "running" else (started or 0) + 5, trigger, attempt)


def chain_of(records: list[RunRecord], counter: int) -> list[int]:
    return [r.counter for r in retry_chain(records, counter)]


class RetryChainTests(SynchronousTestCase):
    """A failure chain is derived from the records: start order, attempts counting up."""

    def test_consecutive_attempts(self) -> None:
        rs = [run(1, "success", 100), run(2, "failed", 200), run(3, "failed", 300, 2),
              run(4, "success", 400, 3), run(5, "failed", 500)]
        for counter in (2, 3, 4):
            self.assertEqual(chain_of(rs, counter), [2, 3, 4], counter)
        self.assertEqual(chain_of(rs, 1), [1])
        self.assertEqual(chain_of(rs, 5), [5])  # failed, no retry (yet)
        self.assertEqual(chain_of(rs, 99), [])

    def test_start_order_not_counter_order(self) -> None:
        """Run 3 was queued during run 2's retry wait: the retry took counter 4 and ran first."""
        rs = [run(2, "failed", 200), run(3, "failed", 400), run(4, "failed", 300, 2),
              run(5, "success", 500, 2)]
        self.assertEqual(chain_of(rs, 2), [2, 4])
        self.assertEqual(chain_of(rs, 4), [2, 4])
        self.assertEqual(chain_of(rs, 3), [3, 5])
        self.assertEqual(chain_of(rs, 5), [3, 5])

    def test_a_new_first_attempt_ends_a_chain(self) -> None:
        rs = [run(1, "failed", 100), run(2, "failed", 200, 2), run(3, "failed", 300),
              run(4, "success", 400, 2)]
        self.assertEqual(chain_of(rs, 2), [1, 2])
        self.assertEqual(chain_of(rs, 3), [3, 4])

    def test_pruned_first_attempt_and_unknown_start(self) -> None:
        rs = [run(7, "failed", 700, 2), run(8, "success", 800, 3), run(9, "canceled", None)]
        self.assertEqual(chain_of(rs, 8), [7, 8])
        self.assertEqual(chain_of(rs, 9), [9])

    def test_running_retry(self) -> None:
        rs = [run(1, "failed", 100), run(2, "running", 200, 2)]
        self.assertEqual(chain_of(rs, 1), [1, 2])
