#!/usr/bin/env bash
# `make test`: the nox matrix (noxfile.py), with the Django 6.x virtualenvs
# built in the background while the Django 5.2 session runs (the tests wait
# on servers far more than they use the CPU), then reused (nox -R).
#
#   scripts/run_tests.sh [pytest arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."

NOX=${VENV:-.venv}/bin/nox
LATER=("tests(py3.13-django6.0)" "tests(py3.12-django6.1)")
log=$(mktemp -t rwsplit-nox-install.XXXXXX)
trap 'rm -f "$log"' EXIT

"$NOX" -s "${LATER[@]}" --install-only >"$log" 2>&1 &
installing=$!

status=0
"$NOX" -s lint dist "tests(py3.11-django5.2)" -- "$@" || status=$?

if ! wait "$installing"; then
    cat "$log" >&2
    echo "run_tests: installing the Django 6.x sessions failed (above)" >&2
    exit 1
fi
"$NOX" -R -s "${LATER[@]}" -- "$@" || status=$?
exit "$status"
