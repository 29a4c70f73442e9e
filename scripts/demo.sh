#!/usr/bin/env bash
# `make demo`: run the example project against a local primary + 2 replicas.
#
#   bootstrap -> start (or reuse) the cluster in ./.rwsplit-cluster
#   -> create database rwsplit_demo -> migrate -> seed (only if empty)
#   -> runserver 127.0.0.1:$PORT
#
# Ctrl-C stops runserver; the cluster keeps running for the next `make demo`.
# `make demo-down` stops and deletes it.
#
# Environment: PORT (web server, default 8000), RWSPLIT_CLUSTER_PORT (primary,
# default 15432; replicas use the next ports), RWSPLIT_DEMO_DIR (cluster
# directory, default .rwsplit-cluster), RWSPLIT_DEMO_DB (default rwsplit_demo).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh

PY=${VENV:-.venv}/bin/python
PORT=${PORT:-8000}
DIR=${RWSPLIT_DEMO_DIR:-.rwsplit-cluster}
DB=${RWSPLIT_DEMO_DB:-rwsplit_demo}

step() { printf '\n==> %s\n' "$*"; }

step "PostgreSQL primary + 2 replicas in $DIR"
cluster_port=$("$PY" scripts/demo_cluster.py port "$DIR")
if ! "$PY" -m django_rwsplit.testing up --dir "$DIR" --port "$cluster_port" >/dev/null
then
    echo "demo: error: the cluster in $DIR did not start (see above). If a port" \
        "is taken, \`make demo-down\` and try other ports:" \
        "RWSPLIT_CLUSTER_PORT=19432 make demo" >&2
    exit 2
fi
"$PY" -m django_rwsplit.testing status --dir "$DIR"

step "database $DB"
"$PY" scripts/demo_cluster.py createdb "$DIR" "$DB"

# example_project/settings.py builds its default DATABASE_URL and
# REPLICA_URLS from these (an explicit DATABASE_URL/REPLICA_URLS wins).
export RWSPLIT_CLUSTER_PORT=$cluster_port RWSPLIT_DEMO_DB=$DB

step "migrate"
"$PY" manage.py migrate --noinput

step "seed"
"$PY" manage.py seed

# A token for rwsplit/health/ and rwsplit/status/data/, new for each demo run
# unless RWSPLIT_HEALTH_ENDPOINT_TOKEN is set.
RWSPLIT_HEALTH_ENDPOINT_TOKEN=${RWSPLIT_HEALTH_ENDPOINT_TOKEN:-$("$PY" -c \
    'import secrets; print(secrets.token_urlsafe(24))')}
export RWSPLIT_HEALTH_ENDPOINT_TOKEN
consistency=${RWSPLIT_CONSISTENCY:-lsn}
other=$([ "$consistency" = lsn ] && echo time || echo lsn)

url="http://127.0.0.1:$PORT"
step "$url/ (Ctrl-C stops the web server; the cluster keeps running)"
cat <<EOF
    shop             $url/  (the footer shows where each query ran)
    status page      $url/rwsplit/status/  (log in as demo / demo)
    health document  curl -H 'Authorization: Bearer $RWSPLIT_HEALTH_ENDPOINT_TOKEN' $url/rwsplit/health/
    consistency      CONSISTENCY="$consistency"; for the other mode:
                     RWSPLIT_CONSISTENCY=$other make demo
    faults           make cluster CMD="pause replica1"  (then CMD="resume replica1";
                     every command: make cluster CMD=--help, or the README)

EOF
exec "$PY" manage.py runserver "127.0.0.1:$PORT"
