"""
A job's run policies in words (docs/configuration.md, "Run policies"):
one home for the wording that C{karajo check} prints under a job and the
job page of the web UI shows, so both say the same thing.

Pure: it reads a job's values and formats durations, nothing else.
"""

from __future__ import annotations

import re
from typing import Any

from karajo.duration import format_duration

__all__ = ["OVERLAP_WORDS", "policy_rows", "short_duration"]

#: At most this many retry waits are listed one by one.
_RETRY_WAITS_SHOWN = 5

#: what each C{overlap} value does, in words
OVERLAP_WORDS = {
    "queue": "a trigger while running is queued (one; more are refused)",
    "skip": "a trigger while running is refused, a timer fire skipped",
    "replace": "a trigger while running replaces the run",
}


def short_duration(duration: Any) -> str:
    """C{1m}, C{1h}, C{1m30s}: a duration without its trailing zero units."""
    text = format_duration(duration)
    text = re.sub(r"(?<=[hm])0s$", "", text)
    return re.sub(r"(?<=h)0m$", "", text)


def policy_rows(job: Any) -> list[tuple[str, str]]:
    """
    A job's run policies as C{(key, words)} rows, keyed by the config key
    each describes (C{retry}, C{overlap}, C{catch_up}, C{random_delay},
    C{timeout}, C{on_success}, C{on_failed}); a policy left at its default
    that does nothing (no retry, no catch-up, ...) has no row, except
    C{overlap}, which always applies.
    """
    rows: list[tuple[str, str]] = []
    if job.retry:
        waits = [short_duration(job.retry_wait(k)) for k in range(1, job.retry + 1)]
        if len(waits) > _RETRY_WAITS_SHOWN:
            waits = waits[:_RETRY_WAITS_SHOWN - 1] + ["…", waits[-1]]
        times = "once" if job.retry == 1 else f"{job.retry} times"
        after = f"{waits[0]} after the failed run" if job.retry == 1 else (
            " then ".join(waits) + " apart")
        rows.append(("retry", f"retries {times}, {after}; never after a cancel"))
    rows.append(("overlap", OVERLAP_WORDS.get(job.overlap, job.overlap)))
    if job.catch_up:
        rows.append(("catch_up", f"a timer slot missed no more than {short_duration(job.catch_up)}"
                                 " ago runs once at start"))
    if job.random_delay:
        rows.append(("random_delay",
                     f"each timer fire waits a random time below {short_duration(job.random_delay)}"))
    if job.timeout is not None:
        rows.append(("timeout", short_duration(job.timeout)))
    for attr, when in (("on_success", "succeeds"), ("on_failed", "fails")):
        targets = getattr(job, attr, ())
        if targets:
            rows.append((attr, f"when a run {when} (after its last retry), "
                               f"triggers {', '.join(targets)}"))
    return rows
