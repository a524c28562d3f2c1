"""Plain-text tables for the benchmark scripts' figures (one copy for all)."""

from __future__ import annotations


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
