"""
What the benchmark scripts share: a nearest-rank percentile, plain-text
tables, and waiting for a run's final log to appear.
"""

from __future__ import annotations

import math
import os
import time


def wait_for_file(path: str, seconds: float) -> bool:
    """Poll for C{path} every 0.5 ms, for up to C{seconds}; whether it came."""
    for _ in range(int(seconds / 0.0005)):
        if os.path.exists(path):
            return True
        time.sleep(0.0005)
    return False


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def table(rows: list[tuple], headers: tuple) -> str:
    """Left-aligned first column, right-aligned numbers, a rule under the headers."""
    cells = [tuple(str(c) for c in headers)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for n, row in enumerate(cells):
        out.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=False))))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
