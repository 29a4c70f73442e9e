#!/usr/bin/env bash
# `make test`: the nox matrix (noxfile.py), with the Django 6.x virtualenvs
# built in the background while the Django 5.2 session runs (the tests wait
# on servers far more than they use the CPU), then reused (nox -R).
#
#   scripts/run_tests.sh [pytest arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."

# The sessions are tagged in noxfile.py: "first" (lint, dist, Django 5.2)
# and "later" (the Django 6.x sessions).
NOX=${VENV:-.venv}/bin/nox
log=$(mktemp -t rwsplit-nox-install.XXXXXX)
trap 'rm -f "$log"' EXIT

"$NOX" -t later --install-only >"$log" 2>&1 &
installing=$!

status=0
"$NOX" -t first -- "$@" || status=$?

if ! wait "$installing"; then
    cat "$log" >&2
    echo "run_tests: installing the Django 6.x sessions failed (above)" >&2
    exit 1
fi
"$NOX" -R -t later -- "$@" || status=$?
exit "$status"
