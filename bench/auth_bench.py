"""Authentication cost per request: a full Kerberos (SPNEGO) handshake against
the session cookie the server issues after one, and no authentication at all.

A throw-away MIT realm (k5test) on free ports, a dqrxfer server in ``gssapi``
mode with its keytab and one in ``none`` mode, the same keep-alive client for
all.  Each request is ``GET /api/v1/ping`` (the cheapest authenticated
request) or a 64 KiB tus ``PATCH`` (what an upload repeats).  Also timed in
this process, without HTTP: creating a token (client) and accepting it
(server, python-gssapi).

    .venv/bin/python -m bench.auth_bench --requests 300 --runs 3

Needs the Debian packages krb5-kdc, krb5-admin-server, krb5-user.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gssapi
import k5test
import requests

from bench.servers import Dqrxfer
from dqrxfer.auth import make_auth
from dqrxfer.server.auth.negotiate import Acceptor

SERVICE = "HTTP/localhost@KRBTEST.COM"
USER = "user@KRBTEST.COM"
PATCH_SIZE = 64 * 1024


def free_portbase() -> int:
    """Ten consecutive free ports (TCP and UDP) for the KDC."""
    for base in random.sample(range(20000, 32000, 10), 200):
        try:
            for port in range(base, base + 10):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(socket.AF_INET, kind) as sock:
                        sock.bind(("0.0.0.0", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free ports for the KDC")


class Realm:
    def __init__(self) -> None:
        self.k5 = k5test.K5Realm(portbase=free_portbase(), get_creds=False)
        tmp = Path(self.k5.tmpdir)
        self.keytab = tmp / "http.keytab"
        self.ccache = tmp / "user.ccache"
        self.k5.addprinc(SERVICE)
        self.k5.extract_keytab(SERVICE, str(self.keytab))
        self.k5.kinit(USER, self.k5.password("user"), flags=["-c", f"FILE:{self.ccache}"])
        os.environ["KRB5_CONFIG"] = self.k5.env["KRB5_CONFIG"]
        os.environ["KRB5RCACHEDIR"] = self.k5.env["KRB5RCACHEDIR"]

    def stop(self) -> None:
        self.k5.stop()


class GssapiServer(Dqrxfer):
    name = "dqrxfer-gssapi"

    def __init__(self, realm: Realm, workers: int) -> None:
        config_dir = Path(realm.k5.tmpdir)
        config = config_dir / f"bench-{random.randrange(1 << 30)}.toml"
        config.write_text(
            "auto_upgrade = true\n[auth]\nmode = 'gssapi'\n"
            f"keytab = '{realm.keytab}'\n"
            "[[auth.rules]]\nprincipals = ['*@KRBTEST.COM']\n"
        )
        super().__init__(workers=workers, extra=["--config", str(config)])
        self.realm = realm

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.realm.k5.env}

    def ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                requests.get(f"http://127.0.0.1:{self.port}/api/v1/ping", timeout=2)
                return
            except (requests.ConnectionError, requests.Timeout):
                time.sleep(0.05)
        raise RuntimeError("dqrxfer did not answer its ping")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def timed(count: int, action: Callable[[], None]) -> list[float]:
    action()  # warm up: connection, service ticket, first cookie
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return samples


def interleaved(count: int, actions: dict[str, Callable[[], None]]) -> dict[str, list[float]]:
    """Time the actions in turn, in a new order each round, so that load from
    elsewhere on the machine falls on all of them alike."""
    for action in actions.values():
        action()  # warm up: connection, service ticket, first cookie
    samples: dict[str, list[float]] = {key: [] for key in actions}
    keys = list(actions)
    for _ in range(count):
        random.shuffle(keys)  # no case always runs first (or right after another)
        for key in keys:
            start = time.perf_counter()
            actions[key]()
            samples[key].append(time.perf_counter() - start)
    return samples


def tus_target(session: requests.Session, base: str, count: int) -> Callable[[], None]:
    """One upload big enough for ``count`` + 1 PATCHes of PATCH_SIZE bytes."""
    metadata = {
        "project": "personal",
        "graceid": "S230518h",
        "uploader": "llo",
        "revision": str(random.randrange(10**6)),
        "filename": "bench.bin",
        "kind": "file",
    }
    header = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in metadata.items())
    created = session.post(
        f"{base}/files/",
        headers={
            "Tus-Resumable": "1.0.0",
            "Upload-Length": str(PATCH_SIZE * (count + 2)),
            "Upload-Metadata": header,
        },
        timeout=30,
    )
    created.raise_for_status()
    url = created.headers["Location"]
    body = os.urandom(PATCH_SIZE)
    state = {"offset": 0}

    def patch() -> None:
        response = session.patch(
            url,
            data=body,
            headers={
                "Tus-Resumable": "1.0.0",
                "Upload-Offset": str(state["offset"]),
                "Content-Type": "application/offset+octet-stream",
            },
            timeout=30,
        )
        assert response.status_code == 204, response.text
        state["offset"] = int(response.headers["Upload-Offset"])

    return patch


def run_http(realm: Realm, workers: int, count: int) -> dict[str, list[float]]:
    """Both servers run at once; the six cases take turns request by request."""
    secured = GssapiServer(realm, workers).start()
    plain_server = Dqrxfer(workers=workers).start()
    try:
        base = f"http://127.0.0.1:{secured.port}"
        plain_base = f"http://127.0.0.1:{plain_server.port}"
        # A handshake on every request: the cookie is dropped before each one
        # (a new session would also pay for a new connection).
        handshake = requests.Session()
        handshake.auth = make_auth(ccache=realm.ccache, service=SERVICE, required=True)
        cookie = requests.Session()
        cookie.auth = make_auth(ccache=realm.ccache, service=SERVICE, required=True)
        plain = requests.Session()

        def forgetful(action: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                handshake.cookies.clear()
                action()

            return run

        def ping(session: requests.Session, url: str) -> Callable[[], None]:
            return lambda: session.get(f"{url}/api/v1/ping", timeout=30).raise_for_status()

        results = interleaved(
            count,
            {
                "ping_none": ping(plain, plain_base),
                "ping_cookie": ping(cookie, base),
                "ping_handshake": forgetful(ping(handshake, base)),
                "patch_none": tus_target(plain, plain_base, count),
                "patch_cookie": tus_target(cookie, base, count),
                "patch_handshake": forgetful(tus_target(handshake, base, count)),
            },
        )
        assert "Authorization" not in cookie.get(f"{base}/api/v1/ping").request.headers
        return results
    finally:
        secured.stop()
        plain_server.stop()


def run_in_process(realm: Realm, count: int) -> dict[str, list[float]]:
    creds = gssapi.Credentials(usage="initiate", store={"ccache": f"FILE:{realm.ccache}"})
    name = gssapi.Name(SERVICE, gssapi.NameType.kerberos_principal)
    acceptor = Acceptor(realm.keytab)
    spnego = gssapi.OID.from_int_seq("1.3.6.1.5.5.2")
    tokens: list[str] = []

    def initiate() -> None:
        context = gssapi.SecurityContext(
            name=name,
            creds=creds,
            usage="initiate",
            mech=spnego,
            flags=[gssapi.RequirementFlag.mutual_authentication],
        )
        tokens.append(base64.b64encode(context.step()).decode())

    client = timed(count, initiate)
    queue = iter(tokens[1:] + tokens[:1])  # every token once (no replays)
    server = timed(count, lambda: acceptor.accept(next(queue)))
    return {"token_create": client, "token_accept": server}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300, help="timed requests per case")
    parser.add_argument("--runs", type=int, default=3, help="fresh servers per case")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()

    realm = Realm()
    try:
        runs = [run_http(realm, args.workers, args.requests) for _ in range(args.runs)]
        local = run_in_process(realm, args.requests)
    finally:
        realm.stop()

    def summary(key: str, source: list[dict[str, list[float]]]) -> tuple[float, float]:
        medians = [statistics.median(run[key]) for run in source]
        p95s = [percentile(run[key], 0.95) for run in source]
        return statistics.median(medians) * 1000, statistics.median(p95s) * 1000

    rows = []
    for request in ("ping", "patch"):
        base_median, _ = summary(f"{request}_none", runs)
        for mode in ("none", "cookie", "handshake"):
            median, p95 = summary(f"{request}_{mode}", runs)
            label = {"none": "no auth", "cookie": "session cookie", "handshake": "Negotiate"}[mode]
            what = "GET /api/v1/ping" if request == "ping" else "PATCH 64 KiB"
            rows.append(
                f"| {what} | {label} | {median:.2f} ms | {p95:.2f} ms | "
                f"{median - base_median:+.2f} ms |"
            )
    in_process = (("token_create", "client: create token"), ("token_accept", "server: accept"))
    for key, label in in_process:
        median, p95 = summary(key, [local])
        rows.append(f"| in process | {label} | {median:.2f} ms | {p95:.2f} ms | |")

    print(f"{args.requests} requests x {args.runs} runs, {args.workers} workers, keep-alive\n")
    print("| request | authentication | median | p95 | over no auth |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    if args.json:
        args.json.write_text(json.dumps({"http": runs, "in_process": local}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
