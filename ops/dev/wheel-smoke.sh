#!/usr/bin/env bash
# Build the wheel, install it (with the server extra) into a fresh virtual
# environment outside the source tree, migrate a database and do one upload.
set -euo pipefail
cd "$(dirname "$0")/../.."
work="$(mktemp -d)"
trap 'kill -TERM -- "-$server_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
server_pid=0

# Build from a clean copy of the source files (tracked, or new and not ignored):
# an in-tree build/ directory left by earlier builds would hide a file missing
# from the package data.
mkdir "$work/src"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' file; do
    if [[ -f "$file" ]]; then cp --parents -- "$file" "$work/src"; fi
done
.venv/bin/pip wheel -q --no-deps -w "$work/dist" "$work/src"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "$(ls "$work"/dist/dqrxfer-*.whl)[server]"
cd "$work"
"$work/venv/bin/dqrxfer-server" db upgrade --data-dir "$work/data"
port="$("$work/venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
setsid "$work/venv/bin/dqrxfer-server" serve --port "$port" --data-dir "$work/data" > "$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 300); do
    curl -fs "http://127.0.0.1:$port/api/v1/ping" >/dev/null && break
    sleep 0.1
done
echo "wheel smoke test payload" > "$work/smoke.txt"
"$work/venv/bin/dqr-upload" -s "http://127.0.0.1:$port" -p O4 -g S230518h -u llo --revision 1 "$work/smoke.txt"
cmp "$work/smoke.txt" "$work/data/reports/O4/S230518h_dir/S230518h_llo_1/smoke.txt"
# Files that only the wheel's package data brings (static files, templates) and
# the API document. The whole answer is read before grep looks at it: grep -q
# in a pipe under pipefail can fail a good answer (curl's write error 23).
expect() {
    local body
    body="$(curl -fsS "http://127.0.0.1:$port$1")" || { echo "wheel smoke test: GET $1 failed"; exit 1; }
    grep -qF -- "$2" <<<"$body" || { echo "wheel smoke test: GET $1 lacks $2"; exit 1; }
}
expect /api/v1/openapi.json '"/api/v1/events/{graceid}/reports"'
expect /api/v1/events/S230518h/reports '"site":"llo"'
expect /static/dqrxfer.js 'renderLinks'
expect /static/dqrxfer.css '.dqrxfer-site'
expect /static/event-page.js 'renderLinks'
expect /static/jquery-3.8.0.min.js 'jQuery v3.8.0'
expect /events/ 'href="/events/S230518h"'
expect /events/S230518h 'data-graceid="S230518h"'
echo "wheel smoke test: ok"
