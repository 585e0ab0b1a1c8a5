# ggnet — every target installs what it needs first (scripts/bootstrap.sh is cheap
# when nothing changed).
SHELL := /bin/bash
VENV  ?= .venv
BIN   := $(VENV)/bin
PYTEST := $(BIN)/pytest
export PATH := $(abspath $(BIN)):$(PATH)
export ANSIBLE_CONFIG := $(abspath ansible.cfg)

.PHONY: help deps test test-unit test-integration test-lab molecule lint demo bench lab-up lab-down clean

help:
	@echo "make demo              build the lab, converge the boot server, boot the lab PCs"
	@echo "make test              every test tier + molecule + lint (what CI runs)"
	@echo "make test-unit         unit tier only (seconds)"
	@echo "make test-integration  real daemons on this machine (minutes)"
	@echo "make test-lab          the lab VM and qemu PCs"
	@echo "make molecule          molecule test on the lab VM"
	@echo "make lint              ruff + ansible-lint (production profile)"
	@echo "make bench             benchmarks; results in bench/results/"

deps:
	@scripts/bootstrap.sh

lint: deps
	@echo "==> ruff"
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@echo "==> ansible-lint (production profile)"
	$(BIN)/ansible-lint --profile production -q

test-unit: deps
	$(PYTEST) -m unit

test-integration: deps
	$(PYTEST) -m integration

test-lab: deps
	$(PYTEST) -m lab

molecule: deps
	cd molecule/.. && $(BIN)/molecule test -s default

# One pytest run for the three tiers keeps their report in one place; molecule and
# lint follow.  The tiers are ordered fastest first so a broken unit fails in seconds.
test: deps
	$(PYTEST) -m unit
	$(PYTEST) -m integration
	$(PYTEST) -m lab
	$(MAKE) --no-print-directory molecule
	$(MAKE) --no-print-directory lint

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
