# django-rwsplit: the two commands
#   make demo    run the example project on a local primary + 2 replicas
#   make test    run the whole test suite (what CI runs: .ci/run)
#
# make demo PORT=8001                        another web server port
# RWSPLIT_CLUSTER_PORT=19432 make demo       another cluster port (19432-19434)
# make test ARGS="-k pinning -x"             extra pytest arguments (every session)
# make test-fast ARGS="-k pinning"           pytest in .venv only (no matrix)
# make cluster CMD="pause replica1"          a cluster command on the demo cluster

VENV     ?= .venv
PYTHON   := $(VENV)/bin/python
PORT     ?= 8000
DEMO_DIR ?= $(or $(RWSPLIT_DEMO_DIR),.rwsplit-cluster)
ARGS     ?=
CMD      ?= status
# The whole matrix (lint, dist, Django 5.2/Py3.11, 6.0/Py3.13, 6.1/Py3.12).
TEST_CMD ?= scripts/run_tests.sh $(ARGS)

export VENV

.DEFAULT_GOAL := help
.PHONY: help bootstrap bootstrap-tests demo demo-down demo-status cluster test test-fast lint typecheck

help:
	@echo "make demo         run the example project (http://127.0.0.1:$(PORT)/)"
	@echo "make demo-down    stop and delete the demo cluster in $(DEMO_DIR)"
	@echo "make demo-status  show the demo cluster's nodes"
	@echo "make cluster CMD=\"pause replica1\"  any cluster command on the demo cluster"
	@echo "                  (up down destroy status pause resume stop start freeze"
	@echo "                  thaw delay slow unslow; CMD=--help for details)"
	@echo "make test         run the whole test matrix with nox (ARGS=\"...\" for pytest)"
	@echo "make test-fast    run the suite once, in $(VENV)"
	@echo "make lint         ruff check + ruff format --check"
	@echo "make typecheck    mypy"
	@echo "make bootstrap    install PostgreSQL (if root) and $(VENV)"
	@echo "make bootstrap-tests  the same, plus pgbouncer and Chromium (if root)"

bootstrap:
	@scripts/bootstrap.sh

demo:
	@PORT=$(PORT) RWSPLIT_DEMO_DIR="$(DEMO_DIR)" scripts/demo.sh

demo-down: bootstrap
	@if [ -f "$(DEMO_DIR)/cluster.json" ]; then \
		$(PYTHON) -m django_rwsplit.testing destroy --dir "$(DEMO_DIR)" && \
		echo "demo cluster in $(DEMO_DIR) stopped and deleted"; \
	else \
		echo "no demo cluster in $(DEMO_DIR)"; \
	fi

demo-status: bootstrap
	@$(PYTHON) -m django_rwsplit.testing status --dir "$(DEMO_DIR)"

cluster: bootstrap
	@set -- $(CMD); \
	case "$$1" in -h|--help|"") $(PYTHON) -m django_rwsplit.testing "$$@";; \
	*) $(PYTHON) -m django_rwsplit.testing "$$@" --dir "$(DEMO_DIR)";; esac

# A demo cluster left running (make demo) holds the suite's default ports, so
# the suite reuses it, as it would any cluster named by RWSPLIT_CLUSTER_DIR.
bootstrap-tests:
	@scripts/bootstrap.sh --tests

test: bootstrap-tests
	@port=; \
	if [ -z "$$RWSPLIT_CLUSTER_DIR" ]; then \
		port=$$($(PYTHON) scripts/demo_cluster.py running "$(DEMO_DIR)"); \
	fi; \
	if [ -n "$$port" ] && [ "$${RWSPLIT_CLUSTER_PORT:-$$port}" = "$$port" ]; then \
		echo "make test: reusing the running demo cluster in $(DEMO_DIR) (port $$port)"; \
		export RWSPLIT_CLUSTER_DIR="$(abspath $(DEMO_DIR))" RWSPLIT_CLUSTER_PORT=$$port; \
	fi; \
	echo "$(TEST_CMD)"; \
	$(TEST_CMD)

test-fast:
	@$(MAKE) --no-print-directory test TEST_CMD="$(PYTHON) -m pytest $(ARGS)"

lint: bootstrap
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

typecheck: bootstrap
	$(PYTHON) -m mypy django_rwsplit example_project
