"""The deployment kit run whole: gunicorn (``serve --auth remote-user
--trusted-proxy 127.0.0.1`` with ops/gunicorn.conf.py) behind Debian's Apache
with ops/apache/dqrxfer.conf, against the test realm.  Used by the
tests/test_ops_*.py files and by bench/frontend_bench.py."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from .kerberos import LLO_ROBOT, USER, Realm
from .live import LiveServer
from .proxies import NEEDS_APACHE, OPS, Apache, apache_available

__all__ = ["NEEDS_APACHE", "Deployment", "apache_available", "deployed"]


def server_config(data_dir: Path) -> str:
    """People and the LLO robot may upload to O4; the robot for site llo only."""
    return (
        f'data_dir = "{data_dir}"\n'
        "auto_upgrade = true\n"
        "[auth]\n"
        "[[auth.rules]]\n"
        'name = "people"\n'
        f'principals = ["{USER}"]\n'
        'projects = ["O4"]\n'
        "[[auth.rules]]\n"
        'name = "LLO robot"\n'
        f'principals = ["{LLO_ROBOT}"]\n'
        'projects = ["O4"]\n'
        'sites = ["llo"]\n'
    )


@dataclass
class Deployment:
    server: LiveServer
    apache: Apache
    realm: Realm

    @property
    def url(self) -> str:
        return self.apache.url

    def session(self, ccache: Path | None = None, keytab: Path | None = None) -> requests.Session:
        from dqrxfer.auth import make_auth

        session = requests.Session()
        session.verify = str(self.apache.cert)
        session.auth = make_auth(ccache=ccache, keytab=keytab, required=True)
        return session


@contextmanager
def deployed(
    realm: Realm,
    data_dir: Path,
    *,
    workers: int = 2,
    apache_config: Sequence[str] = (),
    site_replacements: dict[str, str] | None = None,
) -> Iterator[Deployment]:
    """Start gunicorn and Apache; stop both (and remove Apache's root) on exit.

    ``apache_config`` goes into Apache's main configuration; ``site_replacements``
    change the shipped virtual host (see :class:`~support.proxies.Apache`)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir.parent / "server.toml"
    config.write_text(server_config(data_dir))
    server = LiveServer(
        data_dir,
        config=config,
        workers=workers,
        extra_args=[
            "--gunicorn-config",
            str(OPS / "gunicorn.conf.py"),
            "--auth",
            "remote-user",
            "--trusted-proxy",
            "127.0.0.1",
        ],
    )
    apache: Apache | None = None
    try:
        server.start()
        apache = Apache(
            backend_port=server.port,
            keytab=realm.service_keytab,
            krb5_conf=Path(realm.env["KRB5_CONFIG"]),
            reports=data_dir / "reports",
            extra_config=list(apache_config),
            site_replacements=dict(site_replacements or {}),
        )
        apache.start()
        yield Deployment(server, apache, realm)
    finally:
        if apache is not None:
            apache.stop()
        server.stop()
