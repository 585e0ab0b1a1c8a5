# ggnet — every target installs what it needs first (scripts/bootstrap.sh is cheap
# when nothing changed).
SHELL := /bin/bash
VENV  ?= .venv
BIN   := $(VENV)/bin
PYTEST := $(BIN)/pytest
export PATH := $(abspath $(BIN)):$(PATH)
export ANSIBLE_CONFIG := $(abspath ansible.cfg)

.PHONY: help deps lock lock-upgrade test test-unit test-integration test-lab molecule lint demo bench lab-up lab-down clean

help:
	@echo "make demo              build the lab, converge the boot server, boot the lab PCs"
	@echo "make test              every test tier + molecule + lint (what CI runs)"
	@echo "make test-unit         unit tier only (seconds)"
	@echo "make test-integration  real daemons on this machine (minutes)"
	@echo "make test-lab          the lab VM and qemu PCs"
	@echo "make molecule          molecule test on the lab VM"
	@echo "make lint              ruff + mypy + ansible-lint (production profile)"
	@echo "make bench             benchmarks; results in bench/results/"
	@echo "make lock              re-resolve requirements/dev.lock after editing pyproject.toml"
	@echo "make lock-upgrade      move every locked Python package to its newest allowed release"

deps:
	@scripts/bootstrap.sh

# The Python locks: every package pinned with its hashes; the bootstrap installs only
# from dev.lock, a boot server's job runner only from server-jobs.lock (constrained by
# dev.lock, so it runs what the tests ran).  `lock` keeps today's pins where
# pyproject.toml still allows them; `lock-upgrade` moves them all.
UV_COMPILE := $(BIN)/uv pip compile -q --generate-hashes --python-version 3.11 \
	--python-platform x86_64-unknown-linux-gnu
lock: deps
	$(UV_COMPILE) $(UPGRADE) pyproject.toml --extra dev -o requirements/dev.lock
	$(UV_COMPILE) $(UPGRADE) requirements/server-jobs.in -c requirements/dev.lock \
		-o requirements/server-jobs.lock

lock-upgrade:
	$(MAKE) --no-print-directory lock UPGRADE=--upgrade

lint: deps
	@echo "==> ruff"
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@echo "==> mypy (settings in pyproject.toml)"
	$(BIN)/mypy
	@echo "==> ansible-lint (production profile)"
	$(BIN)/ansible-lint --profile production -q

test-unit: deps
	$(PYTEST) -m unit

test-integration: deps
	$(PYTEST) -m integration

test-lab: deps
	$(PYTEST) -m lab

# verify's failures are printed again at the end (scripts/junit_failures.py): the
# destroy's output comes after them, and a CI log may keep only its tail.
MOLECULE_JUNIT = .cache/molecule-verify.xml
molecule: deps
	@rm -f $(MOLECULE_JUNIT)
	cd molecule/.. && $(BIN)/molecule test -s default \
		|| { $(BIN)/python scripts/junit_failures.py $(MOLECULE_JUNIT); exit 1; }

# Fastest first: lint and the unit tier fail a broken build in about a minute, before
# the daemons, the lab VM and molecule take their tens of minutes.
# Each tier's wall time is printed after it ("==> unit: 31 s").
test: deps
	@$(call timed,lint,$(MAKE) --no-print-directory lint)
	@$(call timed,unit,$(PYTEST) -m unit)
	@$(call timed,integration,$(PYTEST) -m integration)
	@$(call timed,lab,$(PYTEST) -m lab)
	@$(call timed,molecule,$(MAKE) --no-print-directory molecule)

timed = start=$$(date +%s); echo "==> $(1)"; $(2); rc=$$?; \
	printf '\033[1m==> %s: %d s\033[0m\n' "$(1)" $$(( $$(date +%s) - start )); exit $$rc

demo: deps
	$(BIN)/ggnet lab demo

bench: deps
	$(BIN)/python -m bench

lab-up: deps
	$(BIN)/ggnet lab up

lab-down: deps
	$(BIN)/ggnet lab down

clean: lab-down
	rm -rf $(VENV) .cache
