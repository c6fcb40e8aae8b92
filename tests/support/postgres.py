"""PostgreSQL for the tests: the configured server, or a throwaway cluster.

``DQRXFER_TEST_POSTGRES`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``)
names a server to use. When nothing answers there, the suite starts its own
cluster from Debian's ``postgresql`` package (``initdb`` + ``pg_ctl``) in a
temporary directory on a free loopback port and removes it at the end, so the
PostgreSQL tests run on any machine set up by ``ops/dev/bootstrap.sh --test``.
PostgreSQL refuses to run as root (as CI does), so the cluster then runs as the
``postgres`` system user (made by Debian's package) or ``nobody``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text

from .live import free_port

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CONFIGURED_URL = os.environ.get("DQRXFER_TEST_POSTGRES", DEFAULT_URL)
DATABASE = "test"


def reachable(url: str) -> bool:
    """Whether a server answers ``select 1`` at ``url``."""
    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("select 1"))
        return True
    except Exception:
        return False
    finally:
        engine.dispose()


def server_programs() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: Debian keeps them per
    major version under /usr/lib/postgresql; elsewhere they are on PATH."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def cluster_owner() -> pwd.struct_passwd | None:
    """The unprivileged user to run the cluster as; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a postgres nor a nobody user exists")


@dataclass
class ThrowawayCluster:
    """A PostgreSQL cluster of our own: trust authentication, loopback only."""

    programs: Path
    directory: Path
    port: int
    owner: pwd.struct_passwd | None

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{DATABASE}"

    @classmethod
    def start(cls, programs: Path, also_listen_on: tuple[str, ...] = ()) -> ThrowawayCluster:
        """A running cluster on loopback and on the local addresses
        ``also_listen_on``, trusting connections from their subnets."""
        directory = Path(tempfile.mkdtemp(prefix="dqrxfer-postgres-"))
        owner = cluster_owner()
        if owner is not None:
            os.chown(directory, owner.pw_uid, owner.pw_gid)
        cluster = cls(programs, directory, free_port(), owner)
        listen = ",".join(("127.0.0.1", *also_listen_on))
        try:
            cluster._initdb()
            if also_listen_on:
                with open(cluster.data / "pg_hba.conf", "a") as hba:
                    hba.write("host all all samenet trust\n")
            cluster._pg_ctl(
                "start",
                "-w",
                "-t",
                "60",
                "-l",
                str(directory / "server.log"),
                "-o",
                (
                    f"-c listen_addresses={listen} -p {cluster.port} -k {directory}"
                    # A cluster that lives for one test run: durability is not needed.
                    " -c fsync=off -c full_page_writes=off"
                ),
            )
            admin = create_engine(
                cluster.url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT"
            )
            with admin.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{DATABASE}"'))
            admin.dispose()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def log(self) -> str:
        path = self.directory / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._pg_ctl("stop", "-w", "-m", "fast", check=False)
        shutil.rmtree(self.directory, ignore_errors=True)

    def _initdb(self) -> None:
        self._run(
            str(self.programs / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )

    def _pg_ctl(self, *args: str, check: bool = True) -> None:
        self._run(str(self.programs / "pg_ctl"), "-D", str(self.data), *args, check=check)

    def _run(self, *command: str, check: bool = True) -> None:
        owner = self.owner
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            cwd=self.directory,
            env={**os.environ, "HOME": str(self.directory)},
            timeout=120,
            check=False,
            # As the unprivileged owner, with none of root's groups.
            user=owner.pw_uid if owner else None,
            group=owner.pw_gid if owner else None,
            extra_groups=[] if owner else None,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}{self.log()}"
            )
