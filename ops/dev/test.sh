#!/usr/bin/env bash
# Install everything the tests need, then run the whole suite once.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash ops/dev/bootstrap.sh --test
set +e
# In parallel worker processes (pytest-xdist): many tests wait on servers,
# clients and disks, so more workers than cores keep the cores busy.
# DQRXFER_TEST_WORKERS=0 (or -n 0 among the arguments) runs it in one process.
.venv/bin/python -m pytest -n "${DQRXFER_TEST_WORKERS:-4}" "$@"
status=$?
set -e
# pytest's 5 means "no tests collected": a selection that matched nothing is not a failure.
if [[ $status -eq 5 ]]; then
    echo "no tests were collected"
    exit 0
fi
exit $status
