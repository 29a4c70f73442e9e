#!/usr/bin/env bash
# `make test`: the nox matrix (noxfile.py) in two lanes side by side, as the
# tests wait on servers far more than they use the CPU:
#
#   lane 1: lint, dist, then the Django 5.2 session (in .venv, no install),
#           which holds the tests marked "long" or "once";
#   lane 2: the Django 6.0 and 6.1 sessions one after the other (each
#           installed first), with the chaos suite's shapes.
#
# Each session has a cluster of its own (noxfile.py CLUSTER_PORT_OFFSETS).
# With a reused cluster (RWSPLIT_CLUSTER_DIR, the demo's) everything runs in
# one lane, one session at a time. Lane 2's output is shown after lane 1's.
#
#   scripts/run_tests.sh [pytest arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."

NOX=${VENV:-.venv}/bin/nox

if [[ -n ${RWSPLIT_CLUSTER_DIR:-} ]]; then
    status=0
    "$NOX" -t first -- "$@" || status=$?
    "$NOX" -t later -- "$@" || status=$?
    exit "$status"
fi

log=$(mktemp -t rwsplit-nox-lane2.XXXXXX)
trap 'rm -f "$log"' EXIT
started=$SECONDS

"$NOX" -t later -- "$@" >"$log" 2>&1 &
lane2=$!

status=0
"$NOX" -t first -- "$@" || status=$?
echo "run_tests: lane 1 (lint, dist, Django 5.2) took $((SECONDS - started)) s"

wait "$lane2" || status=$?
cat "$log"
echo "run_tests: lane 2 (Django 6.0, 6.1) took $((SECONDS - started)) s in all"
exit "$status"
