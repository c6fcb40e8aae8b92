#!/usr/bin/env bash
# Set up a development/test machine (Debian): system packages, the virtual
# environment in .venv, and with --test everything the test suite drives.
# Idempotent: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

mode="${1:-run}"
# gssapi (under requests-gssapi) builds from source against MIT Kerberos.
packages=(libkrb5-dev krb5-user)
if [[ "$mode" == "--test" ]]; then
    packages+=(krb5-kdc krb5-admin-server chromium)
    # The deployment kit's front ends, run for real by tests/test_ops_*.py.
    packages+=(nginx-light apache2 libapache2-mod-auth-gssapi)
    # The documentation's diagrams (tests/test_docs.py builds the site).
    packages+=(graphviz)
    # A server whose clock is off, for dqr-ping's clock-skew warning.
    packages+=(faketime)
    # PostgreSQL (server and pg_dump/pg_restore): when DQRXFER_TEST_POSTGRES
    # names no reachable server, the suite runs a throwaway cluster of its own
    # with these programs (tests/support/postgres.py).
    packages+=(postgresql)
    # A database client host that loses power (tests/test_pglocker_dead_host.py):
    # a network namespace whose traffic nftables drops.
    packages+=(nftables iproute2)
fi

missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if (( ${#missing[@]} )); then
    sudo=""; [[ "$(id -u)" == 0 ]] || sudo="sudo"
    echo "bootstrap: installing Debian packages: ${missing[*]}"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

python="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
    "$python" -m venv .venv
    .venv/bin/pip install -q --upgrade pip
fi
extra="server"
[[ "$mode" == "--test" ]] && extra="test"
# Strict editable mode: the package is a tree of links under build/ that
# language servers (pyright's go-to-definition) and other tools can follow,
# instead of an import hook only the interpreter knows.
.venv/bin/pip install -q -e ".[$extra]" --config-settings editable_mode=strict

if [[ "$mode" == "--test" && -f tests/js/package.json ]]; then
    (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
fi
