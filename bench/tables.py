"""Results as Markdown tables, ready for docs/performance.md."""

from __future__ import annotations


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    """A Markdown table of ``rows`` under ``header``, columns padded to line up."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    return "\n".join([line, rule, *body])
