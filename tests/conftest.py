"""Shared fixtures: live servers, databases, the CLIs; skips that fail CI."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from support.inprocess import InProcessServer, in_process_server
from support.kerberos import Realm, kdc_available
from support.live import NO_CONCATENATION, REQUEST_LOG, LiveServer
from support.postgres import CONFIGURED_URL, ThrowawayCluster, reachable, server_programs

#: In CI a skipped test marked postgres, kerberos, browser, frontend or diskfull fails;
#: under pytest-xdist a module's tests that share its fixtures stay in one worker.
pytest_plugins = ["support.required", "support.parallel", "pytester"]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def front_end_data_dir() -> Iterator[Path]:
    """A data directory a front end's workers (``www-data``) can walk down
    to: outside pytest's temporary root, which pytest keeps private
    (``0700``) and makes private again whenever another pytest run starts."""
    root = Path(tempfile.mkdtemp(prefix="dqrxfer-front-end-"))
    root.chmod(0o711)
    path = root / "data"
    path.mkdir()
    yield path
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def live_server(data_dir: Path) -> Iterator[LiveServer]:
    server = LiveServer(data_dir).start()
    yield server
    server.discard()


@pytest.fixture
def logged_server(data_dir: Path) -> Iterator[LiveServer]:
    """The real server, each request in its access log with its length and tus
    offsets (support.request_log)."""
    server = LiveServer(data_dir, extra_args=["--gunicorn-config", str(REQUEST_LOG)]).start()
    yield server
    server.discard()


@pytest.fixture
def app_server(data_dir: Path) -> Iterator[InProcessServer]:
    """The fast tier: the app of ``serve --data-dir`` in this process, reached
    with ``requests`` through Flask's test client (support.inprocess)."""
    with in_process_server(data_dir) as server:
        yield server


@pytest.fixture
def plain_server(data_dir: Path) -> Iterator[LiveServer]:
    """The real server, its answers without the concatenation extensions."""
    server = LiveServer(data_dir, extra_args=["--gunicorn-config", str(NO_CONCATENATION)]).start()
    yield server
    server.discard()


@pytest.fixture(scope="session")
def postgres_base_url() -> Iterator[str]:
    """The configured PostgreSQL server (``DQRXFER_TEST_POSTGRES``) or, when
    nothing answers there, a throwaway cluster of our own for the session."""
    if reachable(CONFIGURED_URL):
        yield CONFIGURED_URL
        return
    programs = server_programs()
    if programs is None:
        pytest.skip(
            f"PostgreSQL not reachable at {CONFIGURED_URL} and no initdb to start one "
            "(Debian package postgresql: bash ops/dev/bootstrap.sh --test)"
        )
    cluster = ThrowawayCluster.start(programs)
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres_base_url: str) -> Iterator[str]:
    """A URL whose search_path is a fresh schema, dropped afterwards."""
    yield from _fresh_schema(postgres_base_url)


@pytest.fixture(scope="module")
def module_postgres_url(postgres_base_url: str) -> Iterator[str]:
    """Like ``postgres_url``, for a server shared by a module's tests."""
    yield from _fresh_schema(postgres_base_url)


def _fresh_schema(postgres_base_url: str) -> Iterator[str]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_base_url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in postgres_base_url else "?"
    yield f"{postgres_base_url}{separator}options=-csearch_path%3D{schema}"
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(scope="session")
def kerberos() -> Iterator[Realm]:
    """A real MIT Kerberos realm (KDC, service and user principals) for the session.

    This process gets the realm's krb5.conf so that in-process clients find
    the KDC; tickets are always named explicitly (never the default cache).
    """
    if not kdc_available():
        pytest.skip("MIT Kerberos KDC not installed (bash ops/dev/bootstrap.sh --test)")
    realm = Realm.start()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KRB5_CONFIG", realm.env["KRB5_CONFIG"])
        patch.setenv("KRB5RCACHEDIR", realm.env["KRB5RCACHEDIR"])
        patch.delenv("KRB5_CLIENT_KTNAME", raising=False)
        patch.setenv("KRB5CCNAME", f"FILE:{realm.directory}/no-default-cache")
        yield realm
    realm.stop()


@pytest.fixture
def client_env(tmp_path: Path) -> dict[str, str]:
    """A private cache (resume store) and config directory for the client."""
    return {
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "DQRXFER_SERVER": "",
    }


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 MiB of random bytes, shared by a module's transfer tests."""
    path = tmp_path_factory.mktemp("payload") / "big.bin"
    with open(path, "wb") as handle:
        for _ in range(64):
            handle.write(os.urandom(1024 * 1024))
    return path
