"""A host that holds an upload's PostgreSQL lock and then loses power gives
the lock up within ``lock_dead_host_timeout`` seconds: the locker's
connections carry TCP keepalives, so PostgreSQL drops the silent session.

The holder runs the server's own locker on another host (a network namespace,
support.deadhost) whose traffic is then dropped, not closed; the process
itself keeps running, as the database cannot tell it from a dead one."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from dqrxfer.server.tus.errors import TusError
from dqrxfer.server.tus.pglocker import PostgresLocker
from support.deadhost import Host, missing_requirements, other_host
from support.postgres import ThrowawayCluster, server_programs

pytestmark = pytest.mark.postgres

#: Small, so that the test takes seconds; the default is a minute.
DEAD_HOST_TIMEOUT = 4
#: Slack for polling and a busy machine on top of the bound.
SLACK = 3.0
HOLDER = Path(__file__).parent / "support" / "lock_holder.py"
UPLOAD_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def host() -> Iterator[Host]:
    missing = missing_requirements()
    if missing:
        pytest.skip(missing)
    with other_host() as made:
        yield made


@pytest.fixture
def cluster(host: Host) -> Iterator[ThrowawayCluster]:
    """A cluster of our own: it must listen on the link to the other host."""
    programs = server_programs()
    if programs is None:
        pytest.skip("no initdb (Debian postgresql: bash ops/dev/bootstrap.sh --test)")
    started = ThrowawayCluster.start(programs, also_listen_on=(host.local_address,))
    yield started
    started.stop()


def holders_address(cluster: ThrowawayCluster) -> list[str]:
    """The client addresses of the sessions holding advisory locks."""
    engine = create_engine(cluster.url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT host(a.client_addr) FROM pg_locks l JOIN pg_stat_activity a"
                    " USING (pid) WHERE l.locktype = 'advisory' AND l.granted"
                )
            )
            return [row[0] for row in rows]
    finally:
        engine.dispose()


def try_lock(locker: PostgresLocker) -> bool:
    try:
        with locker.lock(UPLOAD_ID, timeout=0):
            return True
    except TusError as error:
        assert error.status == 423
        return False


def test_a_lock_held_by_a_host_that_lost_power_is_released_within_the_bound(
    host: Host, cluster: ThrowawayCluster, tmp_path: Path
) -> None:
    remote_url = cluster.url.replace("@127.0.0.1:", f"@{host.local_address}:")
    remote_url += "?connect_timeout=10"  # a link that does not work fails, not hangs
    config = tmp_path / "server.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f'database_url = "{remote_url}"\n'
        f"lock_dead_host_timeout = {DEAD_HOST_TIMEOUT}\n"
    )
    holder = subprocess.Popen(
        host.command(sys.executable, str(HOLDER), str(config), UPLOAD_ID),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    contender = PostgresLocker(create_engine(cluster.url), dead_host_timeout=DEAD_HOST_TIMEOUT)
    try:
        assert holder.stdout is not None and holder.stderr is not None
        line = holder.stdout.readline()
        assert line == "held\n", holder.stderr.read()
        # The lock is held across the link, and it excludes us.
        assert holders_address(cluster) == [host.address]
        assert not try_lock(contender)

        host.cut_power()
        cut = time.monotonic()
        deadline = cut + DEAD_HOST_TIMEOUT + SLACK
        while not try_lock(contender):
            assert time.monotonic() < deadline, (
                f"the dead host still holds the lock {DEAD_HOST_TIMEOUT + SLACK} s after it "
                f"went silent (lock_dead_host_timeout = {DEAD_HOST_TIMEOUT}):\n{cluster.log()}"
            )
            time.sleep(0.1)  # poll interval, not a synchronisation
        released_after = time.monotonic() - cut
        # Released by the database giving up on the silent peer: the holder
        # process is still running and never let go.
        assert holder.poll() is None
        assert holders_address(cluster) == []
        print(f"released {released_after:.1f} s after the power cut")
    finally:
        contender.dispose()
        holder.kill()
        holder.communicate()


def test_the_locker_keeps_the_urls_own_options_beside_the_keepalives(postgres_url: str) -> None:
    locker = PostgresLocker(create_engine(postgres_url), dead_host_timeout=60)
    try:
        with locker.engine.connect() as connection:
            shown = {
                name: connection.execute(text(f"SHOW {name}")).scalar()
                for name in ("search_path", "tcp_user_timeout")
            }
    finally:
        locker.dispose()
    # The fixture's URL sets a schema of its own through options.
    assert shown["search_path"] is not None and shown["search_path"].startswith("t_")
    assert shown["tcp_user_timeout"] == "60000"  # milliseconds
