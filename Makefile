# The lab's entry points. `make help` lists them.
#
# Every target runs natively on Linux and creates .venv/ on first use (then reuses it). On a host
# that is not Linux, or with DOCKER=1, a demo runs in Docker instead: `docker compose run --rm
# SERVICE` (or `docker-compose run --rm SERVICE`), whose command line is the same `python -m lab
# ...` (see compose.yml); targets without a service of their own run `make TARGET` inside the
# `shell` service. Where neither is possible the target says so in one line and fails.

PYTHON ?= python3
VENV := $(or $(LAB_VENV),.venv)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS := test,lint,celery,demo,plots,cores
SUDO_HINT := run as root so make can apt-get it, or install it yourself: sudo apt-get install

# Where the evidence goes (the lab reads LAB_CRASH_DUMPS; in Docker it is bind-mounted there).
CRASH_DUMPS ?= $(or $(LAB_CRASH_DUMPS),crash_dumps)
export LAB_CRASH_DUMPS := $(CRASH_DUMPS)
# `make report` reads this run (default: the newest one; run ids start with the time).
RUN ?= $(patsubst %/,%,$(lastword $(sort $(wildcard $(CRASH_DUMPS)/*/))))
# `make bench QUICK=1` runs the short benchmark.
QUICK ?=
# `make soak SOAK_RUNS=N`: how many runs the soak test makes.
SOAK_RUNS ?= 200
# `make matrix TRIALS=2 ONLY='python-lock-*'`: fewer trials, some cells (SCENARIO/LAUNCHER
# patterns); MATRIX_RESULTS / MATRIX_DOCS: write results/*.json and the docs elsewhere;
# PYTHONS=3.10,3.11,3.12,3.13: one results file per interpreter, each in its own environment.
TRIALS ?=
ONLY ?=
PYTHONS ?=
MATRIX_RESULTS ?=
MATRIX_DOCS ?=

HOST_OS := $(shell uname -s 2>/dev/null || echo unknown)
ifeq ($(HOST_OS),Linux)
DOCKER ?= 0
else
DOCKER ?= 1
endif
# Compose: the v2 plugin (`docker compose`) where it answers, else the standalone docker-compose
# (v2, or Debian bookworm's 1.29); empty when neither is installed (docker-check says so).
# Looked up once, and only by a target that runs Docker.
find_compose = $(shell if docker compose version >/dev/null 2>&1; then echo docker compose; \
  elif command -v docker-compose >/dev/null 2>&1; then echo docker-compose; fi)
COMPOSE ?= $(eval COMPOSE := $(find_compose))$(COMPOSE)
export COMPOSE_PROJECT_NAME ?= fork-crash-lab
# What compose.yml reads from the environment. LAB_OWNER: who gets the files the container writes
# into the bind mounts (the caller). LAB_HOST_CRASH_DUMPS: the evidence directory on the host.
# LAB_BUILD_NETWORK: a build's network, the host's where the engine has no default bridge
# (dockerd --bridge=none), where a build would reach neither Debian's archive nor PyPI.
LAB_OWNER ?= $(shell id -u):$(shell id -g)
build_network = $(or $(LAB_BUILD_NETWORK),$(shell docker network inspect bridge >/dev/null 2>&1 \
  && echo default || echo host))
COMPOSE_RUN = LAB_OWNER=$(LAB_OWNER) LAB_HOST_CRASH_DUMPS=$(if $(filter /%,$(CRASH_DUMPS)),,./)$\
  $(CRASH_DUMPS) LAB_BUILD_NETWORK=$(build_network) $(COMPOSE)
ifeq ($(HOST_OS),Linux)
NO_DOCKER_HINT := run natively on Linux instead (without DOCKER=1)
else
NO_DOCKER_HINT := the lab runs natively only on Linux, so on $(HOST_OS) it needs Docker
endif

# The command line of each target, after the interpreter; compose.yml runs the same one
# (`make -s cmd-demo-gdb` prints it; tests/test_docker_files.py compares the two).
CMD_demo-gdb := -m lab run chromadb-tokio --launcher fork --debugger gdb
CMD_demo-lldb := scripts/lldb_attach_child.py
CMD_demo-crash := -m lab run chromadb-tokio --launcher fork --debugger none
CMD_demo-strace := -m lab run chromadb-tokio --launcher fork --debugger none --strace
CMD_demo-fixed-spawn := -m lab run chromadb-tokio --launcher mp-spawn
CMD_demo-fixed-forkserver := -m lab run chromadb-tokio --launcher mp-forkserver
CMD_celery := -m lab.celery_lab
CMD_matrix = -m lab matrix$(if $(TRIALS), --trials $(TRIALS))$(if $(ONLY), --only '$(ONLY)')$(if \
  $(PYTHONS), --python $(PYTHONS))$(if \
  $(MATRIX_RESULTS), --results-dir $(MATRIX_RESULTS))$(if $(MATRIX_DOCS), --docs-dir \
  $(MATRIX_DOCS))
CMD_report = -m lab report $(RUN)
CMD_bench = -m lab bench$(if $(QUICK), --quick)
CMD_test := -m pytest -q

# $(call native,TOOLS): a target's prerequisites, natively (Linux, .venv, the tools it needs) or
# in Docker (a working engine). $(call docker_or,SERVICE,RECIPE): the recipe, or the service.
ifeq ($(DOCKER),1)
native = docker-check
docker_or = $(COMPOSE_RUN) run --rm $(1)
else
native = native-check $(STAMP) $(1)
docker_or = $(2)
endif

.DEFAULT_GOAL := help
.PHONY: help venv gdb lldb strace native-check engine-check docker-check demo-gdb demo-lldb demo-crash \
	demo-strace demo-fixed celery matrix report bench soak test lint build shell down clean

help:  ## list the targets (the default)
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	@touch $(STAMP)

venv: $(STAMP)  ## create .venv/ and install the lab into it

# $(call need_tool,COMMAND,DEBIAN PACKAGE): install it with apt-get when root, else say how.
define need_tool
	@command -v $(1) >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "lab: installing $(2) with apt-get"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(2); \
	  else echo "lab: $(1) is missing; $(SUDO_HINT) $(2)" >&2; exit 5; fi; }
endef

gdb:  ## make sure gdb is installed (apt-get when root)
	$(call need_tool,gdb,gdb)

lldb:  ## make sure lldb is installed (apt-get when root)
	$(call need_tool,lldb,lldb)

strace:  ## make sure strace is installed (apt-get when root)
	$(call need_tool,strace,strace)

native-check:
	@[ "$(HOST_OS)" = Linux ] || { echo "lab: the lab runs natively only on Linux, not on \
	$(HOST_OS); run it in Docker: DOCKER=1 make $(or $(MAKECMDGOALS),help)" >&2; exit 3; }

# Docker mode needs a client, a running engine (`docker info`) and Compose, looked up only once
# the engine answers (make expands a recipe whole before it runs its first line). The evidence
# directory is made here, by the caller: one that Docker makes for a bind mount is root's.
engine-check:
	@command -v docker >/dev/null 2>&1 || { echo "lab: no Docker engine: the docker command is \
	not installed (install Docker); $(NO_DOCKER_HINT)" >&2; exit 3; }
	@docker info >/dev/null 2>&1 || { echo "lab: no Docker engine: 'docker info' failed (start \
	Docker Desktop or dockerd); $(NO_DOCKER_HINT)" >&2; exit 3; }

docker-check: engine-check
	@$(if $(COMPOSE),$(COMPOSE) version >/dev/null 2>&1,false) || { echo "lab: no Docker \
	Compose: $(if $(COMPOSE),'$(COMPOSE) version' failed,neither 'docker compose' nor \
	docker-compose is installed) (install the Compose v2 plugin, or docker-compose); \
	$(NO_DOCKER_HINT)" >&2; exit 3; }
	@mkdir -p $(CRASH_DUMPS)

demo-gdb: $(call native,gdb)  ## reproduce the ChromaDB fork deadlock, prove it, capture it with GDB
	$(call docker_or,demo-gdb,$(PY) $(CMD_demo-gdb))

demo-lldb: $(call native,lldb)  ## the same deadlock, the blocked child captured with LLDB
	$(call docker_or,demo-lldb,$(PY) $(CMD_demo-lldb))

demo-crash: $(call native,)  ## reproduce the deadlock and print the verdict only (no debugger)
	$(call docker_or,demo-crash,$(PY) $(CMD_demo-crash))

demo-strace: $(call native,strace)  ## the child's syscalls around the block, via strace, as evidence
	$(call docker_or,demo-strace,$(PY) $(CMD_demo-strace))

demo-fixed: $(call native,)  ## the spawn and forkserver twins of demo-crash succeed (verdict ok)
ifeq ($(DOCKER),1)
	$(COMPOSE_RUN) run --rm demo-fixed
else
	$(PY) $(CMD_demo-fixed-spawn)
	$(PY) $(CMD_demo-fixed-forkserver)
endif

matrix: $(call native,gdb)  ## every scenario under every launcher
	$(call docker_or,matrix,$(PY) $(CMD_matrix))

celery: $(call native,)  ## the Celery prefork worker shape of the bug
	$(call docker_or,shell make celery,$(PY) $(CMD_celery))

report: $(call native,)  ## a report of one run (RUN=crash_dumps/<run-id>; default: the newest)
	$(call docker_or,shell make report RUN=$(RUN),$(PY) $(CMD_report))

bench: $(call native,)  ## measure detection times (QUICK=1 for a short run)
	$(call docker_or,shell make bench QUICK=$(QUICK),$(PY) $(CMD_bench))

soak: $(call native,)  ## chromadb-tokio 200 times in one lab process; report leaked fds, processes, temp dirs
	$(call docker_or,shell make soak SOAK_RUNS=$(SOAK_RUNS),$(PY) -m lab.soak --runs $(SOAK_RUNS))

lint: $(call native,)  ## ruff on the code, hadolint on the Dockerfiles, compose.yml schema and policy
ifeq ($(DOCKER),1)
	$(COMPOSE_RUN) run --rm shell make lint
else
	@failed=; check() { name=$$1; shift; echo "$$*"; "$$@" || failed="$$failed $$name"; }; \
	check ruff $(VENV)/bin/ruff check --output-format concise .; \
	check hadolint $(VENV)/bin/hadolint --config .hadolint.yaml Dockerfile \
	  docker/redis.Dockerfile; \
	check compose-schema $(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec \
	  compose.yml; \
	check compose-policy $(PY) docker/check_compose.py compose.yml; \
	[ -z "$$failed" ] || { echo "lab: lint failed:$$failed" >&2; exit 1; }
endif

test: $(call native,gdb lldb strace)  ## run the linters, then the test suite (fails if either does)
ifeq ($(DOCKER),1)
	$(COMPOSE_RUN) run --rm test
else
	@$(MAKE) --no-print-directory lint || lint=$$?; \
	[ -z "$$lint" ] || echo "lab: make lint failed (above); the tests run all the same" >&2; \
	echo "$(PY) $(CMD_test)"; $(PY) $(CMD_test) || exit $$?; \
	[ -z "$$lint" ] || exit $$lint
endif

# One build of the lab's image (every lab service runs it; docker-compose 1.29 would build it once
# per service) and one of the Celery broker's.
build: docker-check  ## build the Docker images (needs a Docker engine)
	$(COMPOSE_RUN) --profile celery build demo-gdb redis

shell: docker-check  ## a shell in the container, ptrace allowed (needs a Docker engine)
	$(COMPOSE_RUN) run --rm shell

down: docker-check  ## stop and remove the lab's containers (needs a Docker engine)
	$(COMPOSE_RUN) --profile celery down --remove-orphans

clean:  ## remove generated evidence (crash_dumps/*, or CRASH_DUMPS=DIR)
	find $(CRASH_DUMPS) -mindepth 1 ! -name .gitkeep -exec rm -rf {} +

# Print the command line a target runs, after the interpreter (what compose.yml runs).
cmd-%:
	@echo '$(CMD_$*)'
