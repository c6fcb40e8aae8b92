"""The deployment kit's front ends (ops/nginx, ops/apache) run for real in
tests: the shipped configuration file, with only its site values (ports,
paths, certificates) replaced, in a private prefix on a loopback port."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
import requests

from .live import LiveServer, free_port, stop_group

REPO = Path(__file__).resolve().parents[2]
OPS = REPO / "ops"
SETUP = "bash ops/dev/bootstrap.sh --test"

Test = TypeVar("Test", bound=Callable[..., object])


def nginx_available() -> bool:
    return shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists()


def apache_available() -> bool:
    return (
        Path("/usr/sbin/apache2").exists()
        and Path("/usr/lib/apache2/modules/mod_auth_gssapi.so").exists()
    )


def needs_nginx(test: Test) -> Test:
    """Run ``test`` where Debian's nginx is installed; required in CI (marker ``frontend``)."""
    skip = pytest.mark.skipif(not nginx_available(), reason=f"nginx not installed ({SETUP})")
    return pytest.mark.frontend(skip(test))


#: The marks of a test that needs Apache and mod_auth_gssapi: skipped where
#: they are not installed, required in CI (marker ``frontend``).  A module of
#: such tests sets ``pytestmark = NEEDS_APACHE``.
NEEDS_APACHE = [
    pytest.mark.frontend,
    pytest.mark.skipif(
        not apache_available(), reason=f"apache2 or libapache2-mod-auth-gssapi missing ({SETUP})"
    ),
]


def needs_apache(test: Test) -> Test:
    """Run ``test`` where Apache and mod_auth_gssapi are installed; required in CI."""
    for mark in NEEDS_APACHE:
        test = mark(test)
    return test


def substitute(text: str, replacements: dict[str, str]) -> str:
    """Replace each key once or more; a key that is missing means the shipped
    file changed under the test, which must then fail loudly."""
    for old, new in replacements.items():
        if old not in text:
            raise AssertionError(f"{old!r} no longer in the shipped configuration")
        text = text.replace(old, new)
    return text


def self_signed_certificate(directory: Path, host: str = "localhost") -> tuple[Path, Path]:
    """A certificate for ``host`` (and 127.0.0.1) that clients trust through
    REQUESTS_CA_BUNDLE."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={host}",
            "-addext",
            f"subjectAltName=DNS:{host},IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def wait_until_answers(
    url: str, process: subprocess.Popen[bytes], log: Path, timeout: float, verify: Path
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"front end exited with {process.returncode}:\n{log.read_text()}")
        try:
            requests.get(url, timeout=2, verify=str(verify))
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"front end not answering after {timeout}s:\n{log.read_text()}")


@dataclass
class Nginx:
    """nginx from Debian with ops/nginx/dqrxfer.conf in front of ``backend_port``."""

    prefix: Path
    backend_port: int
    reports: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    cert: Path = field(init=False)

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def start(self, timeout: float = 30) -> Nginx:
        self.port = self.port or free_port()
        self.prefix.mkdir(parents=True, exist_ok=True)
        self.cert, key = self_signed_certificate(self.prefix)
        site = substitute(
            (OPS / "nginx" / "dqrxfer.conf").read_text(),
            {
                "listen 443 ssl http2;": f"listen 127.0.0.1:{self.port} ssl http2;",
                "listen [::]:443 ssl http2;": "",
                "server 127.0.0.1:8080;": f"server 127.0.0.1:{self.backend_port};",
                "/etc/ssl/certs/dqrxfer.pem": str(self.cert),
                "/etc/ssl/private/dqrxfer.key": str(key),
                "/srv/dqrxfer/reports": str(self.reports),
                "server_name dqrxfer.example.org;": "server_name localhost;",
            },
        )
        (self.prefix / "dqrxfer.conf").write_text(site)
        user = f"user {getpass.getuser()};" if os.geteuid() == 0 else ""
        (self.prefix / "nginx.conf").write_text(
            f"""{user}
daemon off;
master_process on;
worker_processes 1;
pid {self.prefix}/nginx.pid;
error_log {self.prefix}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {self.prefix}/access.log;
    client_body_temp_path {self.prefix}/client_body;
    proxy_temp_path {self.prefix}/proxy;
    fastcgi_temp_path {self.prefix}/fastcgi;
    uwsgi_temp_path {self.prefix}/uwsgi;
    scgi_temp_path {self.prefix}/scgi;
    include {self.prefix}/dqrxfer.conf;
}}
"""
        )
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        command = [binary, "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf")]
        check = subprocess.run([*command, "-t"], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{check.stderr}")
        log = self.prefix / "stderr.log"
        with open(log, "ab") as output:
            self.process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_until_answers(self.url, self.process, log, timeout, self.cert)
        return self

    def stop(self) -> None:
        stop_group(self.process)


APACHE_MODULES = (
    "mpm_event",
    "authn_core",
    "authz_core",
    "authz_host",
    "authz_user",
    "auth_gssapi",
    "alias",
    "dir",
    "headers",
    "mime",
    "proxy",
    "proxy_http",
    "reqtimeout",
    "rewrite",
    "session",
    "session_cookie",
    "ssl",
)


@contextlib.contextmanager
def behind_nginx(
    data_dir: Path, work: Path, config: Path | None = None, *extra: str, start: bool = True
) -> Iterator[tuple[LiveServer, Nginx]]:
    """The server as deployed (ops/gunicorn.conf.py; ``extra`` added to its
    arguments) and nginx in front of it, in ``work/nginx``, serving
    ``data_dir/reports``; nginx left for the test to start if not ``start``
    (to prepare the reports first).  Both are stopped on the way out."""
    gunicorn = ["--gunicorn-config", str(OPS / "gunicorn.conf.py"), *extra]
    server = LiveServer(data_dir, config=config, extra_args=gunicorn).start()
    nginx = Nginx(work / "nginx", server.port, data_dir / "reports")
    try:
        if start:
            nginx.start()
        yield server, nginx
    finally:
        nginx.stop()
        server.discard()


@dataclass
class Apache:
    """Debian's Apache with ops/apache/dqrxfer.conf included unchanged: the test
    only defines the site values the file asks for, in a private ServerRoot.

    Apache never runs its workers as root: under root they run as ``www-data``,
    so everything they read (keytab, krb5.conf) is copied into a directory
    they can reach, and the replay cache is theirs."""

    backend_port: int
    keytab: Path
    krb5_conf: Path
    reports: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    #: Lines for the main server configuration (outside the virtual host),
    #: e.g. a server-wide LimitRequestBody the shipped file must hold against.
    extra_config: list[str] = field(default_factory=list)
    #: Replacements in the shipped file (see :func:`substitute`), for tests
    #: that show what a directive of it is for by taking it out.
    site_replacements: dict[str, str] = field(default_factory=dict)
    port: int = 0
    root: Path = field(init=False)
    cert: Path = field(init=False)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def _prepare_root(self) -> tuple[str, str]:
        import tempfile

        self.root = Path(tempfile.mkdtemp(prefix="dqrxfer-apache-"))
        self.root.chmod(0o711)
        user = group = ""
        if os.geteuid() == 0:
            user = group = "www-data"
        for name in ("run", "rcache", "sessions"):
            (self.root / name).mkdir()
        shutil.copyfile(self.keytab, self.root / "http.keytab")
        shutil.copyfile(self.krb5_conf, self.root / "krb5.conf")
        (self.root / "krb5.conf").chmod(0o644)
        if user:
            import grp
            import pwd

            uid, gid = pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
            os.chown(self.root / "http.keytab", 0, gid)
            (self.root / "http.keytab").chmod(0o640)
            for name in ("rcache", "sessions"):
                os.chown(self.root / name, uid, gid)
                (self.root / name).chmod(0o700)
        return user, group

    def start(self, timeout: float = 30) -> Apache:
        self.port = self.port or free_port()
        user, group = self._prepare_root()
        self.cert, key = self_signed_certificate(self.root)
        modules = "\n".join(
            f"LoadModule {name}_module /usr/lib/apache2/modules/mod_{name}.so"
            for name in APACHE_MODULES
        )
        defines = {
            "DQRXFER_SERVER_NAME": "localhost",
            "DQRXFER_PORT": str(self.port),
            "DQRXFER_BACKEND": f"http://127.0.0.1:{self.backend_port}",
            "DQRXFER_KEYTAB": str(self.root / "http.keytab"),
            "DQRXFER_SESSION_KEY": str(self.root / "sessions" / "session.key"),
            "DQRXFER_REPORTS": str(self.reports),
            "DQRXFER_TLS_CERT": str(self.cert),
            "DQRXFER_TLS_KEY": str(key),
            "DQRXFER_LOG_DIR": str(self.root),
        }
        lines = [
            f"ServerRoot {self.root}",
            f"DefaultRuntimeDir {self.root}/run",
            f"PidFile {self.root}/run/httpd.pid",
            f"Mutex file:{self.root}/run default",
            f"ErrorLog {self.root}/server-error.log",
            "LogLevel warn auth_gssapi:info",
            'LogFormat "%h %l %u %t \\"%r\\" %>s %b" common',
            # The shipped site logs in Debian's "combined" format, defined in
            # Debian's apache2.conf (not read here).
            'LogFormat "%h %l %u %t \\"%r\\" %>s %b '
            '\\"%{Referer}i\\" \\"%{User-Agent}i\\"" combined',
            f"CustomLog {self.root}/server-access.log common",
            modules,
            f"User {user}" if user else "",
            f"Group {group}" if group else "",
            "ServerName localhost",
            f"Listen 127.0.0.1:{self.port} https",
            "TypesConfig /etc/mime.types",
            "StartServers 1",
            "SSLSessionCache none",
            *(f"Define {key} {value}" for key, value in defines.items()),
            *self.extra_config,
            f"Include {self._site()}",
        ]
        config = self.root / "httpd.conf"
        config.write_text("\n".join(line for line in lines if line) + "\n")
        env = {
            **os.environ,
            **self.extra_env,
            "KRB5_CONFIG": str(self.root / "krb5.conf"),
            "KRB5RCACHEDIR": str(self.root / "rcache"),
            "APACHE_LOG_DIR": str(self.root),
        }
        env.pop("KRB5_KTNAME", None)
        binary = shutil.which("apache2") or "/usr/sbin/apache2"
        command = [binary, "-d", str(self.root), "-f", str(config)]
        check = subprocess.run([*command, "-t"], capture_output=True, text=True, env=env)
        if check.returncode != 0:
            raise RuntimeError(f"apache2 -t failed:\n{check.stderr}")
        log = self.root / "stderr.log"
        with open(log, "ab") as output:
            self.process = subprocess.Popen(
                [*command, "-DFOREGROUND"],
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        wait_until_answers(
            self.url, self.process, self.root / "server-error.log", timeout, self.cert
        )
        return self

    def _site(self) -> Path:
        """The shipped virtual host, or a copy with the test's replacements."""
        shipped = OPS / "apache" / "dqrxfer.conf"
        if not self.site_replacements:
            return shipped
        site = self.root / "dqrxfer.conf"
        site.write_text(substitute(shipped.read_text(), self.site_replacements))
        return site

    def error_log(self) -> str:
        return (self.root / "dqrxfer-error.log").read_text(errors="replace")

    def stop(self) -> None:
        stop_group(self.process)
        shutil.rmtree(self.root, ignore_errors=True)
