#!/usr/bin/env bash
# Install client and server, then run the demo on the embedded default.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash ops/dev/bootstrap.sh
exec .venv/bin/python ops/dev/demo.py "$@"
