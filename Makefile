# Developer entry points. `make test` runs everything: pytest and the pgTAP suite.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv test pgtap lint demo bench bench-peers soak soak-peers clean check-pg-prove

venv: $(STAMP)

# Redone only when the dependencies may have changed.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,binary]'
	touch $@

# The harness itself says what to install when no server or no pgTAP extension is found.
test: $(STAMP) check-pg-prove
	$(BIN)/pytest -q tests

# Only the pgTAP files, with pg_prove's own output.
pgtap: $(STAMP) check-pg-prove
	$(BIN)/pytest -q -s tests/test_pgtap.py

lint: $(STAMP)
	$(BIN)/mypy --strict pgqueue_py tests bench
	$(BIN)/ruff check .

demo: $(STAMP)
	$(BIN)/pgqueue demo

bench: $(STAMP)
	@if [ -x bench/run ]; then PATH="$(CURDIR)/$(BIN):$$PATH" bench/run; \
	else echo "no bench/run yet"; fi

# pgqueue beside PgQueuer and Procrastinate (see bench/peers/peers.py). A venv of its own
# holds the peers (latest from PyPI), matplotlib and this package; ARGS=--quick (or
# BENCH_PEERS_QUICK=1) is a small smoke run.
PEERS_VENV  := bench/peers/.venv
PEERS_STAMP := $(PEERS_VENV)/.installed

$(PEERS_STAMP): pyproject.toml
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install --quiet --upgrade pip
	$(PEERS_VENV)/bin/pip install --quiet --upgrade 'pgqueuer[asyncpg]' procrastinate matplotlib -e '.[binary]'
	touch $@

bench-peers: $(PEERS_STAMP)
	$(PEERS_VENV)/bin/python bench/peers/peers.py $(ARGS)

# Held-xmin soak, growth soak and million-job backlog (bench/soak.py), about 45 minutes;
# ARGS=--quick is a smoke run of a few minutes, ARGS="--baseline main" adds the held-xmin
# soak on that ref's engine.
soak: $(STAMP)
	$(BIN)/python bench/soak.py $(ARGS)

# PgQueuer under a held xmin (see bench/peers/soak_pgqueuer.py), ~15 min; ARGS=--quick for
# 20/60/30 s phases. Writes bench/results/soak/held_xmin_pgqueuer.json.
soak-peers: $(PEERS_STAMP)
	$(PEERS_VENV)/bin/python bench/peers/soak_pgqueuer.py $(ARGS)

check-pg-prove:
	@command -v pg_prove >/dev/null 2>&1 || { \
	  echo "pg_prove not found: the pgTAP suite needs it and the pgTAP extension;"; \
	  echo "  Debian/Ubuntu: apt-get install pgtap postgresql-<major>-pgtap (or run .ci/run as root)"; \
	  exit 1; }

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
