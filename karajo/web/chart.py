"""
The chart of a job's last runs on its card: an inline SVG, one bar per run
(oldest left), its height the duration relative to the longest, its colour
the outcome.

The page's script redraws it as runs come and go; it reads the geometry
below from the chart's C{data-*} attributes rather than keeping a copy.
"""

from __future__ import annotations

from twisted.web.template import Tag

from karajo.web.views import FINAL_STATUSES, RunView
from karajo.web.words import human_duration

__all__ = ["CHART_RUNS", "chart", "history_chart", "run_times"]

#: bars in a chart
CHART_RUNS = 20
_SVG_W, _SVG_H, _BAR_W, _BAR_GAP = 200, 40, 8, 2



def _bar_label(run: RunView) -> str:
    """A bar's tooltip: the run, its status and, when known, its duration."""
    label = f"#{run.counter} {run.status}"
    if run.duration is not None:
        label += f", {human_duration(run.duration)}"
    return label

def run_times(run: RunView) -> dict[str, str]:
    """
    A run's counter and known times (whole seconds) as C{data-*}
    attributes, for the page's script: a bar of the chart, a row of the
    job page's run table.
    """
    return {
        "data-counter": str(run.counter),
        "data-duration": "" if run.duration is None else f"{run.duration:.0f}",
        "data-start": "" if run.start is None else f"{run.start:.0f}",
    }


def chart(runs: list[RunView]) -> Tag:
    """The chart of C{runs} (newest first, as L{karajo.web.views.JobView.runs} gives them)."""
    runs = list(reversed(runs))
    durations = [r.duration for r in runs if r.duration is not None]
    longest = max(durations) if durations else 0.0
    svg = Tag("svg", attributes={
        "class": "chart", "viewBox": f"0 0 {_SVG_W} {_SVG_H}", "width": str(_SVG_W),
        "height": str(_SVG_H), "role": "img",
        "aria-label": "last runs: bar height is the duration, colour the outcome",
        "xmlns": "http://www.w3.org/2000/svg",
        # the geometry, for the page's script to redraw the same way
        "data-height": str(_SVG_H), "data-bar-width": str(_BAR_W),
        "data-bar-gap": str(_BAR_GAP), "data-runs": str(CHART_RUNS),
    })
    svg.children.append(Tag("line", attributes={
        "class": "axis", "x1": "0", "y1": str(_SVG_H - 0.5), "x2": str(_SVG_W),
        "y2": str(_SVG_H - 0.5),
    }))
    for index, run in enumerate(runs[-CHART_RUNS:]):
        duration = run.duration
        if duration is not None and longest > 0:
            height = max(3.0, (_SVG_H - 2) * duration / longest)
        elif run.status in FINAL_STATUSES and duration is not None:
            height = 3.0
        else:
            height = _SVG_H - 2 if run.status == "running" else 6.0
        x = index * (_BAR_W + _BAR_GAP)
        label = _bar_label(run)
        rect = Tag("rect", attributes={
            "class": f"bar st-{run.status}", "x": str(x), "y": f"{_SVG_H - 1 - height:.1f}",
            "width": str(_BAR_W), "height": f"{height:.1f}",
        })
        for name, value in run_times(run).items():
            rect.attributes[name] = value
        rect.children.append(Tag("title")(label))
        svg.children.append(rect)
    return svg


#: the history chart's geometry: its height, each bar's width and gap
_HIST_H, _HIST_BAR, _HIST_GAP = 120, 10, 2


def history_chart(runs: list[RunView]) -> Tag:
    """
    The job page's chart of C{runs} (newest first, one page of the
    history): a bar per run, oldest left, its height the duration relative
    to the longest; a failed or canceled run is drawn in its colour and
    marked with a cross above its bar, so failures stand out without
    colour too.
    """
    runs = list(reversed(runs))
    durations = [r.duration for r in runs if r.duration is not None]
    longest = max(durations) if durations else 0.0
    width = max(1, len(runs)) * (_HIST_BAR + _HIST_GAP)
    failures = sum(1 for r in runs if r.status in ("failed", "canceled"))
    top = 12  # room for the failure marks
    svg = Tag("svg", attributes={
        "class": "history-chart", "viewBox": f"0 0 {width} {_HIST_H}",
        "preserveAspectRatio": "none", "role": "img",
        "aria-label": f"durations of these {len(runs)} runs, oldest left;"
                      f" {failures} failed or canceled, marked with a cross",
        "xmlns": "http://www.w3.org/2000/svg",
    })
    svg.children.append(Tag("line", attributes={
        "class": "axis", "x1": "0", "y1": str(_HIST_H - 0.5), "x2": str(width),
        "y2": str(_HIST_H - 0.5),
    }))
    room = _HIST_H - 1 - top
    for index, run in enumerate(runs):
        duration = run.duration
        if duration is not None and longest > 0:
            height = max(2.0, room * duration / longest)
        else:
            height = 2.0 if duration is not None else 4.0
        x = index * (_HIST_BAR + _HIST_GAP)
        label = _bar_label(run)
        rect = Tag("rect", attributes={
            "class": f"bar st-{run.status}", "x": str(x), "y": f"{_HIST_H - 1 - height:.1f}",
            "width": str(_HIST_BAR), "height": f"{height:.1f}", "data-counter": str(run.counter),
        })
        rect.children.append(Tag("title")(label))
        svg.children.append(rect)
        if run.status in ("failed", "canceled"):
            y = _HIST_H - 1 - height - 8
            cx = x + _HIST_BAR / 2
            svg.children.append(Tag("path", attributes={
                "class": f"mark st-{run.status}",
                "d": f"M{cx - 3:.1f} {y - 3:.1f}L{cx + 3:.1f} {y + 3:.1f}"
                     f"M{cx + 3:.1f} {y - 3:.1f}L{cx - 3:.1f} {y + 3:.1f}",
            }))
    return svg
