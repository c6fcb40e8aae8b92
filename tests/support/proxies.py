"""The deployment kit's front ends (ops/nginx, ops/apache) run for real in
tests: the shipped configuration file, with only its site values (ports,
paths, certificates) replaced, in a private prefix on a loopback port."""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from .live import free_port

REPO = Path(__file__).resolve().parents[2]
OPS = REPO / "ops"


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
                "/srv/dqrxfer/reports/": f"{self.reports}/",
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
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
