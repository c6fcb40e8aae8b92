"""A real MIT Kerberos realm for the tests (k5test), one per test session.

The realm has a KDC on its own ports, the service principal
``HTTP/localhost`` with a keytab for the server, a person (``user@``), a
second person (``stranger@``) and two robots with keytabs.  Clients get their
environment from :meth:`Realm.client_env`, which never inherits k5test's
``KRB5_CLIENT_KTNAME`` unless asked to.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .live import LiveServer

REALM = "KRBTEST.COM"
SERVICE = f"HTTP/localhost@{REALM}"
USER = f"user@{REALM}"
STRANGER = f"stranger@{REALM}"
LLO_ROBOT = f"dqr/robot/ldas.llo.example@{REALM}"
LHO_ROBOT = f"dqr/robot/ldas.lho.example@{REALM}"

CLOCK_SKEW = 3

#: Authorization rules over the realm's principals: everyone may use the
#: project ``personal``, the user O4 as well, the LLO robot O4 as site llo.
RULES = f"""
[[auth.rules]]
name = "people"
principals = ["*@{REALM}"]
projects = ["personal"]

[[auth.rules]]
name = "O4 analysts"
principals = ["{USER}"]
projects = ["O4", "personal"]

[[auth.rules]]
name = "llo robot"
principals = ["dqr/robot/*.llo.example@{REALM}"]
projects = ["O4"]
sites = ["llo"]
"""

#: Variables the realm's tools set that must not leak into a client by accident.
_CLIENT_KEYS = ("KRB5CCNAME", "KRB5_CLIENT_KTNAME", "KRB5_KTNAME")


def kdc_available() -> bool:
    return all(
        shutil.which(name) or Path("/usr/sbin", name).exists()
        for name in ("krb5kdc", "kdb5_util", "kadmin.local")
    )


def _ports_free(base: int, count: int = 10) -> bool:
    for port in range(base, base + count):
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(socket.AF_INET, kind) as sock:
                try:
                    sock.bind(("0.0.0.0", port))
                except OSError:
                    return False
    return True


def free_portbase() -> int:
    """Ten consecutive ports free for TCP and UDP, below the ephemeral range, so
    realms of test runs that share this machine do not meet."""
    candidates = list(range(20000, 32000, 10))
    random.shuffle(candidates)
    for base in candidates:
        if _ports_free(base):
            return base
    raise RuntimeError("no free port range for the test KDC")


@dataclass
class Realm:
    """The test realm and the files the tests need from it."""

    k5: object
    directory: Path
    service_keytab: Path
    llo_robot_keytab: Path
    lho_robot_keytab: Path
    user_ccache: Path
    stranger_ccache: Path

    @classmethod
    def start(cls) -> Realm:
        import k5test

        # A small clock skew allowance lets a test see an expired ticket refused
        # within seconds (MIT's default of 300 s would mean a 5-minute wait).
        k5 = k5test.K5Realm(
            realm=REALM,
            portbase=free_portbase(),
            get_creds=False,
            krb5_conf={"libdefaults": {"clockskew": str(CLOCK_SKEW)}},
        )
        directory = Path(k5.tmpdir)
        realm = cls(
            k5=k5,
            directory=directory,
            service_keytab=directory / "http.keytab",
            llo_robot_keytab=directory / "llo-robot.keytab",
            lho_robot_keytab=directory / "lho-robot.keytab",
            user_ccache=directory / "user.ccache",
            stranger_ccache=directory / "stranger.ccache",
        )
        try:
            k5.addprinc(SERVICE)
            k5.extract_keytab(SERVICE, str(realm.service_keytab))
            for robot, keytab in (
                (LLO_ROBOT, realm.llo_robot_keytab),
                (LHO_ROBOT, realm.lho_robot_keytab),
            ):
                k5.addprinc(robot)
                k5.extract_keytab(robot, str(keytab))
            k5.addprinc(STRANGER, realm.password(STRANGER))
            realm.kinit(USER, realm.user_ccache)
            realm.kinit(STRANGER, realm.stranger_ccache)
        except Exception:
            k5.stop()
            raise
        return realm

    def stop(self) -> None:
        self.k5.stop()

    @property
    def env(self) -> dict[str, str]:
        """k5test's environment (KRB5_CONFIG and friends), as given."""
        return dict(self.k5.env)

    def password(self, principal: str) -> str:
        return self.k5.password(principal.split("@")[0].replace("/", "-"))

    def kinit(self, principal: str, ccache: Path, lifetime: str | None = None) -> None:
        flags = ["-c", f"FILE:{ccache}"]
        if lifetime:
            flags += ["-l", lifetime]
        self.k5.kinit(principal, self.password(principal), flags=flags)

    def gssapi_server(self, root: Path, auth: str = "", rules: str = RULES) -> LiveServer:
        """A live server with its data in ``root/data``, authenticating with
        this realm's service keytab: ``auth`` adds keys to its ``[auth]``
        table, ``rules`` are its authorization rules."""
        (root / "data").mkdir()
        config = root / "server.toml"
        config.write_text(
            "auto_upgrade = true\nserve_reports = true\n\n"
            f'[auth]\nmode = "gssapi"\nkeytab = "{self.service_keytab}"\n{auth}\n{rules}'
        )
        return LiveServer(root / "data", config=config, env=self.server_env()).start()

    def server_env(self) -> dict[str, str]:
        """The server process's environment: the realm's, merged in."""
        return self.env

    def client_env(self, ccache: Path | str | None = None, **extra: str) -> dict[str, str]:
        """A whole environment for a client process: this process's, the realm's
        configuration, the given ticket cache, and no other credentials."""
        env = {**os.environ, **self.env}
        for key in _CLIENT_KEYS:
            env.pop(key, None)
        env["KRB5CCNAME"] = f"FILE:{ccache}" if ccache else f"FILE:{self.directory}/no-such-cache"
        env.update(extra)
        return env

    def literal_names_config(self) -> str:
        """A krb5.conf for clients that take the server's host name as given
        (no DNS canonicalisation), as behind an alias or a tunnel."""
        env = self.k5.special_env(
            "literal-names",
            False,
            krb5_conf={"libdefaults": {"rdns": "false", "dns_canonicalize_hostname": "false"}},
        )
        return env["KRB5_CONFIG"]

    def wait_expired(self, ccache: Path, timeout: float = 60) -> None:
        """Poll ``klist -s`` until the cache holds no valid ticket any more."""
        deadline = time.monotonic() + timeout
        env = self.client_env(ccache)
        while time.monotonic() < deadline:
            if subprocess.run(["klist", "-s"], env=env, check=False).returncode != 0:
                return
            time.sleep(0.2)
        raise AssertionError(f"ticket in {ccache} still valid after {timeout}s")
