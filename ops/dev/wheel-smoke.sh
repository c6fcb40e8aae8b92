#!/usr/bin/env bash
# Build the wheel, install it (with the server extra) into a fresh virtual
# environment outside the source tree, migrate a database and do one upload.
set -euo pipefail
cd "$(dirname "$0")/../.."
work="$(mktemp -d)"
trap 'kill -TERM -- "-$server_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
server_pid=0

.venv/bin/pip wheel -q --no-deps -w "$work/dist" .
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
# Files that only the wheel's package data brings: the API document must list the event reports.
curl -fs "http://127.0.0.1:$port/api/v1/openapi.json" | grep -q '"/api/v1/events/{graceid}/reports"'
curl -fs "http://127.0.0.1:$port/api/v1/events/S230518h/reports" | grep -q '"site":"llo"'
echo "wheel smoke test: ok"
