#!/usr/bin/env bash
# Make this checkout ready to run the demo and the tests. Idempotent and fast
# once done; `make demo` and `make test` run it first, and it works without
# make too: scripts/bootstrap.sh
#
#   1. PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup, postgres):
#      installed with apt-get when missing and running as root. With --tests
#      (`make test`) also pgbouncer (the chaos suite's PgBouncer shape) and
#      Chromium with chromedriver (the status page's browser test); the demo
#      needs neither.
#   2. Python >= 3.11 ($PYTHON, default python3).
#   3. .venv with `uv pip install -e . -r requirements-dev.txt` (pip if uv
#      cannot be installed), re-run only when
#      pyproject.toml or requirements-dev.txt changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

FOR_TESTS=0
case "${1:-}" in
--tests) FOR_TESTS=1 ;;
"") ;;
*) echo "usage: scripts/bootstrap.sh [--tests]" >&2; exit 2 ;;
esac

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
STAMP="$VENV/.rwsplit-bootstrap.sha256"
PG_TOOLS=(initdb pg_ctl pg_basebackup postgres)

say() { printf 'bootstrap: %s\n' "$*"; }
die() {
    local code=$1
    shift
    printf 'bootstrap: error: %s\n' "$*" >&2
    exit "$code"
}

has_pg_tools() { # $1: a directory
    local tool
    [[ -n $1 && -d $1 ]] || return 1
    for tool in "${PG_TOOLS[@]}"; do
        [[ -x $1/$tool ]] || return 1
    done
}

find_pg_bindir() {
    local dir
    if [[ -n ${RWSPLIT_PG_BINDIR:-} ]] && has_pg_tools "$RWSPLIT_PG_BINDIR"; then
        echo "$RWSPLIT_PG_BINDIR"
        return 0
    fi
    if command -v pg_config >/dev/null 2>&1; then
        dir=$(pg_config --bindir 2>/dev/null || true)
        if has_pg_tools "$dir"; then
            echo "$dir"
            return 0
        fi
    fi
    # Newest version first (sort -V), as django_rwsplit.testing.cluster does.
    while IFS= read -r dir; do
        if has_pg_tools "$dir"; then
            echo "$dir"
            return 0
        fi
    done < <(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV)
    return 1
}

# -- 1. PostgreSQL server ----------------------------------------------------
if ! bindir=$(find_pg_bindir); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        say "PostgreSQL server binaries not found; installing them with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        # Debian may create and start its own cluster on 5432 here; that one
        # is left alone (the demo and the tests use 15432 and up).
        apt-get update -qq || die 2 "apt-get update failed"
        apt-get install -y -qq postgresql ||
            die 2 "apt-get install postgresql failed"
        bindir=$(find_pg_bindir) ||
            die 2 "installed postgresql, but still no initdb/pg_ctl/pg_basebackup"
    else
        die 2 "PostgreSQL server binaries not found (need ${PG_TOOLS[*]} from" \
            "pg_config --bindir or /usr/lib/postgresql/*/bin). Install the" \
            "PostgreSQL server package, e.g. apt-get install postgresql, or" \
            "set RWSPLIT_PG_BINDIR to the directory that holds them."
    fi
fi

# -- 1a. PgBouncer (the chaos suite's PgBouncer shape; tests only) ----------
if [[ $FOR_TESTS == 1 ]] && ! command -v pgbouncer >/dev/null 2>&1 && [[ ! -x /usr/sbin/pgbouncer ]]; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        say "installing pgbouncer with apt-get (for the chaos suite)"
        export DEBIAN_FRONTEND=noninteractive
        { apt-get install -y -qq pgbouncer >/dev/null 2>&1 ||
            { apt-get update -qq && apt-get install -y -qq pgbouncer >/dev/null; }; } ||
            say "warning: could not install pgbouncer; the chaos suite's PgBouncer shape will fail"
    else
        say "warning: pgbouncer not found; the chaos suite's PgBouncer shape will fail" \
            "(apt-get install pgbouncer)"
    fi
fi

# -- 1b. Headless Chromium (the status page's browser test; tests only) -----
if [[ $FOR_TESTS == 1 && $(id -u) -eq 0 ]]; then
    chromium_log=${TMPDIR:-/tmp}/rwsplit-install-chromium.log
    scripts/install_chromium.sh >"$chromium_log" 2>&1 ||
        say "warning: could not install Chromium (see $chromium_log);" \
            "the browser test will fail"
fi

# -- 2. Python ---------------------------------------------------------------
command -v "$PYTHON" >/dev/null 2>&1 ||
    die 2 "$PYTHON not found; install Python 3.11 or newer (or set PYTHON=...)"
py_version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') ||
    die 2 "could not run $PYTHON; install Python 3.11 or newer (or set PYTHON=...)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die 2 "$PYTHON is Python $py_version; django-rwsplit needs Python 3.11 or" \
        "newer (set PYTHON=/path/to/python3.11 or newer)"

# -- 3. Virtualenv and packages ----------------------------------------------
if [[ ! -x $VENV/bin/python ]]; then
    say "creating $VENV with $("$PYTHON" -V 2>&1)"
    "$PYTHON" -m venv "$VENV" ||
        die 2 "could not create $VENV (Debian/Ubuntu: apt-get install python3-venv)"
fi

wanted=$(cat pyproject.toml requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [[ ! -f $STAMP || $(cat "$STAMP") != "$wanted" ]]; then
    say "installing django-rwsplit (editable) and requirements-dev.txt into $VENV"
    # uv installs the set in seconds (pip takes half a minute); nox uses it for
    # the Django 6.x sessions too (noxfile.py). pip does the job if it is missing.
    installer=("$VENV/bin/python" -m pip install --quiet)
    if "$VENV/bin/python" -m pip install --quiet uv >/dev/null 2>&1; then
        installer=("$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python")
    fi
    if ! "${installer[@]}" -e . -r requirements-dev.txt; then
        die 1 "pip install failed (see the messages above). Check the network" \
            "or your pip index settings, then run scripts/bootstrap.sh again" \
            "(rm -rf $VENV starts from scratch)."
    fi
    echo "$wanted" >"$STAMP"
fi
say "ok (PostgreSQL binaries in $bindir, $("$VENV/bin/python" -V 2>&1) in $VENV)"
