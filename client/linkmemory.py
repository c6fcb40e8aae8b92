"""How many streams a large payload goes in by default (``--parallel auto``),
learnt from the uploads to the same server.

A long link often caps each TCP connection well below what the site's link
carries: then N partial uploads at once go about N times as fast.  But when
one connection already carries the link's rate, more streams only add the
server's work of joining them after the last byte (about half a second for
100 MiB here), so the client does not guess: it measures.  After every
payload sent as partial uploads it remembers, per server URL, the rate that
upload achieved (the payload's bytes over the time from creating its partial
uploads until the final one was published: the joining is in it) for the
number of streams it used, and the link's round trip.  The next large
payload to that server over a long link climbs the ladder 1, 2, 4: it uses
twice the streams of the largest count whose rate beat the count below it
by :data:`GAIN`, trying the next count once when nothing is known of it
yet.  So the first large upload to a server goes in one stream, the second
in two, and from the third on the count that paid (four on a link that caps
each connection; one on a link that does not).

The measurements are kept in ``links.json`` beside the remembered
capabilities (written atomically) for :data:`REMEMBERED_FOR` seconds each;
a file that cannot be read or written is no error (one stream is sent).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from .jsonfile import read_servers, write_servers
from .pieces import LONG_ROUND_TRIP
from .resume import default_directory

log = logging.getLogger("dqr-xfer")

#: How long (seconds) a measured rate is used: links change, slowly.
REMEMBERED_FOR = 24 * 3600.0
FORMAT = 1
#: The stream counts tried, in order (the most: the last).
LADDER = (1, 2, 4)
#: More streams are kept only if they raised the upload's rate by this factor:
#: twice the streams on a link that caps each connection come close to twice
#: the rate; on a link that does not, the rate stays put or falls.
GAIN = 1.3


def default_path() -> Path:
    return default_directory().parent / "links.json"


@dataclass
class LinkRecord:
    """What uploads to one server measured: the round trip (seconds, the
    quickest any of them saw) and, per stream count, the rate of the latest
    upload with that many streams (payload bytes per second)."""

    round_trip: float | None = None
    rates: dict[int, float] = field(default_factory=dict)

    def streams(self) -> int:
        """The stream count for the next large payload (see the module's
        docstring): one on a short or unknown link."""
        if not self.round_trip or self.round_trip < LONG_ROUND_TRIP or 1 not in self.rates:
            return 1
        chosen = LADDER[0]
        for more in LADDER[1:]:
            rate = self.rates.get(more)
            if rate is None:
                return more  # not tried yet: try it once
            if rate < GAIN * self.rates[chosen]:
                break
            chosen = more
        return chosen


class RememberedLinks:
    """:class:`LinkRecord` per endpoint URL, in one JSON file."""

    def __init__(self, path: Path | None = None, max_age: float = REMEMBERED_FOR) -> None:
        self.path = path or default_path()
        self.max_age = max_age

    def get(self, endpoint: str) -> LinkRecord | None:
        entry = read_servers(self.path, FORMAT).get(endpoint)
        if not isinstance(entry, dict):
            return None
        now = time.time()
        try:
            round_trip = entry.get("round_trip")
            rates = {
                int(count): float(rate)
                for count, (rate, when) in dict(entry.get("rates", {})).items()
                if 0 <= now - float(when) < self.max_age and float(rate) > 0
            }
            return LinkRecord(None if round_trip is None else float(round_trip), rates)
        except (TypeError, ValueError):
            log.debug("remembered link to %s not understood: %.200s", endpoint, entry)
            return None

    def _recent(self, entry: object, now: float) -> bool:
        """Whether ``entry`` holds a rate measured within ``max_age`` (older
        entries are dropped when the file is written)."""
        try:
            rates = dict(entry.get("rates", {})) if isinstance(entry, dict) else {}
            return any(now - float(when) < self.max_age for _, when in rates.values())
        except (TypeError, ValueError):
            return False

    def saw(self, endpoint: str, streams: int, rate: float, round_trip: float | None) -> None:
        """An upload to ``endpoint`` in ``streams`` streams went at ``rate``
        bytes per second, over a link of ``round_trip`` seconds."""
        now = time.time()
        servers = {
            url: entry
            for url, entry in read_servers(self.path, FORMAT).items()
            if url == endpoint or self._recent(entry, now)
        }
        entry = servers.get(endpoint)
        rates = dict(entry.get("rates", {})) if isinstance(entry, dict) else {}
        rates[str(streams)] = [rate, now]
        known = entry.get("round_trip") if isinstance(entry, dict) else None
        if isinstance(known, (int, float)) and known > 0:
            # The quickest answer of all runs: a busy server can slow the
            # answers of one run, never speed them beyond the link.
            round_trip = known if round_trip is None else min(known, round_trip)
        servers[endpoint] = {"round_trip": round_trip, "rates": rates}
        try:
            write_servers(self.path, FORMAT, servers)
        except OSError as error:
            log.debug("link to %s not remembered: %s", endpoint, error)
        log.debug(
            "%s: %d stream(s) carried %.1f MB/s (remembered for the stream count)",
            endpoint,
            streams,
            rate / 1e6,
        )
