"""Take one upload's lock with the server's own locker and hold it until
standard input closes: the lock holder on another host in
tests/test_pglocker_dead_host.py, and a holder that reads no request body
(as one finishing an upload) in tests/test_tus_resume.py.

Usage: python lock_holder.py CONFIG UPLOAD_ID (prints ``held`` once it holds
the lock).
"""

from __future__ import annotations

import sys

from dqrxfer.server.config import load_settings
from dqrxfer.server.services import make_locker, open_database


def main(config: str, upload_id: str) -> None:
    settings = load_settings(config)
    database = open_database(settings, check_schema=False)
    locker = make_locker(settings, database)
    with locker.lock(upload_id, timeout=0):
        print("held", flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main(*sys.argv[1:])
