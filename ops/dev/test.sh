#!/usr/bin/env bash
# Install everything the tests need, then run the whole suite once.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash ops/dev/bootstrap.sh --test
set +e
# Python's bytecode caches (the gitignored __pycache__ folders) are written
# even where the environment asks for none: every pytest process the suite
# starts (the workers and the suite's own pytest runs) would otherwise
# compile and rewrite the assertions of every test module again, about
# 2.6 s of CPU each, and every command it starts would compile the
# project's modules again.
unset PYTHONDONTWRITEBYTECODE
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
