"""TCP keepalives that bound how long a silent PostgreSQL peer keeps its
session (and the advisory locks of :mod:`.pglocker` it holds).

Apart from :mod:`.pglocker` so that the configuration loader can check
``lock_dead_host_timeout`` without importing SQLAlchemy.
"""

from __future__ import annotations

#: Seconds after which a silent lock holder's locks are released, by default.
DEFAULT_DEAD_HOST_TIMEOUT = 60

#: Unanswered keepalive probes after which a connection counts as dead.
KEEPALIVE_PROBES = 3

#: The smallest ``dead_host_timeout``: one second of idleness, then
#: KEEPALIVE_PROBES probes a second apart (keepalive times are whole seconds).
MIN_DEAD_HOST_TIMEOUT = 1 + KEEPALIVE_PROBES


def keepalive_connect_args(dead_host_timeout: int, options: str = "") -> dict[str, object]:
    """libpq connection parameters under which either end drops the
    connection once the other has been silent for ``dead_host_timeout``
    seconds: idle time, then KEEPALIVE_PROBES unanswered probes, add up to it.
    The server's side is what releases a dead holder's locks; it is set with
    ``-c`` settings appended to the connection's own ``options``.
    ``tcp_user_timeout`` bounds the same wait when data is in flight (unacknowledged
    data is retransmitted, not probed)."""
    if dead_host_timeout < MIN_DEAD_HOST_TIMEOUT:
        raise ValueError(f"dead_host_timeout must be at least {MIN_DEAD_HOST_TIMEOUT} seconds")
    interval = max(1, dead_host_timeout // (2 * KEEPALIVE_PROBES))
    idle = dead_host_timeout - KEEPALIVE_PROBES * interval
    server = (
        f"-c tcp_keepalives_idle={idle} -c tcp_keepalives_interval={interval}"
        f" -c tcp_keepalives_count={KEEPALIVE_PROBES}"
        f" -c tcp_user_timeout={dead_host_timeout * 1000}"
    )
    return {
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": interval,
        "keepalives_count": KEEPALIVE_PROBES,
        "tcp_user_timeout": dead_host_timeout * 1000,
        "options": f"{options} {server}".strip(),
    }
