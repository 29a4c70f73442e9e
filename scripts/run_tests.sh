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
if [[ -n ${RWSPLIT_CLUSTER_DIR:-} ]]; then
    # One reused cluster (make test on the demo's): one session at a time.
    "$NOX" -R -t later -- "$@" || status=$?
    exit "$status"
fi
# The Django 6.x sessions side by side, each on a cluster of its own
# (noxfile.py CLUSTER_PORT_OFFSETS); their output is shown one after the other.
pids=()
logs=()
for session in $("$NOX" -l -t later --json | "${VENV:-.venv}/bin/python" -c \
    'import json, sys; print(" ".join(s["session"] for s in json.load(sys.stdin)))'); do
    out=$(mktemp -t rwsplit-nox-session.XXXXXX)
    logs+=("$out")
    "$NOX" -R -s "$session" -- "$@" >"$out" 2>&1 &
    pids+=($!)
done
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || status=$?
    cat "${logs[$i]}"
    rm -f "${logs[$i]}"
done
exit "$status"
