#!/usr/bin/env bash
# Type-check the package, strict (configuration: [tool.mypy] in pyproject.toml).
# mypy checks the installed package, whose strict editable install is a tree of
# links under build/ that maps client/ to dqrxfer and server/ to dqrxfer.server;
# the sources themselves do not spell their package name.
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"
tree=$(echo build/__editable__.dqrxfer-*)
[[ -d "$tree/dqrxfer" ]] || { echo "typecheck: no link tree under build/ (run ops/dev/bootstrap.sh)" >&2; exit 2; }
cd "$tree"
# Name each file by its place in the checkout, not in the link tree.
"$root/.venv/bin/mypy" --config-file "$root/pyproject.toml" -p dqrxfer |
    sed -e 's#^dqrxfer/server/#server/#' -e 's#^dqrxfer/migrations/#migrations/#' -e 's#^dqrxfer/#client/#'
