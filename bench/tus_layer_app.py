"""The tus layer alone, served like the full application: the reusable
blueprint (``dqrxfer.server.tus``) with a FileStore and a FileLocker and no
application hooks, under gunicorn with the same gthread workers and defaults
as ``dqrxfer-server serve``.

This is what @tus/server with @tus/file-store does (store the bytes and the
upload's state, nothing else), so the two compare like for like; the full
application adds validation, the database and publication into the report
tree, and is measured beside both.

    python -m bench.tus_layer_app --port 8080 --data-dir /tmp/uploads [--fsync complete]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flask import Flask

from dqrxfer.server.tus import FileLocker, FileStore, TusOptions, make_blueprint
from dqrxfer.server.wsgi import FlaskServer, gunicorn_options


def create_app(data_dir: Path, fsync: str) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = None
    store = FileStore(data_dir, fsync=fsync)
    locker = FileLocker(data_dir / "locks")
    app.register_blueprint(make_blueprint(store, locker, options=TusOptions()))
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--fsync", default="complete")
    args = parser.parse_args()
    options = gunicorn_options("127.0.0.1", args.port, args.workers, args.threads)
    FlaskServer(lambda: create_app(args.data_dir, args.fsync), options).run()


if __name__ == "__main__":
    main()
