"""How the client writes sizes and rates: IEC binary units, everywhere.

Sizes are bytes below 1 KiB (``512 B``), else KiB, MiB, GiB or TiB with one
decimal (``76.3 MiB``); rates are MiB/s with one decimal (``41.3 MiB/s``),
whatever their size, so that rates in a log line up.  The web pages follow
the same convention.
"""

from __future__ import annotations

KiB = 1024
MiB = 1024 * KiB

_UNITS = ("KiB", "MiB", "GiB", "TiB")


def format_size(count: float) -> str:
    """``count`` bytes as ``5 B``, ``1.0 KiB``, ``76.3 MiB``, ``1.2 GiB``..."""
    if abs(count) < KiB:
        return f"{count:.0f} B"
    value = float(count)
    for unit in _UNITS:
        value /= KiB
        if abs(value) < KiB or unit == _UNITS[-1]:
            break
    return f"{value:.1f} {unit}"


def format_rate(bytes_per_second: float) -> str:
    """A transfer rate, always in MiB/s (``41.3 MiB/s``, ``0.4 MiB/s``;
    ``0.012 MiB/s`` below a tenth, so that a slow link does not show 0)."""
    value = bytes_per_second / MiB
    return f"{value:.1f} MiB/s" if abs(value) >= 0.1 or value == 0 else f"{value:.3f} MiB/s"
