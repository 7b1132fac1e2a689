# One source of truth for running, testing and checking the project.
# Every target creates or reuses .venv (Python 3.11) and installs what it needs.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run api worker test lint fmt bench-rss bench-stories clean-data venv

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run 'make PYTHON=/path/to/python3.11'"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

## make run: embedded Redis + Postgres (unless REDIS_URL / DATABASE_URL are set), the API and the workers
run: $(STAMP)
	$(BIN)/python -m runner run

## make api: the API alone
api: $(STAMP)
	$(BIN)/python -m runner run --no-workers

## make worker: the worker supervisor alone (WORKERS processes)
worker: $(STAMP)
	$(BIN)/python -m runner run --no-api

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check runner jobs api tests bench
	$(BIN)/ruff format --check runner jobs api tests bench
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format runner jobs api tests bench
	$(BIN)/ruff check --fix runner jobs api tests bench

clean-data:
	rm -rf .data

## make bench-rss: worker memory over 2,000 story jobs with and without recycling
bench-rss: $(STAMP)
	$(BIN)/python -m bench.rss --jobs $${JOBS:-2000}

## make bench-stories: 50 stories of 5 scenes submitted at once to a real fleet (offline provider, 50 ms a call)
bench-stories: $(STAMP)
	$(BIN)/python -m bench.stories --stories $${STORIES:-50} --workers $${WORKERS:-2}

## make bench-stories-http: the same 50 stories with the providers over real HTTP (a local provider server answering
## each call after 50 ms): stories/min, p50/p95, CPU seconds a story of every process and where the time goes, over
## RUNS=3 fresh fleets (PROFILE=file: one worker under cProfile too)
.PHONY: bench-stories-http
bench-stories-http: $(STAMP)
	$(BIN)/python -m bench.stories_http --stories $${STORIES:-50} --workers $${WORKERS:-2} --runs $${RUNS:-3} \
		$(if $(PROFILE),--profile-worker $(PROFILE))

## make bench-stories-1000: 1,000 stories (about 7,000 jobs) at once, offline provider at 50 ms a call: all complete
## and none stuck, stories/min, p50/p95, every fleet process's peak memory against its idle size
.PHONY: bench-stories-1000
bench-stories-1000: $(STAMP)
	$(BIN)/python -m bench.stories_many --stories $${STORIES:-1000} --workers $${WORKERS:-2}

## make bench-memory: USS / PSS / RSS of every process of a `make run` fleet after 50 stories (WORKERS=2, then 3: what
## one more worker adds); MODE=exec: children exec'd as before the zygote, to compare
.PHONY: bench-memory
bench-memory: $(STAMP)
	$(BIN)/python -m bench.fleet_memory $(if $(MODE),--mode $(MODE))

## make bench-startup: spawn to first job of a worker (forked from the zygote, then exec'd), jobs waiting
.PHONY: bench-startup
bench-startup: $(STAMP)
	$(BIN)/python -m bench.startup

## make bench-jobs: storymimi vs arq (default, tuned), pgqueuer, taskiq (Redis streams), SAQ and Celery prefork (each
## peer in its own venv, bench/.venv-<name>, made from bench/requirements-<name>.txt) on W1 no-op, W2 sleep, W3
## latency and starvation, 3 runs a cell (QUICK=1: one small run of each, a smoke test)
.PHONY: bench-jobs
bench-jobs: $(STAMP)
	$(BIN)/python -m bench.run $(if $(QUICK),--quick)

## make bench-profile: where W1's time goes: Redis commands, Postgres commits, rows and WAL records, and CPU of every
## process, per job (JOBS=... for another size)
.PHONY: bench-profile
bench-profile: $(STAMP)
	$(BIN)/python -m bench.profile_w1 --jobs $${JOBS:-10000}

## make bench-api: POST /stories/ from 64 concurrent clients against one API process
.PHONY: bench-api
bench-api: $(STAMP)
	$(BIN)/python -m bench.api_load --clients $${CLIENTS:-64} --seconds $${SECONDS:-10}

## make bench-ops: the operators' job list (find_jobs) on 1,000,000 status rows: ms a page for each filter, and
## what its indexes cost the hot path's inserts and upserts (ROWS=... for another size)
.PHONY: bench-ops
bench-ops: $(STAMP)
	$(BIN)/python -m bench.ops_paging --rows $${ROWS:-1000000}

## make bench-foreign: unchanged arq and Celery producers' jobs through the intakes: enqueue -> start p50/p99
.PHONY: bench-foreign
bench-foreign: $(STAMP)
	$(BIN)/python -m bench.foreign --jobs $${JOBS:-500} --rate $${RATE:-50}

## make bench: the whole benchmark suite (jobs vs arq, pgqueuer, taskiq, SAQ and Celery, the story workload offline, over
## HTTP and 1,000 at once, worker memory, API load,
## job-list paging)
.PHONY: bench
bench: bench-jobs bench-stories bench-stories-http bench-stories-1000 bench-memory bench-startup bench-rss bench-api bench-ops bench-foreign
