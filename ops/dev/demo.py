"""The demo: start a local server on the embedded default, upload the sample
report with the real ``dqr-upload``, show where it landed and what the links
API says, then stop the server."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"demo: the server exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/api/v1/ping", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    sys.exit("demo: the server did not answer within 30 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data-dir", default="dqrxfer-data", help="data directory (default ./dqrxfer-data)"
    )
    args = parser.parse_args()
    data_dir = Path(args.data_dir).resolve()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    print(f"== starting dqrxfer-server on {url} (data in {data_dir})", flush=True)
    server = subprocess.Popen(
        [
            str(BIN / "dqrxfer-server"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
            "--data-dir",
            str(data_dir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_ready(url, server)
        sample = HERE / "sample" / "index.html"
        options = f"-s {url} -p O4 -g S230518h -u llo --revision 1".split()
        command = [str(BIN / "dqr-upload"), *options, str(sample)]
        print("== " + " ".join(["dqr-upload", *command[1:]]), flush=True)
        result = subprocess.run(command, capture_output=True, text=True)
        sys.stderr.write(result.stderr)
        if result.returncode != 0:
            print(f"demo: dqr-upload failed with exit code {result.returncode}")
            return result.returncode
        report_url = result.stdout.strip()
        landed = data_dir / "reports/O4/S230518h_dir/S230518h_llo_1/index.html"
        print(f"== report URL: {report_url}")
        print(f"== the file landed at: {landed} ({landed.stat().st_size} bytes)")
        with urllib.request.urlopen(f"{url}/api/v1/events/S230518h/reports", timeout=10) as answer:
            links = json.load(answer)
        print("== GET /api/v1/events/S230518h/reports")
        print(json.dumps(links, indent=2))
        return 0
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        print("== server stopped")


if __name__ == "__main__":
    sys.exit(main())
