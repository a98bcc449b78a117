# The few verbs a person types. Everything runs inside .venv, created from python3 on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export PREFECT_HOME ?= $(CURDIR)/.bulletin/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 90
export PREFECT_CLI_PROMPT ?= false

.PHONY: demo serve scale-demo gallery test lint format bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p "$(PREFECT_HOME)"
	$(BIN)/bulletin demo

# Prefect server (UI at http://127.0.0.1:4200), work pool, deployments, worker and HTTP API until Ctrl-C.
# SERVE_ARGS passes flags, e.g. make serve SERVE_ARGS="--prefect-port 4300".
serve: $(STAMP)
	exec $(BIN)/bulletin serve $(SERVE_ARGS)

# One report of SCALE_RECIPIENTS recipients over SCALE_WORKERS Prefect workers, the Prefect server and the state
# store on a PostgreSQL of its own (Debian's postgresql package), one worker SIGKILLed partway (SCALE_KILL=0: none).
# Files under .bulletin/scale-demo/; the last line is a JSON verdict; exit 0 only with no duplicate and none missing.
SCALE_RECIPIENTS ?= 10000
SCALE_WORKERS ?= 2
SCALE_KILL ?= 1

scale-demo: $(STAMP)
	SCALE_RECIPIENTS=$(SCALE_RECIPIENTS) SCALE_WORKERS=$(SCALE_WORKERS) SCALE_KILL=$(SCALE_KILL) \
		$(BIN)/python -m bench.scale_demo

# What a recipient gets, as PNGs in docs/gallery/ (needs poppler-utils, chromium, libreoffice-calc-nogui).
gallery: $(STAMP)
	$(BIN)/python -m bench.gallery

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy bulletin tasks flows
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python -m bench.bench_render
	$(BIN)/python -m bench.bench_delivery
	$(BIN)/python -m bench.bench_ledger
	$(BIN)/python -m bench.bench_s3_put
	$(BIN)/python -m bench.bench_webhooks
	$(BIN)/python -m bench.bench_startup
	$(BIN)/python -m bench.bench_scale

clean:
	rm -rf .bulletin build *.egg-info
